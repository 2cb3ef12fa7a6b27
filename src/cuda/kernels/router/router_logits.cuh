// Router logits on CUDA cores in fp32 (MODELS.md: router arithmetic is fp32):
//   partial[s, t, l] = Σ_{h in slice s} x[t, h] · R[l, h]
// R is [L, H] f32 (the E router rows, then the shared expert's gate row when it has one). H is
// cut into fixed slices of kSliceK columns, so decode-sized batches still spread over many blocks;
// the top-k stage adds the slices in order. Every sum runs in the same order whatever T is: a
// token's logits do not depend on the batch it came in.
//
// Block: 256 threads, a tile of 32 tokens x 32 logits, each thread 2 x 2 of them; x and R stream
// through shared memory 128 columns at a time (x converted to f32 on load). Any H, any row stride.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/kernels/ptx/grid_dependency.cuh"

namespace fusedmoe::cuda {

inline constexpr int kRouterSliceK = 256;
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
  ptx::enter_dependent_grid();
  // A slice is two steps of kBK columns; each thread issues all its loads of a step before it
  // stores any, and the next step's loads before computing this one: decode batches are a few
  // blocks deep and latency, not bandwidth, is what they wait on.
  constexpr int kBK = 128;
  constexpr int kLoads = kRouterTileT * kBK / kRouterThreads;  // per operand per thread
  static_assert(kRouterTileT == kRouterTileL, "one load pattern for both operands");
  __shared__ float xs[kBK][kRouterTileT + 2];  // [k][token], rows 8-byte aligned for float2
  __shared__ float rs[kBK][kRouterTileL + 2];  // [k][logit]
  const int l0 = static_cast<int>(blockIdx.x) * kRouterTileL;
  const int t0 = static_cast<int>(blockIdx.y) * kRouterTileT;
  const int slice = static_cast<int>(blockIdx.z);
  const int k_begin = slice * kRouterSliceK;
  const int k_end = min(hidden, k_begin + kRouterSliceK);
  const int tid = static_cast<int>(threadIdx.x);
  const int tt = (tid / 16) * 2, tl = (tid % 16) * 2;  // this thread's 2 x 2 outputs

  float xv[kLoads], rv[kLoads];
  const auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int idx = tid + i * kRouterThreads;
      const int row = idx / kBK, k = k0 + idx % kBK;  // k is the fast index: coalesced
      const int t = t0 + row, l = l0 + row;
      xv[i] = (t < tokens && k < k_end) ? to_f32(x[t * x_ld + k]) : 0.0f;
      rv[i] = (l < logits && k < k_end) ? router[static_cast<std::int64_t>(l) * hidden + k] : 0.0f;
    }
  };
  const auto store = [&] {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int idx = tid + i * kRouterThreads;
      xs[idx % kBK][idx / kBK] = xv[i];
      rs[idx % kBK][idx / kBK] = rv[i];
    }
  };

  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  load(k_begin);
  for (int k0 = k_begin; k0 < k_end; k0 += kBK) {
    store();
    __syncthreads();
    if (k0 + kBK < k_end) load(k0 + kBK);
      // in k order (the sum's order is fixed); columns past k_end are zeros in shared memory, so a
      // short last step runs the same unrolled loop
#pragma unroll 16
    for (int kk = 0; kk < kBK; ++kk) {
      const float2 a = *reinterpret_cast<const float2*>(&xs[kk][tt]);
      const float2 b = *reinterpret_cast<const float2*>(&rs[kk][tl]);
      acc[0][0] = fmaf(a.x, b.x, acc[0][0]);
      acc[0][1] = fmaf(a.x, b.y, acc[0][1]);
      acc[1][0] = fmaf(a.y, b.x, acc[1][0]);
      acc[1][1] = fmaf(a.y, b.y, acc[1][1]);
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
