// The cp.async side of the expert GEMMs' shared-memory ring, the same for the sm_80 and sm_90a
// mainloops: tiles of [rows, 64] 16-bit elements, 128-byte rows whose 16-byte chunks are
// XOR-swizzled by row % 8. ldmatrix reads them without bank conflicts, and once a tile starts on
// a 1024-byte boundary the layout is also wgmma's 128-byte swizzle mode.
//
// A's rows are gathered: the caller gives each loading thread the global address of the rows it
// loads (nullptr for rows past the expert's token count: they load as zeros), in plane 0;
// further planes sit a_plane_stride elements on. B is one expert's weight block, rows contiguous
// and zero-padded to whole tiles, so its copies need no predicate.
#pragma once

#include <cstdint>

#include "cuda/kernels/ptx/sm80.cuh"

namespace fusedmoe::cuda {

// ALoaders: the threads [0, ALoaders) that load A (all of them unless A's chunks do not split
// evenly over the block: 96 rows over 512 threads load by 384).
template <class Elem, int BM, int BN, int Threads, int APlanes, int ALoaders = Threads>
struct SwizzledTiles {
  static constexpr int kBK = 64;
  static constexpr int kChunksPerRow = kBK * 2 / 16;  // 16-byte chunks per 128-byte row
  static constexpr int kAChunksPerThread = BM * kChunksPerRow / ALoaders;
  static constexpr int kBChunksPerThread = BN * kChunksPerRow / Threads;

  static_assert(sizeof(Elem) == 2, "16-bit elements only");
  static_assert(ALoaders <= Threads && BM * kChunksPerRow % ALoaders == 0,
                "A tile chunks split evenly over the loading threads");
  static_assert(BN * kChunksPerRow % Threads == 0, "B tile chunks split evenly over threads");

  // Rows this thread loads for A (the same rows in every plane and every stage).
  struct ARows {
    const Elem* row[kAChunksPerThread];  // row start in plane 0, nullptr: absent row
  };

  // Whether this thread loads A.
  __device__ __forceinline__ static bool loads_a() {
    return ALoaders == Threads || static_cast<int>(threadIdx.x) < ALoaders;
  }
  // Row (in the tile) and chunk of the i-th A chunk this thread loads (if loads_a()), and of the
  // i-th B chunk.
  __device__ __forceinline__ static int a_chunk_row(int i) {
    return (static_cast<int>(threadIdx.x) + i * ALoaders) / kChunksPerRow;
  }
  __device__ __forceinline__ static int a_chunk_col(int i) {
    return (static_cast<int>(threadIdx.x) + i * ALoaders) % kChunksPerRow;
  }
  __device__ __forceinline__ static int chunk_row(int i) {
    return (static_cast<int>(threadIdx.x) + i * Threads) / kChunksPerRow;
  }
  __device__ __forceinline__ static int chunk_col(int i) {
    return (static_cast<int>(threadIdx.x) + i * Threads) % kChunksPerRow;
  }
  // Element offset of (row, 16-byte chunk) inside a swizzled [rows, 64] tile.
  __device__ __forceinline__ static int swizzle(int row, int chunk) {
    return row * kBK + ((chunk ^ (row & 7)) * 8);
  }

  // Columns [k0, k0 + 64) of A's rows, every plane, into sa (plane p at sa + p·BM·64). Columns at
  // or past a_cols load as zeros; `mapped` is any mapped address, read by no copy.
  __device__ __forceinline__ static void load_a(Elem* sa, const ARows& a,
                                                std::int64_t a_plane_stride, int a_cols, int k0,
                                                const Elem* mapped) {
    if (!loads_a()) return;
#pragma unroll
    for (int i = 0; i < kAChunksPerThread; ++i) {
      const int row = a_chunk_row(i), chunk = a_chunk_col(i);
      const int col = k0 + chunk * 8;
      const bool valid = a.row[i] != nullptr && col < a_cols;
      const Elem* src = valid ? a.row[i] + col : mapped;
#pragma unroll
      for (int p = 0; p < APlanes; ++p) {
        ptx::cp_async_16B_zfill(sa + p * BM * kBK + swizzle(row, chunk),
                                valid ? src + p * a_plane_stride : src, valid);
      }
    }
  }

  // Columns [k0, k0 + 64) of B's BN rows (b_ld elements apart) into sb.
  __device__ __forceinline__ static void load_b(Elem* sb, const Elem* b, std::int64_t b_ld,
                                                int k0) {
#pragma unroll
    for (int i = 0; i < kBChunksPerThread; ++i) {
      const int row = chunk_row(i), chunk = chunk_col(i);
      ptx::cp_async_16B_zfill(sb + swizzle(row, chunk), b + row * b_ld + k0 + chunk * 8, true);
    }
  }
};

}  // namespace fusedmoe::cuda
