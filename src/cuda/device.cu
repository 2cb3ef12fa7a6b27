// fusedmoe/device.hpp on the CUDA runtime, and PERF.md's two ceilings: read bandwidth (a
// read-only kernel over 4 GiB) and the cuBLAS bf16 GEMM rate (8192³ on random data).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "cuda/cuda_check.hpp"
#include "cuda/kernels/probe/read_sum.cuh"
#include "fusedmoe/device.hpp"

namespace fusedmoe::device {

int count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    static_cast<void>(cudaGetLastError());  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

namespace {

// The same answer as a build without CUDA when there is no usable GPU (no device, no driver).
Status require_gpu() {
  if (count() > 0) return {};
  return {StatusCode::unsupported_arch, "no CUDA GPU is available on this machine"};
}

}  // namespace

Result<Info> info(int index) {
  if (Status s = require_gpu(); !s.ok()) return s;
  cudaDeviceProp prop{};
  FUSEDMOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  Info i;
  i.index = index;
  i.name = prop.name;
  i.cc_major = prop.major;
  i.cc_minor = prop.minor;
  i.multiprocessors = prop.multiProcessorCount;
  i.memory_bytes = prop.totalGlobalMem;
  i.l2_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  return i;
}

Result<Buffer> Buffer::allocate(std::size_t bytes) {
  if (Status s = require_gpu(); !s.ok()) return s;
  Buffer b;
  if (bytes > 0) FUSEDMOE_CUDA_CHECK(cudaMalloc(&b.data_, bytes));
  b.bytes_ = bytes;
  return std::move(b);
}
Buffer::~Buffer() {
  if (data_ != nullptr) static_cast<void>(cudaFree(data_));
}

namespace {

Status check_range(std::size_t bytes, std::size_t offset, std::size_t size) {
  if (offset > size || bytes > size - offset) {
    return {StatusCode::invalid_argument, "copy of " + std::to_string(bytes) + " bytes at offset " +
                                              std::to_string(offset) + " exceeds a buffer of " +
                                              std::to_string(size)};
  }
  return {};
}

}  // namespace

Status Buffer::upload(const void* host, std::size_t bytes, std::size_t offset) {
  if (Status s = check_range(bytes, offset, bytes_); !s.ok()) return s;
  if (bytes == 0) return {};
  // forwards may still read this buffer on a non-blocking stream
  FUSEDMOE_CUDA_CHECK(cudaDeviceSynchronize());
  FUSEDMOE_CUDA_CHECK(
      cudaMemcpy(static_cast<std::byte*>(data_) + offset, host, bytes, cudaMemcpyHostToDevice));
  // from pageable memory the copy may still be in flight when cudaMemcpy returns
  FUSEDMOE_CUDA_CHECK(cudaDeviceSynchronize());
  return {};
}
Status Buffer::download(void* host, std::size_t bytes, std::size_t offset) const {
  if (Status s = check_range(bytes, offset, bytes_); !s.ok()) return s;
  if (bytes == 0) return {};
  // forwards run on non-blocking streams: wait for all of them
  FUSEDMOE_CUDA_CHECK(cudaDeviceSynchronize());
  FUSEDMOE_CUDA_CHECK(cudaMemcpy(host, static_cast<const std::byte*>(data_) + offset, bytes,
                                 cudaMemcpyDeviceToHost));
  return {};
}
Status Buffer::fill(std::uint8_t value) {
  if (bytes_ == 0) return {};
  FUSEDMOE_CUDA_CHECK(cudaMemset(data_, value, bytes_));
  FUSEDMOE_CUDA_CHECK(cudaDeviceSynchronize());
  return {};
}

Result<Stream> Stream::create() {
  if (Status st = require_gpu(); !st.ok()) return st;
  Stream s;
  cudaStream_t h = nullptr;
  FUSEDMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&h, cudaStreamNonBlocking));
  s.handle_ = h;
  return std::move(s);
}
Stream::~Stream() {
  if (handle_ != nullptr) static_cast<void>(cudaStreamDestroy(static_cast<cudaStream_t>(handle_)));
}
Status Stream::synchronize() const {
  FUSEDMOE_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)));
  return {};
}

Result<Graph> Graph::capture(const Stream& stream, const std::function<Status()>& body) {
  auto* s = static_cast<cudaStream_t>(stream.handle());
  FUSEDMOE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  const Status inner = body();
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(s, &graph);
  if (!inner.ok()) {
    if (graph != nullptr) static_cast<void>(cudaGraphDestroy(graph));
    return inner;
  }
  FUSEDMOE_CUDA_CHECK(end);
  Graph g;
  g.graph_ = graph;
  cudaGraphExec_t exec = nullptr;
  FUSEDMOE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  g.exec_ = exec;
  return std::move(g);
}
Graph::~Graph() {
  if (exec_ != nullptr)
    static_cast<void>(cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_)));
  if (graph_ != nullptr) static_cast<void>(cudaGraphDestroy(static_cast<cudaGraph_t>(graph_)));
}
Status Graph::launch(const Stream& stream) const {
  FUSEDMOE_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_),
                                      static_cast<cudaStream_t>(stream.handle())));
  return {};
}

