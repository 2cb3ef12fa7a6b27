// Which rows an expert-GEMM block computes. The align stage writes a tile list on the device
// (expert, first row) with its length; the grid is sized by an upper bound on that length, so a
// block whose index is past the list's end has no work and returns (no host synchronisation).
// Without a list (the shared expert: every token, in token order) tile i covers rows
// [i·BM, (i+1)·BM) of `rows` rows.
//
// With narrow tiles (sm_90a, gemm/sm90/grouped_mainloop.cuh) an expert with 1..narrow_rows rows
// takes one narrow tile for them instead of a row tile: a second list, whose blocks follow the
// `capacity` blocks of the first in the grid's x, so that each n-column of blocks runs its row
// tiles and then its narrow tiles, while that column of weights is still in L2. Which list a block
// reads is a function of blockIdx alone: the MMAs that follow are then provably uniform.
#pragma once

#include <cstdint>
#include <type_traits>

namespace fusedmoe::cuda {

struct TileList {
  const int2* tiles = nullptr;   // [capacity] (expert, first row inside the expert's segment)
  const int* count = nullptr;    // tiles in use (device)
  const int* offsets = nullptr;  // [E + 1] segment starts in sorted-row order
  int rows = 0;                  // without a list: rows in all
  int capacity = 0;              // blocks of row tiles: the grid's x before the narrow tiles
  const int2* narrow = nullptr;  // [experts] (expert, first row) of the narrow tiles
  const int* narrow_count = nullptr;
};

struct Tile {
  int expert = 0;
  int segment_start = 0;  // sorted row of the expert's first row
  int first = 0;          // first row of the tile inside the segment
  int rows = 0;           // rows of the segment (the tile holds rows [first, min(first+BM, rows)))
};

// The tile of a list entry (expert, first row).
__device__ __forceinline__ Tile listed_tile(const TileList& list, int2 t) {
  const int start = list.offsets[t.x];
  return {t.x, start, t.y, list.offsets[t.x + 1] - start};
}

// false: this block has no tile.
template <int BM>
__device__ __forceinline__ bool find_tile(const TileList& list, int index, Tile& tile) {
  if (list.tiles == nullptr) {
    tile = {0, 0, index * BM, list.rows};
    return tile.first < tile.rows;
  }
  if (index >= *list.count) return false;
  tile = listed_tile(list, list.tiles[index]);
  return true;
}

// The narrow tile of block `index` of the narrow blocks.
__device__ __forceinline__ bool find_narrow_tile(const TileList& list, int index, Tile& tile) {
  if (list.tiles == nullptr) {  // every row, when there are no row tiles
    tile = {0, 0, 0, list.rows};
    return index == 0 && list.capacity == 0 && list.rows > 0;
  }
  if (index >= *list.narrow_count) return false;
  tile = listed_tile(list, list.narrow[index]);
  return true;
}

// Runs this block's tile, if it has one: blocks [0, tiles.capacity) of x take a row tile of
// Mainloop::kBM rows, the rest a narrow tile (Narrow; void: no narrow tiles). `run` is called as
// run.template operator()<M>(tile), M the mainloop of the tile found. The narrow branch comes
// first and keeps its own Tile: compiled that way, the narrow path leads the kernel's code, and
// qwen3-30b-a3b T = 64 and 256 (all narrow tiles in GEMM1) ran 2% faster on an H100 than with one
// Tile found after an index test (bench/NOTES.md, "The narrow path's code layout").
template <class Mainloop, class Narrow, class Run>
__device__ __forceinline__ void run_block_tile(const TileList& tiles, Run&& run) {
  if constexpr (!std::is_void_v<Narrow>) {
    static_assert(Narrow::kThreads == Mainloop::kThreads, "one block size for both tiles");
    if (static_cast<int>(blockIdx.x) >= tiles.capacity) {
      Tile tile;
      if (find_narrow_tile(tiles, static_cast<int>(blockIdx.x) - tiles.capacity, tile)) {
        run.template operator()<Narrow>(tile);
      }
      return;
    }
  }
  Tile tile;
  if (find_tile<Mainloop::kBM>(tiles, static_cast<int>(blockIdx.x), tile)) {
    run.template operator()<Mainloop>(tile);
  }
}

}  // namespace fusedmoe::cuda
