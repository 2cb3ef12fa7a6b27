// GEMM1 of the routed (or shared) experts, with the gated activation in the
// epilogue:  act[row, i] = activation(x[token(row)] · gate_iᵀ + bg_i, x[token(row)] · up_iᵀ + bu_i)
//
// B (one expert's gate and up rows) is packed so that every 16 rows are 8 gate rows then the 8 up
// rows of the same intermediate columns: the n8 fragments of a warp come in (gate, up) pairs held
// by the same thread at the same positions, so the activation needs no data exchange. A's rows are
// token rows of x gathered through the sorted permutation (perm[row] / top_k); without a
// permutation (shared expert) row r is token r. The activation is written as two 16-bit planes
// (hi, lo) of act [rows, act_ld] in sorted-row order.
//
// Limits: K (hidden) is padded to a multiple of 64 in the packed weights and x's columns past
// `x_cols` load as zeros; x rows must start 16-byte aligned and x_cols be a multiple of 8 (the
// launcher stages x otherwise).
#pragma once

#include <cstdint>

#include "cuda/kernels/epilogue/gated_activation.cuh"
#include "cuda/kernels/gemm/map_rows.cuh"
#include "cuda/kernels/ptx/grid_dependency.cuh"
#include "cuda/kernels/scheduler/tile_list.cuh"

namespace fusedmoe::cuda {

template <class Elem>
struct GatedGemmParams {
  const Elem* x = nullptr;  // [T, x_ld]
  std::int64_t x_ld = 0;
  int x_cols = 0;             // columns of x that exist (H, or H padded when staged)
  const int* perm = nullptr;  // [rows] sorted row -> token · top_k + slot; nullptr: identity
  int top_k = 1;
  TileList tiles;
  const Elem* w = nullptr;  // [experts][n_rows, k_pad]: interleaved gate/up rows
  std::int64_t w_expert_stride = 0;
  CUtensorMap w_map{};  // the same rows as a 2-D tensor map, for mainloops that load B by TMA
  int k_pad = 0;        // packed hidden size, a multiple of 64
  const float* bias = nullptr;  // [experts][n_rows] in the packed order, or nullptr
  std::int64_t bias_expert_stride = 0;
  Elem* act_hi = nullptr;  // [rows, act_ld]
  Elem* act_lo = nullptr;
  int act_ld = 0;
  ActivationParams activation;
};

// One tile's mainloop: x's rows of `tile` gathered against packed rows [n0, n0 + BN) of its expert.
template <class Elem, class Mainloop>
__device__ __forceinline__ void gated_mainloop(const GatedGemmParams<Elem>& p, const Tile& tile,
                                               int n0, void* smem_raw,
                                               float (&acc)[Mainloop::kMI][Mainloop::kNI][4]) {
  typename Mainloop::ARows a;
#pragma unroll
  for (int i = 0; i < Mainloop::Tiles::kAChunksPerThread; ++i) {
    const int r = tile.first + Mainloop::Tiles::a_chunk_row(i);
    a.row[i] = nullptr;
    if (Mainloop::Tiles::loads_a() && r < tile.rows) {
      const int sorted = tile.segment_start + r;
      const int token = p.perm != nullptr ? p.perm[sorted] / p.top_k : sorted;
      a.row[i] = p.x + token * p.x_ld;
    }
  }
  const Elem* b = p.w + tile.expert * p.w_expert_stride + static_cast<std::int64_t>(n0) * p.k_pad;
  const MapRows b_map{&p.w_map, static_cast<int>(tile.expert * (p.w_expert_stride / p.k_pad)) + n0};
  Mainloop::run(acc, smem_raw, a, 0, p.x_cols, b, p.k_pad, p.k_pad / Mainloop::kBK,
                tile.rows - tile.first, b_map);
}

// The activation of packed rows (gate_col, gate_col + 8) of block n0, both biased, for the two
// accumulator values of each.
template <class Elem>
__device__ __forceinline__ float2 gated_pair(const GatedGemmParams<Elem>& p, const float* bias,
                                             int gate_col, float g0, float g1, float u0, float u1,
                                             bool same_col) {
  if (bias != nullptr) {
    g0 += bias[gate_col];
    g1 += bias[same_col ? gate_col : gate_col + 1];
    u0 += bias[gate_col + 8];
    u1 += bias[same_col ? gate_col + 8 : gate_col + 9];
  }
  return make_float2(gated_activation(p.activation, g0, u0),
                     gated_activation(p.activation, g1, u1));
}

// Intermediate column of packed row n (a gate row): 8 columns per 16 packed rows.
__device__ __forceinline__ int gated_column(int n) { return n / 16 * 8 + n % 8; }

// A row tile (Mainloop: sm80::GroupedMainloop or sm90::GroupedMainloop with 1 A plane).
template <class Elem, class Mainloop>
__device__ __forceinline__ void gated_row_tile(const GatedGemmParams<Elem>& p, const Tile& tile,
                                               void* smem_raw) {
  constexpr int BN = Mainloop::kBN;
  static_assert(Mainloop::kWarpN % 16 == 0, "each warp holds whole (gate, up) fragment pairs");
  const int n0 = static_cast<int>(blockIdx.y) * BN;  // first packed row
  float acc[Mainloop::kMI][Mainloop::kNI][4];
  gated_mainloop<Elem, Mainloop>(p, tile, n0, smem_raw, acc);

  const float* bias =
      p.bias != nullptr ? p.bias + tile.expert * p.bias_expert_stride + n0 : nullptr;
  using Pair = typename Split16<Elem>::Pair;
#pragma unroll
  for (int mi = 0; mi < Mainloop::kMI; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // accumulator rows g and g + 8
      const int r = tile.first + Mainloop::acc_row(mi, half * 2);
      if (r >= tile.rows) continue;
      const std::int64_t out_row = static_cast<std::int64_t>(tile.segment_start + r) * p.act_ld;
#pragma unroll
      for (int ni = 0; ni < Mainloop::kNI; ni += 2) {
        const int gate_col = Mainloop::acc_col(ni, 0);  // packed row of the gate value
        const float2 v =
            gated_pair(p, bias, gate_col, acc[mi][ni][half * 2], acc[mi][ni][half * 2 + 1],
                       acc[mi][ni + 1][half * 2], acc[mi][ni + 1][half * 2 + 1], false);
        const int col = gated_column(n0 + gate_col);
        Pair hi, lo;
        Split16<Elem>::split(v, hi, lo);
        *reinterpret_cast<Pair*>(p.act_hi + out_row + col) = hi;
        *reinterpret_cast<Pair*>(p.act_lo + out_row + col) = lo;
      }
    }
  }
}

