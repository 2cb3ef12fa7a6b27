// Host tensors staged in GPU memory for the CUDA backend, through fusedmoe::device (the tool
// never sees CUDA). Every copy is synchronous and happens outside the timed region.
#pragma once

#include <cstdint>

#include "fusedmoe/device.hpp"
#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"
#include "fusedmoe/workload.hpp"

namespace fusedmoe::cli {

// A contiguous tensor in the memory of GPU 0, with its reference for ForwardArgs.
class DeviceTensor {
 public:
  // Uninitialised device memory of `shape` (a forward output, routing ids, ...).
  static Result<DeviceTensor> allocate(DType dtype, std::int64_t rows, std::int64_t cols);
  // A device copy of `host` (rank 2, contiguous), same shape and dtype.
  static Result<DeviceTensor> upload(const HostTensor& host);

  TensorRef ref() const { return ref_; }
  ConstTensorRef cref() const { return ref_; }
  // Into `host`, which must be contiguous with this tensor's dtype and element count.
  Status download(TensorRef host) const;

 private:
  device::Buffer buffer_;
  TensorRef ref_;
};

}  // namespace fusedmoe::cli
