// Align: from ids [T·k] to the expert-sorted order the GEMMs read, in one block on the device
// (no host synchronisation):
//   offsets[E + 1]  start of each expert's segment of sorted rows
//   perm[sorted]    = t·k + j of the slot placed there;  pos[t·k + j] = its sorted row, -1 if the
//                     id is outside [0, E) (the slot contributes nothing; the id is counted)
//   tiles[...]      (expert, first row) of every BM-row tile, experts in order; tile_count
//   narrow[...]     with narrow_rows > 0: (expert, 0) of each expert with 1..narrow_rows rows,
//                   which takes one narrow tile instead of row tiles (plan.hpp); narrow_count
// Slots are placed with shared-memory atomics, so the order inside a segment varies run to run;
// the results do not, because every row of a GEMM tile is computed independently of the others.
#pragma once

#include <cub/block/block_scan.cuh>

#include <cstdint>

#include "cuda/kernels/ptx/grid_dependency.cuh"

namespace fusedmoe::cuda {

inline constexpr int kAlignThreads = 1024;
inline constexpr int kAlignItems = 4;  // experts per thread in the scans: E <= 4096
inline constexpr int kAlignMaxExperts = kAlignThreads * kAlignItems;

struct AlignParams {
  const std::int32_t* ids = nullptr;  // [slots]
  int slots = 0;                      // T·k
  int experts = 0;
  int block_m = 0;         // tile rows
  int narrow_rows = 0;     // 0: no narrow tiles
  int* offsets = nullptr;  // [E + 1]
  int* perm = nullptr;     // [slots]
  int* pos = nullptr;      // [slots]
  int2* tiles = nullptr;   // [capacity]
  int* tile_count = nullptr;
  int2* narrow = nullptr;  // [experts]
  int* narrow_count = nullptr;
  unsigned long long* invalid_ids = nullptr;  // incremented by the ids outside [0, E)
};

__global__ void __launch_bounds__(kAlignThreads) align_slots(const AlignParams p) {
  ptx::enter_dependent_grid();
  using Scan = cub::BlockScan<int, kAlignThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  extern __shared__ int align_smem[];
  int* counts = align_smem;                     // [E], then the running cursor of each expert
  int* tile_start = align_smem + p.experts;     // [E]
  int* narrow_at = align_smem + 2 * p.experts;  // [E]: the expert's narrow tile, or -1
  __shared__ int invalid;
  const int tid = static_cast<int>(threadIdx.x);
  for (int e = tid; e < p.experts; e += kAlignThreads) counts[e] = 0;
  if (tid == 0) invalid = 0;
  __syncthreads();

  int my_invalid = 0;
  for (int s = tid; s < p.slots; s += kAlignThreads) {
    const int e = p.ids[s];
    if (e < 0 || e >= p.experts) {
      ++my_invalid;
    } else {
      atomicAdd(&counts[e], 1);
    }
  }
  if (my_invalid > 0) atomicAdd(&invalid, my_invalid);
  __syncthreads();

  // exclusive scans of rows, row tiles and narrow tiles, E split in contiguous runs of
  // kAlignItems per thread; the tiles are counted as plan.cpp's row_tiles() does
  int rows[kAlignItems], tiles[kAlignItems], narrows[kAlignItems];
#pragma unroll
  for (int i = 0; i < kAlignItems; ++i) {
    const int e = tid * kAlignItems + i;
    rows[i] = e < p.experts ? counts[e] : 0;
    narrows[i] = rows[i] > 0 && rows[i] <= p.narrow_rows ? 1 : 0;
    tiles[i] = narrows[i] > 0 ? 0 : (rows[i] + p.block_m - 1) / p.block_m;
  }
  int row_total = 0, tile_total = 0, narrow_total = 0;
  Scan(scan_storage).ExclusiveSum(rows, rows, row_total);
  __syncthreads();
  Scan(scan_storage).ExclusiveSum(tiles, tiles, tile_total);
  __syncthreads();
  int narrow_first[kAlignItems];
  Scan(scan_storage).ExclusiveSum(narrows, narrow_first, narrow_total);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kAlignItems; ++i) {
    const int e = tid * kAlignItems + i;
    if (e < p.experts) {
      p.offsets[e] = rows[i];
      counts[e] = rows[i];  // becomes the cursor
      tile_start[e] = tiles[i];
      narrow_at[e] = narrows[i] > 0 ? narrow_first[i] : -1;
    }
  }
  if (tid == 0) {
    p.offsets[p.experts] = row_total;
    *p.tile_count = tile_total;
    if (p.narrow_count != nullptr) *p.narrow_count = narrow_total;
    if (invalid > 0) atomicAdd(p.invalid_ids, static_cast<unsigned long long>(invalid));
  }
  __syncthreads();

  // the tile lists: expert e's row tiles are [tile_start[e], tile_start[e + 1]), or its narrow
  // tile takes all of its rows
  for (int e = tid; e < p.experts; e += kAlignThreads) {
    const int end = e + 1 < p.experts ? tile_start[e + 1] : tile_total;
    for (int i = tile_start[e]; i < end; ++i)
      p.tiles[i] = make_int2(e, (i - tile_start[e]) * p.block_m);
    if (narrow_at[e] >= 0) p.narrow[narrow_at[e]] = make_int2(e, 0);
  }
  for (int s = tid; s < p.slots; s += kAlignThreads) {
    const int e = p.ids[s];
    if (e < 0 || e >= p.experts) {
      p.pos[s] = -1;
      continue;
    }
    const int at = atomicAdd(&counts[e], 1);
    p.perm[at] = s;
    p.pos[s] = at;
  }
}

}  // namespace fusedmoe::cuda
