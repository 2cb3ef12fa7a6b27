// The sm_90a mainloop shared by both expert GEMMs: C[BM, BN] = Σ_planes A_plane[BM, K] · B[BN, K]ᵀ
// on warpgroup MMAs (wgmma), fp32 accumulators in registers. Same contract as the sm_80 mainloop
// (gemm/sm80/grouped_mainloop.cuh), which it replaces on Hopper for tiles of 64 rows and more:
// gathered A rows, a kStages-deep ring of 128-byte swizzled rows, A_PLANES = 2 for the
// activation's hi + lo halves, and the same accumulation order (k16 steps in increasing order,
// planes in order inside a step, each BK step summed from zero and then added to the running sum
// with FADDs), so a row's result does not depend on which mainloop or tile computed it.
//
// A (gathered rows) comes by cp.async, B (the weights) through the bulk tensor copy engine: one
// thread issues one copy per k-tile from a 2-D tensor map whose 128-byte swizzle gives the same
// layout, completing on the stage's mbarrier. The shared tiles are in wgmma's 128-byte swizzle
// layout (a chunk's position is its index XOR row % 8, 8-row groups 1024 bytes apart) once each
// stage starts on a 1024-byte boundary, so the MMAs read the ring directly through descriptors.
// One warpgroup (4 warps) computes 64 rows x BN; BM / 64 warpgroups per block.
//
// Swapped tiles (Swapped = true) load exactly as above, but swap the operands' roles in the MMA:
// the BN = 128 weight rows are wgmma's A (two m64 halves) and the BM token rows its B (N = BM), so
// a tile pads an expert's rows to a multiple of 32, not of 64. Each output element still sums the
// same products in the same order (k16 steps, then planes), so a row's result is the same whichever
// tile computed it. Two shapes ship: narrow tiles of 32 rows (one warpgroup runs both halves: an
// expert with few rows costs half of a padded 64-row tile), and 96-row tiles whose two warpgroups
// take one half each, so that an expert with 65..96 rows streams each weight block once instead of
// twice (two 64-row tiles). A third (m96n256) puts the same 96 rows against 256 weight rows in
// four warpgroups, reading the token rows once per 256 weight rows.
#pragma once

#include <cstdint>

#include "cuda/kernels/gemm/map_rows.cuh"
#include "cuda/kernels/gemm/swizzled_tiles.cuh"
#include "cuda/kernels/ptx/sm80.cuh"
#include "cuda/kernels/ptx/sm90.cuh"

namespace fusedmoe::cuda::sm90 {

template <class Elem, int BM, int BN, int Stages, int APlanes, bool Swapped = false,
          int WarpGroups = Swapped ? 1 : BM / 64>
struct GroupedMainloop {
  static constexpr bool kCompiled = FUSEDMOE_WGMMA;  // this compilation pass has the instructions
  static constexpr bool kSwapped = Swapped;
  static constexpr int kBM = BM, kBN = BN;
  static constexpr int kWarpGroups = WarpGroups;
  static constexpr int kThreads = kWarpGroups * 128;
  // A's chunks over the threads: all of them, or (96 rows over 512 threads) the first 384
  static constexpr int kALoaders =
      BM * 8 % kThreads == 0 ? kThreads : BM * 8 / (BM * 8 / kThreads + 1);
  using Tiles = SwizzledTiles<Elem, BM, BN, kThreads, APlanes, kALoaders>;
  using ARows = typename Tiles::ARows;
  static constexpr int kBK = Tiles::kBK;
  static constexpr int kWarpM = 16;  // rows per warp
  static constexpr int kWarpN = BN;  // columns per warp
  // acc[mi][ni][r]: row tiles one m64 block of rows by BN / 8 fragments of columns; swapped tiles
  // the warpgroup's m64 blocks of weight rows by BM / 8 fragments of token rows
  static constexpr int kMI = Swapped ? BN / 64 / WarpGroups : 1;
  static constexpr int kNI = Swapped ? BM / 8 : BN / 8;
  static constexpr int kAStageElems = APlanes * BM * kBK;
  static constexpr int kStageElems = kAStageElems + BN * kBK;
  static constexpr int kAlign = 1024;  // the swizzle pattern repeats every 8 rows of 128 bytes
  static constexpr int kRingBytes = Stages * kStageElems * static_cast<int>(sizeof(Elem));
  static constexpr int kBStageBytes = BN * kBK * static_cast<int>(sizeof(Elem));
  static constexpr int kBBoxRows = 128;  // weight rows per bulk tensor copy (the maps' box)
  // the ring, its alignment slack and one 8-byte mbarrier per stage after it
  static constexpr int kSmemBytes = kRingBytes + kAlign + Stages * 8;

