// Staging of x for GEMM1 when its rows cannot be read with 16-byte copies (H not a multiple of 8):
// a copy to [T, ld] rows with zero padding.
#pragma once

#include <cstdint>

#include "cuda/kernels/ptx/grid_dependency.cuh"

namespace fusedmoe::cuda {

template <class Elem>
__global__ void stage_rows(const Elem* x, std::int64_t x_ld, int tokens, int cols, Elem* staged,
                           int ld) {
  ptx::enter_dependent_grid();
  const int t = static_cast<int>(blockIdx.x);
  if (t >= tokens) return;
  for (int c = static_cast<int>(threadIdx.x); c < ld; c += static_cast<int>(blockDim.x)) {
    staged[static_cast<std::int64_t>(t) * ld + c] = c < cols ? x[t * x_ld + c] : Elem(0.0f);
  }
}

}  // namespace fusedmoe::cuda
