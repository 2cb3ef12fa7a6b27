// FUSEDMOE_CUDA_CHECK: every CUDA runtime call and every launch goes through it, so a failure comes
// back as a Status naming the call, the error and the file and line (STYLE.md 14).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "fusedmoe/status.hpp"

namespace fusedmoe::cuda {

inline Status cuda_status(cudaError_t err, const char* what, const char* file, int line) {
  // The runtime also keeps the error as this thread's last error; once it is a Status it is
  // cleared there, or the next launch check (cudaGetLastError) would report it a second time: a
  // failed cudaMalloc in pack_weights would fail the next forward. A sticky error stays sticky.
  static_cast<void>(cudaGetLastError());
  const StatusCode code =
      err == cudaErrorMemoryAllocation ? StatusCode::out_of_memory : StatusCode::cuda_error;
  return {code, std::string(what) + " failed: " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line)};
}

}  // namespace fusedmoe::cuda

#define FUSEDMOE_CUDA_CHECK(expr)                                                          \
  do {                                                                                     \
    const cudaError_t fusedmoe_cuda_err_ = (expr);                                         \
    if (fusedmoe_cuda_err_ != cudaSuccess) {                                               \
      return ::fusedmoe::cuda::cuda_status(fusedmoe_cuda_err_, #expr, __FILE__, __LINE__); \
    }                                                                                      \
  } while (0)

// After a kernel launch: the launch's own error (bad configuration, too much shared memory).
#define FUSEDMOE_CUDA_CHECK_LAUNCH(name) \
  FUSEDMOE_CUDA_CHECK((static_cast<void>(name), cudaGetLastError()))
