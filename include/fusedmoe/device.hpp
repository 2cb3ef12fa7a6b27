// The GPU, seen from code that must not include CUDA headers: the fusedmoe command, the
// benchmarks, the tests and the Python module. Everything here returns a Status; in a build
// without the CUDA backend, or on a machine without a GPU, count() is 0 and the rest returns
// StatusCode::unsupported_arch.
//
//   auto buf = fusedmoe::device::Buffer::allocate(bytes);   // device memory
//   buf->upload(host_ptr, bytes);                            // synchronous copies
//   auto stream = fusedmoe::device::Stream::create();
//   layer.forward({..., .stream = stream->handle()});
//   stream->synchronize();
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "fusedmoe/status.hpp"

namespace fusedmoe::device {

// Usable CUDA devices: 0 without the CUDA backend or without a GPU.
int count();

struct Info {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;  // compute capability
  int multiprocessors = 0;
  std::size_t memory_bytes = 0;
  std::size_t l2_bytes = 0;
};
Result<Info> info(int index = 0);

// Device memory on the current device. Move-only; freed on destruction.
class Buffer {
 public:
  static Result<Buffer> allocate(std::size_t bytes);
  Buffer() = default;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  // Synchronous copies of `bytes` bytes starting `offset` bytes into the buffer.
  Status upload(const void* host, std::size_t bytes, std::size_t offset = 0);
  Status download(void* host, std::size_t bytes, std::size_t offset = 0) const;
  // Every byte set to `value` (synchronous).
  Status fill(std::uint8_t value);

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// A CUDA stream (non-blocking with respect to the default stream). Move-only.
class Stream {
 public:
  static Result<Stream> create();
  Stream() = default;
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();

  void* handle() const { return handle_; }  // a cudaStream_t
  Status synchronize() const;

 private:
  void* handle_ = nullptr;
};

// A CUDA graph captured from the work `body` enqueues on `stream`, instantiated for replay.
// A body that synchronises (or calls anything that does) fails the capture with a status.
class Graph {
 public:
  static Result<Graph> capture(const Stream& stream, const std::function<Status()>& body);
  Graph() = default;
  Graph(Graph&& other) noexcept;
  Graph& operator=(Graph&& other) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph();

  // Enqueues one replay on `stream`.
  Status launch(const Stream& stream) const;

 private:
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
};

// Times `body(rep)` on `stream` with CUDA events: `warmup` untimed calls, then `reps` timed
// ones; returns each timed call's microseconds. `body` enqueues work on the stream.
Result<std::vector<double>> time_us(const Stream& stream, int warmup, int reps,
                                    const std::function<Status(int rep)>& body);

// The two ceilings of PERF.md, measured on the current device (a few hundred milliseconds).
// Read bandwidth: a read-only kernel over a buffer far larger than L2, bytes/s.
Result<double> measure_read_bandwidth();
// A large cuBLAS bf16 GEMM on random data, flop/s.
Result<double> measure_bf16_gemm_rate();

}  // namespace fusedmoe::device
