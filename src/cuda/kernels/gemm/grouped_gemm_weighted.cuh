// GEMM2 of the routed (or shared) experts, the routing weight applied in the
// epilogue:  y[row, h] = weight(row) · (act[row] · down_hᵀ + b_h)   (f32 out)
//
// A is the activation GEMM1 wrote, as two 16-bit planes (hi + lo) summed against the same B in
// the mainloop, rows in sorted order (no gather). y rows are sorted rows too; the combine stage
// reads them back per token in slot order. weight(row) = weights[perm[row]] for routed experts,
// weights[row] (the shared expert's gate) without a permutation, 1 without weights.
#pragma once

#include <cstdint>

#include "cuda/kernels/gemm/map_rows.cuh"
#include "cuda/kernels/ptx/grid_dependency.cuh"
#include "cuda/kernels/scheduler/tile_list.cuh"

namespace fusedmoe::cuda {

template <class Elem>
struct WeightedGemmParams {
  const Elem* act_hi = nullptr;  // [rows, act_ld]; act_lo = act_hi + plane_stride
  std::int64_t plane_stride = 0;
  int act_ld = 0;  // a multiple of 64 (the packed intermediate size)
  TileList tiles;
  const int* perm = nullptr;       // sorted row -> token · top_k + slot; nullptr: identity
  const float* weights = nullptr;  // indexed by perm[row] (or row); nullptr: 1
  const Elem* w = nullptr;         // [experts][n_pad, act_ld] down rows, zero-padded
  std::int64_t w_expert_stride = 0;
  CUtensorMap w_map{};  // the same rows as a 2-D tensor map, for mainloops that load B by TMA
  const float* bias = nullptr;  // [experts][n_pad] or nullptr
  std::int64_t bias_expert_stride = 0;
  float* y = nullptr;  // [rows, y_ld]
  int y_ld = 0;
};

// One tile's mainloop: the activation rows of `tile` (both planes) against down rows
// [n0, n0 + BN) of its expert.
template <class Elem, class Mainloop>
__device__ __forceinline__ void weighted_mainloop(const WeightedGemmParams<Elem>& p,
                                                  const Tile& tile, int n0, void* smem_raw,
                                                  float (&acc)[Mainloop::kMI][Mainloop::kNI][4]) {
  typename Mainloop::ARows a;
#pragma unroll
  for (int i = 0; i < Mainloop::Tiles::kAChunksPerThread; ++i) {
    const int r = tile.first + Mainloop::Tiles::a_chunk_row(i);
    a.row[i] = Mainloop::Tiles::loads_a() && r < tile.rows
                   ? p.act_hi + static_cast<std::int64_t>(tile.segment_start + r) * p.act_ld
                   : nullptr;
  }
  const Elem* b = p.w + tile.expert * p.w_expert_stride + static_cast<std::int64_t>(n0) * p.act_ld;
  const MapRows b_map{&p.w_map,
                      static_cast<int>(tile.expert * (p.w_expert_stride / p.act_ld)) + n0};
  Mainloop::run(acc, smem_raw, a, p.plane_stride, p.act_ld, b, p.act_ld, p.act_ld / Mainloop::kBK,
                tile.rows - tile.first, b_map);
}

// The routing weight of sorted row `sorted`.
template <class Elem>
__device__ __forceinline__ float row_weight(const WeightedGemmParams<Elem>& p, int sorted) {
  if (p.weights == nullptr) return 1.0f;
  return p.weights[p.perm != nullptr ? p.perm[sorted] : sorted];
}

// A row tile (Mainloop: sm80::GroupedMainloop or sm90::GroupedMainloop with 2 A planes).
template <class Elem, class Mainloop>
__device__ __forceinline__ void weighted_row_tile(const WeightedGemmParams<Elem>& p,
                                                  const Tile& tile, void* smem_raw) {
  constexpr int BN = Mainloop::kBN;
  const int n0 = static_cast<int>(blockIdx.y) * BN;
  float acc[Mainloop::kMI][Mainloop::kNI][4];
  weighted_mainloop<Elem, Mainloop>(p, tile, n0, smem_raw, acc);

  const float* bias =
      p.bias != nullptr ? p.bias + tile.expert * p.bias_expert_stride + n0 : nullptr;
#pragma unroll
  for (int mi = 0; mi < Mainloop::kMI; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = tile.first + Mainloop::acc_row(mi, half * 2);
      if (r >= tile.rows) continue;
      const int sorted = tile.segment_start + r;
      const float weight = row_weight(p, sorted);
      float* y = p.y + static_cast<std::int64_t>(sorted) * p.y_ld + n0;
#pragma unroll
      for (int ni = 0; ni < Mainloop::kNI; ++ni) {
        const int col = Mainloop::acc_col(ni, 0);
        float v0 = acc[mi][ni][half * 2], v1 = acc[mi][ni][half * 2 + 1];
        if (bias != nullptr) {
          v0 += bias[col];
          v1 += bias[col + 1];
        }
        *reinterpret_cast<float2*>(y + col) = make_float2(weight * v0, weight * v1);
      }
    }
  }
}

// A swapped tile (sm90::GroupedMainloop with Swapped and 2 A planes): each accumulator is one
// (token, column) element.
template <class Elem, class Swapped>
__device__ __forceinline__ void weighted_swapped_tile(const WeightedGemmParams<Elem>& p,
                                                      const Tile& tile, void* smem_raw) {
  const int n0 = static_cast<int>(blockIdx.y) * Swapped::kBN;
  float acc[Swapped::kMI][Swapped::kNI][4];
  weighted_mainloop<Elem, Swapped>(p, tile, n0, smem_raw, acc);

  const float* bias =
      p.bias != nullptr ? p.bias + tile.expert * p.bias_expert_stride + n0 : nullptr;
#pragma unroll
  for (int ni = 0; ni < Swapped::kNI; ++ni) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {  // tokens swapped_row(ni, j), in r = j and r = j + 2
      const int r = tile.first + Swapped::swapped_row(ni, j);
      if (r >= tile.rows) continue;
      const int sorted = tile.segment_start + r;
      const float weight = row_weight(p, sorted);
      float* y = p.y + static_cast<std::int64_t>(sorted) * p.y_ld + n0;
#pragma unroll
      for (int mi = 0; mi < Swapped::kMI; ++mi) {
#pragma unroll
        for (int r8 = 0; r8 < 4; r8 += 2) {
          const int col = Swapped::swapped_col(mi, r8);
          float v = acc[mi][ni][r8 + j];
          if (bias != nullptr) v += bias[col];
          y[col] = weight * v;
        }
      }
    }
  }
}

// Mainloop: the row tiles'; Narrow: the narrow tiles', or void without them; MinBlocks as for
// grouped_gemm_gated.
template <class Elem, class Mainloop, class Narrow = void, int MinBlocks = 0>
__global__ void __launch_bounds__(Mainloop::kThreads, MinBlocks)
    grouped_gemm_weighted(const __grid_constant__ WeightedGemmParams<Elem> p) {
  if constexpr (!Mainloop::kCompiled) {
    __trap();
  } else {
    ptx::enter_dependent_grid();
    extern __shared__ __align__(128) unsigned char smem_raw[];
    run_block_tile<Mainloop, Narrow>(p.tiles, [&]<class M>(const Tile& tile) {
      if constexpr (M::kSwapped) {
        weighted_swapped_tile<Elem, M>(p, tile, smem_raw);
      } else {
        weighted_row_tile<Elem, M>(p, tile, smem_raw);
      }
    });
  }
}

}  // namespace fusedmoe::cuda
