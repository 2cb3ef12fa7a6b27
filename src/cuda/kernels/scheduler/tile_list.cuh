// Which rows an expert-GEMM block computes. The align stage writes a tile list on the device
// (expert, first row) with its length; the grid is sized by an upper bound on that length, so a
// block whose index is past the list's end has no work and returns (no host synchronisation).
// Without a list (the shared expert: every token, in token order) tile i covers rows
// [i·BM, (i+1)·BM) of `rows` rows.
#pragma once

#include <cstdint>

namespace fusedmoe::cuda {

struct TileList {
  const int2* tiles = nullptr;   // [capacity] (expert, first row inside the expert's segment)
  const int* count = nullptr;    // tiles in use (device)
  const int* offsets = nullptr;  // [E + 1] segment starts in sorted-row order
  int rows = 0;                  // without a list: rows in all
};

struct Tile {
  int expert = 0;
  int segment_start = 0;  // sorted row of the expert's first row
  int first = 0;          // first row of the tile inside the segment
  int rows = 0;           // rows of the segment (the tile holds rows [first, min(first+BM, rows)))
};

// false: this block has no tile.
template <int BM>
__device__ __forceinline__ bool find_tile(const TileList& list, int index, Tile& tile) {
  if (list.tiles == nullptr) {
    tile = {0, 0, index * BM, list.rows};
    return tile.first < tile.rows;
  }
  if (index >= *list.count) return false;
  const int2 t = list.tiles[index];
  const int start = list.offsets[t.x];
  tile = {t.x, start, t.y, list.offsets[t.x + 1] - start};
  return true;
}

}  // namespace fusedmoe::cuda
