// Builds without the CUDA backend: no cuda backend, and a device API that reports no GPU.
#include <utility>

#include "core/backend.hpp"
#include "fusedmoe/device.hpp"

namespace fusedmoe::core {

const BackendOps* cuda_backend() { return nullptr; }

}  // namespace fusedmoe::core

namespace fusedmoe::device {
namespace {

Status no_cuda() {
  return {StatusCode::unsupported_arch, "this build of fusedmoe has no CUDA backend"};
}

}  // namespace

int count() { return 0; }
Result<Info> info(int) { return no_cuda(); }

Result<Buffer> Buffer::allocate(std::size_t) { return no_cuda(); }
Buffer::~Buffer() = default;
Status Buffer::upload(const void*, std::size_t, std::size_t) { return no_cuda(); }
Status Buffer::download(void*, std::size_t, std::size_t) const { return no_cuda(); }
Status Buffer::fill(std::uint8_t) { return no_cuda(); }

Result<Stream> Stream::create() { return no_cuda(); }
Stream::~Stream() = default;
Status Stream::synchronize() const { return no_cuda(); }

Result<Graph> Graph::capture(const Stream&, const std::function<Status()>&) { return no_cuda(); }
Graph::~Graph() = default;
Status Graph::launch(const Stream&) const { return no_cuda(); }

Result<std::vector<double>> time_us(const Stream&, int, int, const std::function<Status(int)>&) {
  return no_cuda();
}
Result<double> measure_read_bandwidth() { return no_cuda(); }
Result<double> measure_bf16_gemm_rate() { return no_cuda(); }

}  // namespace fusedmoe::device