// A swapped tile (sm90::GroupedMainloop with Swapped): the accumulators hold weight rows g and
// g + 8, a gate row and its up row, for two tokens each.
template <class Elem, class Swapped>
__device__ __forceinline__ void gated_swapped_tile(const GatedGemmParams<Elem>& p, const Tile& tile,
                                                   void* smem_raw) {
  const int n0 = static_cast<int>(blockIdx.y) * Swapped::kBN;
  float acc[Swapped::kMI][Swapped::kNI][4];
  gated_mainloop<Elem, Swapped>(p, tile, n0, smem_raw, acc);

  const float* bias =
      p.bias != nullptr ? p.bias + tile.expert * p.bias_expert_stride + n0 : nullptr;
  using Pair = typename Split16<Elem>::Pair;
#pragma unroll
  for (int mi = 0; mi < Swapped::kMI; ++mi) {
    const int gate_col = Swapped::swapped_col(mi, 0);
    const int col = gated_column(n0 + gate_col);
#pragma unroll
    for (int ni = 0; ni < Swapped::kNI; ++ni) {
      const float2 v = gated_pair(p, bias, gate_col, acc[mi][ni][0], acc[mi][ni][1], acc[mi][ni][2],
                                  acc[mi][ni][3], true);
      Pair hi, lo;
      Split16<Elem>::split(v, hi, lo);
#pragma unroll
      for (int j = 0; j < 2; ++j) {  // tokens swapped_row(ni, j): v.x, v.y
        const int r = tile.first + Swapped::swapped_row(ni, j);
        if (r >= tile.rows) continue;
        const std::int64_t at = static_cast<std::int64_t>(tile.segment_start + r) * p.act_ld + col;
        p.act_hi[at] = j == 0 ? hi.x : hi.y;
        p.act_lo[at] = j == 0 ? lo.x : lo.y;
      }
    }
  }
}

// Mainloop: the row tiles' (sm80::GroupedMainloop, or sm90::GroupedMainloop with 1 A plane, of
// either form); Narrow: the narrow tiles' (sm90::GroupedMainloop, swapped), or void without them.
// Blocks [0, tiles.capacity) of x run row tiles, the rest narrow tiles. MinBlocks: blocks per SM
// the registers must allow (__launch_bounds__; 0 leaves the register budget to the compiler).
template <class Elem, class Mainloop, class Narrow = void, int MinBlocks = 0>
__global__ void __launch_bounds__(Mainloop::kThreads, MinBlocks)
    grouped_gemm_gated(const __grid_constant__ GatedGemmParams<Elem> p) {
  if constexpr (!Mainloop::kCompiled) {
    __trap();
  } else {
    ptx::enter_dependent_grid();
    extern __shared__ __align__(128) unsigned char smem_raw[];
    run_block_tile<Mainloop, Narrow>(p.tiles, [&]<class M>(const Tile& tile) {
      if constexpr (M::kSwapped) {
        gated_swapped_tile<Elem, M>(p, tile, smem_raw);
      } else {
        gated_row_tile<Elem, M>(p, tile, smem_raw);
      }
    });
  }
}

}  // namespace fusedmoe::cuda
