// Router logits on CUDA cores in fp32 (MODELS.md: router arithmetic is fp32):
//   partial[s, t, l] = Σ_{h in slice s} x[t, h] · R[l, h]
// R is [L, H] f32 (the E router rows, then the shared expert's gate row when it has one). H is
// cut into fixed slices of kSliceK columns, so decode-sized batches still spread over many blocks;
// the top-k stage adds the slices in order. Every sum runs in the same order whatever T is: a
// token's logits do not depend on the batch it came in.
//
// Block: 256 threads, a tile of 32 tokens x 32 logits, each thread 2 x 2 of them; x and R stream
// through shared memory 32 columns at a time (x converted to f32 on load). Any H, any row stride.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fusedmoe::cuda {

inline constexpr int kRouterSliceK = 512;
inline constexpr int kRouterTileT = 32;
inline constexpr int kRouterTileL = 32;
inline constexpr int kRouterThreads = 256;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <class Elem>
__global__ void __launch_bounds__(kRouterThreads)
    router_logits(const Elem* __restrict__ x, std::int64_t x_ld, const float* __restrict__ router,
                  int tokens, int logits, int hidden, float* __restrict__ partial) {
  constexpr int kBK = 32;
  __shared__ float xs[kBK][kRouterTileT + 1];  // [k][token]
  __shared__ float rs[kBK][kRouterTileL + 1];  // [k][logit]
  const int l0 = static_cast<int>(blockIdx.x) * kRouterTileL;
  const int t0 = static_cast<int>(blockIdx.y) * kRouterTileT;
  const int slice = static_cast<int>(blockIdx.z);
  const int k_begin = slice * kRouterSliceK;
  const int k_end = min(hidden, k_begin + kRouterSliceK);
  const int tid = static_cast<int>(threadIdx.x);
  const int tt = (tid / 16) * 2, tl = (tid % 16) * 2;  // this thread's 2 x 2 outputs
  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};

  for (int k0 = k_begin; k0 < k_end; k0 += kBK) {
    // 32 x 32 of each operand, 4 elements per thread; k is the fast index for coalescing
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int idx = tid + i * kRouterThreads;
      const int row = idx / kBK, kk = idx % kBK;
      const int k = k0 + kk;
      const int t = t0 + row, l = l0 + row;
      xs[kk][row] = (t < tokens && k < k_end) ? to_f32(x[t * x_ld + k]) : 0.0f;
      rs[kk][row] =
          (l < logits && k < k_end) ? router[static_cast<std::int64_t>(l) * hidden + k] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kBK; ++kk) {
      const float a0 = xs[kk][tt], a1 = xs[kk][tt + 1];
      const float b0 = rs[kk][tl], b1 = rs[kk][tl + 1];
      acc[0][0] = fmaf(a0, b0, acc[0][0]);
      acc[0][1] = fmaf(a0, b1, acc[0][1]);
      acc[1][0] = fmaf(a1, b0, acc[1][0]);
      acc[1][1] = fmaf(a1, b1, acc[1][1]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int t = t0 + tt + i, l = l0 + tl + j;
      if (t < tokens && l < logits) {
        partial[(static_cast<std::int64_t>(slice) * tokens + t) * logits + l] = acc[i][j];
      }
    }
  }
}

}  // namespace fusedmoe::cuda
