#include "staging.hpp"

#include <string>
#include <utility>

namespace fusedmoe::cli {

Result<DeviceTensor> DeviceTensor::allocate(DType dtype, std::int64_t rows, std::int64_t cols) {
  const auto bytes = static_cast<std::size_t>(rows * cols) * dtype_size(dtype);
  Result<device::Buffer> buffer = device::Buffer::allocate(bytes);
  if (!buffer.ok()) return buffer.status();
  DeviceTensor t;
  t.buffer_ = std::move(buffer).value();
  t.ref_ = make_tensor(t.buffer_.data(), dtype, {rows, cols}, Device::cuda(0));
  return t;
}

Result<DeviceTensor> DeviceTensor::upload(const HostTensor& host) {
  const ConstTensorRef h = host.cref();
  if (h.rank != 2 || !h.is_contiguous()) {
    return Status{StatusCode::invalid_shape,
                  "staging needs a contiguous 2-D host tensor, got " + describe(h)};
  }
  Result<DeviceTensor> t = allocate(h.dtype, h.size(0), h.size(1));
  if (!t.ok()) return t;
  if (Status s = t->buffer_.upload(h.data, host.size_bytes()); !s.ok()) return s;
  return t;
}

Status DeviceTensor::download(TensorRef host) const {
  if (host.dtype != ref_.dtype || host.numel() != ref_.numel() || !host.is_contiguous() ||
      host.device != Device::cpu()) {
    return {StatusCode::invalid_shape,
            "cannot download " + describe(cref()) + " into " + describe(host)};
  }
  return buffer_.download(host.data, buffer_.bytes());
}

}  // namespace fusedmoe::cli