namespace {

// cudaEvent_t pairs, destroyed on every path.
class Events {
 public:
  Status create(int n) {
    events_.resize(static_cast<std::size_t>(n), nullptr);
    for (auto& e : events_) FUSEDMOE_CUDA_CHECK(cudaEventCreate(&e));
    return {};
  }
  ~Events() {
    for (auto e : events_) {
      if (e != nullptr) static_cast<void>(cudaEventDestroy(e));
    }
  }
  cudaEvent_t operator[](int i) const { return events_[static_cast<std::size_t>(i)]; }

 private:
  std::vector<cudaEvent_t> events_;
};

}  // namespace

Result<std::vector<double>> time_us(const Stream& stream, int warmup, int reps,
                                    const std::function<Status(int rep)>& body) {
  auto* s = static_cast<cudaStream_t>(stream.handle());
  for (int i = 0; i < warmup; ++i) {
    if (Status st = body(i); !st.ok()) return st;
  }
  Events ev;
  if (Status st = ev.create(2 * reps); !st.ok()) return st;
  for (int i = 0; i < reps; ++i) {
    FUSEDMOE_CUDA_CHECK(cudaEventRecord(ev[2 * i], s));
    if (Status st = body(warmup + i); !st.ok()) return st;
    FUSEDMOE_CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], s));
  }
  FUSEDMOE_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<double> us(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    FUSEDMOE_CUDA_CHECK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
    us[static_cast<std::size_t>(i)] = 1000.0 * ms;
  }
  return us;
}

namespace {

__global__ void fill_random_bf16(__nv_bfloat16* p, std::int64_t n, unsigned seed) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16((static_cast<float>(h & 0xffff) / 65536.0f - 0.5f));
  }
}

double best_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

}  // namespace

Result<double> measure_read_bandwidth() {
  if (Status s = require_gpu(); !s.ok()) return s;
  constexpr std::size_t kBytes = std::size_t{4} << 30;
  auto buf = Buffer::allocate(kBytes + 256);
  if (!buf.ok()) return buf.status();
  FUSEDMOE_CUDA_CHECK(cudaMemset(buf->data(), 0x5a, kBytes + 256));
  auto stream = Stream::create();
  if (!stream.ok()) return stream.status();
  int sms = 0;
  FUSEDMOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const auto* data = static_cast<const uint4*>(buf->data());
  auto* sink = reinterpret_cast<unsigned*>(static_cast<std::byte*>(buf->data()) + kBytes);
  const std::int64_t words = static_cast<std::int64_t>(kBytes / 16);
  auto us = time_us(stream.value(), 2, 10, [&](int) -> Status {
    cuda::read_sum<<<static_cast<unsigned>(sms * 8), 512, 0,
                     static_cast<cudaStream_t>(stream->handle())>>>(data, words, sink);
    FUSEDMOE_CUDA_CHECK_LAUNCH("read_sum");
    return {};
  });
  if (!us.ok()) return us.status();
  return static_cast<double>(kBytes) / (best_of(us.value()) * 1e-6);
}

Result<double> measure_bf16_gemm_rate() {
  if (Status s = require_gpu(); !s.ok()) return s;
  constexpr int kN = 8192;
  constexpr std::size_t kElems = static_cast<std::size_t>(kN) * kN;
  auto buf = Buffer::allocate(3 * kElems * sizeof(__nv_bfloat16));
  if (!buf.ok()) return buf.status();
  auto* a = static_cast<__nv_bfloat16*>(buf->data());
  fill_random_bf16<<<1024, 256>>>(a, static_cast<std::int64_t>(3 * kElems), 12345u);
  FUSEDMOE_CUDA_CHECK_LAUNCH("fill_random_bf16");
  auto stream = Stream::create();
  if (!stream.ok()) return stream.status();
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    return Status{StatusCode::cuda_error, "cublasCreate failed"};
  }
  cublasSetStream(handle, static_cast<cudaStream_t>(stream->handle()));
  const float alpha = 1.0f, beta = 0.0f;
  auto us = time_us(stream.value(), 3, 10, [&](int) -> Status {
    const cublasStatus_t st =
        cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, kN, kN, kN, &alpha, a, CUDA_R_16BF, kN,
                     a + kElems, CUDA_R_16BF, kN, &beta, a + 2 * kElems, CUDA_R_16BF, kN,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) {
      return {StatusCode::cuda_error, "cublasGemmEx failed with status " + std::to_string(st)};
    }
    return {};
  });
  cublasDestroy(handle);
  if (!us.ok()) return us.status();
  // the median of the timed GEMMs: the rate it sustains, not its best burst
  std::vector<double> v = us.value();
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return 2.0 * kN * static_cast<double>(kN) * kN / (v[v.size() / 2] * 1e-6);
}

}  // namespace fusedmoe::device