  static_assert(Swapped ? (BM == 32 || BM == 96) && (BN / 64) % WarpGroups == 0
                        : BM % 64 == 0 && WarpGroups == BM / 64,
                "whole warpgroups of 64 rows, or swapped tiles of 32 or 96 rows (m64n32 / m64n96)");
  static_assert(Swapped ? BN == 128 || (BN == 256 && BM == 96) : BN == 128,
                "row tiles' wgmma wrapper is m64n128k16; swapped tiles have 2 m64 blocks of weight "
                "rows (4 in the 96-row tile of 256)");
  static_assert(BN % kBBoxRows == 0, "B's stage is whole boxes of the weight maps");
  static_assert(Stages >= 2, "at least double buffering");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");

  // Arguments as for sm80::GroupedMainloop::run, except that B is read through b_map (its rows
  // [b_map.row, + BN) are the rows at b); b itself only serves as a mapped address for the
  // zero-filled copies of absent A rows. Every warpgroup runs its MMAs, padding rows included
  // (they are zeros): wgmma inside a branch the compiler cannot prove uniform is serialised,
  // which costs far more than a partly filled tile.
  __device__ __forceinline__ static void run(float (&acc)[kMI][kNI][4], void* smem_raw,
                                             const ARows& a, std::int64_t a_plane_stride,
                                             int a_cols, const Elem* b, std::int64_t /*b_ld*/,
                                             int k_tiles, int /*valid_rows*/, MapRows b_map) {
    Elem* smem = reinterpret_cast<Elem*>((reinterpret_cast<std::uintptr_t>(smem_raw) + kAlign - 1) /
                                         kAlign * kAlign);
    auto* full = reinterpret_cast<std::uint64_t*>(reinterpret_cast<unsigned char*>(smem) +
                                                  kRingBytes);  // full[s]: B of stage s has landed
    if (threadIdx.x == 0) {
      for (int s = 0; s < Stages; ++s) ptx::mbarrier_init(&full[s], 1);
      ptx::fence_mbarrier_init();
    }
    __syncthreads();
#pragma unroll
    for (int mi = 0; mi < kMI; ++mi) {
#pragma unroll
      for (int ni = 0; ni < kNI; ++ni) {
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;
      }
    }
    const auto load_stage = [&](int stage, int kt) {
      Elem* sa = smem + stage * kStageElems;
      const int k0 = kt * kBK;
      Tiles::load_a(sa, a, a_plane_stride, a_cols, k0, b);
      if (threadIdx.x == 0) {
        ptx::mbarrier_arrive_expect_tx(&full[stage], kBStageBytes);
#pragma unroll
        for (int box = 0; box < BN / kBBoxRows; ++box) {  // 128-row boxes keep the swizzled layout
          ptx::tma_load_2d(sa + kAStageElems + box * kBBoxRows * kBK, b_map.map, k0,
                           b_map.row + box * kBBoxRows, &full[stage]);
        }
      }
    };

#pragma unroll
    for (int s = 0; s < Stages - 1; ++s) {
      if (s < k_tiles) load_stage(s, s);
      ptx::cp_async_commit();
    }

    const int warpgroup = this_warpgroup();
    // row tiles: this warpgroup's 64 rows of A; swapped tiles: all of A, and its m64 weight halves
    const Elem* a_base = smem + (Swapped ? 0 : warpgroup * 64 * kBK);
    const int b_half = Swapped ? warpgroup * kMI : 0;
    for (int kt = 0; kt < k_tiles; ++kt) {
      ptx::cp_async_wait<Stages - 2>();  // A of k-tile kt has landed (this thread's copies)
      ptx::fence_proxy_async_shared();   // ... and is visible to the MMAs
      ptx::mbarrier_wait(&full[kt % Stages], (kt / Stages) & 1);  // ... and so has B
      __syncthreads();  // everyone's copies; every MMA of kt - 1 has finished
      // Refill the stage computed in the previous iteration.
      const int next = kt + Stages - 1;
      if (next < k_tiles) load_stage(next % Stages, next);
      ptx::cp_async_commit();

      const Elem* sa = a_base + (kt % Stages) * kStageElems;
      const Elem* sb = smem + (kt % Stages) * kStageElems + kAStageElems;
      // Each BK step accumulates from zero in the tensor cores (their accumulation truncates) and
      // joins the running sum with round-to-nearest FADDs: see the sm_80 mainloop. The group is
      // waited for at once: its registers are read next, and the loads of the next Stages - 1
      // k-tiles are already in flight, so the pause costs tensor time, not memory time.
      float part[kMI][kNI][4];
      fence_parts(part);
      ptx::wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kBK / 16; ++ks) {
        const std::uint64_t desc_b = ptx::smem_desc_sw128(sb + ks * 16);
#pragma unroll
        for (int p = 0; p < APlanes; ++p) {
          const std::uint64_t desc_a = ptx::smem_desc_sw128(sa + p * BM * kBK + ks * 16);
          if constexpr (Swapped) {
#pragma unroll
            for (int mi = 0; mi < kMI; ++mi) {  // weight rows [64·half, +64) against the tokens
              const std::uint64_t desc_w =
                  ptx::smem_desc_sw128(sb + (b_half + mi) * 64 * kBK + ks * 16);
              if constexpr (BM == 32) {
                ptx::SM90_64x32x16_F32<Elem>::mma(part[mi], desc_w, desc_a, ks > 0 || p > 0);
              } else {
                ptx::SM90_64x96x16_F32<Elem>::mma(part[mi], desc_w, desc_a, ks > 0 || p > 0);
              }
            }
          } else {
            ptx::SM90_64x128x16_F32<Elem>::mma(part[0], desc_a, desc_b, ks > 0 || p > 0);
          }
        }
      }
      ptx::wgmma_commit();
      fence_parts(part);
      ptx::wgmma_wait<0>();
      fence_parts(part);
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi) {
#pragma unroll
        for (int ni = 0; ni < kNI; ++ni) {
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[mi][ni][r] += part[mi][ni][r];
        }
      }
    }
    ptx::cp_async_wait<0>();
  }

  // Row tiles: acc[0][ni][r] is tile row acc_row(0, r), column acc_col(ni, r).
  __device__ __forceinline__ static int acc_row(int /*mi*/, int r) {
    static_assert(!Swapped, "swapped tiles: swapped_row / swapped_col");
    return this_warpgroup() * 64 + m64_row(r);
  }
  __device__ __forceinline__ static int acc_col(int ni, int r) { return n8_col(ni, r); }
  // Swapped tiles: acc[mi][ni][r] is token row swapped_row(ni, r) of the tile, weight row (output
  // column) swapped_col(mi, r) of the block's BN. r = 0, 1 and r = 2, 3 are the same two tokens at
  // columns c and c + 8.
  __device__ __forceinline__ static int swapped_row(int ni, int r) { return n8_col(ni, r); }
  __device__ __forceinline__ static int swapped_col(int mi, int r) {
    return (this_warpgroup() * kMI + mi) * 64 + m64_row(r);
  }

 private:
  template <int MI, int NI>
  __device__ __forceinline__ static void fence_parts(float (&part)[MI][NI][4]) {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) ptx::fence_registers(part[mi]);
  }
  // The thread's warpgroup: a constant 0 in one-warpgroup blocks, so that the addresses and
  // descriptors built from it fold (the narrow k-loop is 14 SASS instructions shorter).
  __device__ __forceinline__ static int this_warpgroup() {
    return kWarpGroups == 1 ? 0 : static_cast<int>(threadIdx.x) / 128;
  }
  // Where an m64nN accumulator element sits: row of the 64, column of the N.
  __device__ __forceinline__ static int m64_row(int r) {
    const int warp = static_cast<int>(threadIdx.x) / 32 % 4,
              lane = static_cast<int>(threadIdx.x) % 32;
    return warp * 16 + (lane >> 2) + (r >= 2 ? 8 : 0);
  }
  __device__ __forceinline__ static int n8_col(int ni, int r) {
    const int lane = static_cast<int>(threadIdx.x) % 32;
    return ni * 8 + (lane & 3) * 2 + (r & 1);
  }
};

}  // namespace fusedmoe::cuda::sm90
