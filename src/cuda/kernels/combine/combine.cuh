// Combine: out[t, h] = Σ_j y[pos[t, j], h] (slots in order j = 0..k-1; dropped slots skipped)
//                      + shared_y[t, h] (when there is a shared expert), rounded once to the
// output dtype. The fixed order makes it deterministic and independent of the batch. One block per
// token, kVec consecutive columns per thread.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/kernels/ptx/grid_dependency.cuh"

namespace fusedmoe::cuda {

inline constexpr int kCombineThreads = 256;

__device__ __forceinline__ void store_out(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void store_out(__half* p, float v) { *p = __float2half_rn(v); }

struct CombineParams {
  const float* y = nullptr;         // [T·k, y_ld] in sorted-row order
  const int* pos = nullptr;         // [T, k]
  const float* shared_y = nullptr;  // [T, y_ld] or nullptr
  int y_ld = 0;
  int tokens = 0, top_k = 0, hidden = 0;
  void* out = nullptr;  // [T, out_ld] of Elem
  std::int64_t out_ld = 0;
};

template <int kVec>
__device__ __forceinline__ void add(float (&acc)[kVec], const float* y) {
  if constexpr (kVec == 4) {
    const float4 v = *reinterpret_cast<const float4*>(y);  // y rows are 16-byte aligned
    acc[0] += v.x;
    acc[1] += v.y;
    acc[2] += v.z;
    acc[3] += v.w;
  } else {
#pragma unroll
    for (int v = 0; v < kVec; ++v) acc[v] += y[v];
  }
}

// kVec = 4 needs hidden, out_ld and out 4-element aligned (the launcher checks).
template <class Elem, int kVec>
__global__ void __launch_bounds__(kCombineThreads) combine_slots(const CombineParams p) {
  ptx::enter_dependent_grid();
  const int t = static_cast<int>(blockIdx.x);
  const int* pos = p.pos + static_cast<std::int64_t>(t) * p.top_k;
  Elem* out = static_cast<Elem*>(p.out) + t * p.out_ld;
  for (int h = static_cast<int>(threadIdx.x) * kVec; h < p.hidden; h += kCombineThreads * kVec) {
    float acc[kVec] = {};
    for (int j = 0; j < p.top_k; ++j) {
      const int row = pos[j];
      if (row < 0) continue;
      const float* y = p.y + static_cast<std::int64_t>(row) * p.y_ld + h;
      add(acc, y);
    }
    if (p.shared_y != nullptr) {
      add(acc, p.shared_y + static_cast<std::int64_t>(t) * p.y_ld + h);
    }
#pragma unroll
    for (int v = 0; v < kVec; ++v) store_out(out + h + v, acc[v]);
  }
}

}  // namespace fusedmoe::cuda
