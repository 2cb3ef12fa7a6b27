// The sm_80 mainloop shared by both expert GEMMs: C[BM, BN] = Σ_planes A_plane[BM, K] · B[BN, K]ᵀ
// with fp32 accumulators in registers.
//
// Operands come through a kStages-deep cp.async ring of swizzled tiles (gemm/swizzled_tiles.cuh:
// gathered A rows, zero-fill for absent rows and for columns past K), read by ldmatrix.
// A_PLANES = 2 sums two A planes against the same B (the f32 activation stored as hi + lo halves,
// so the second GEMM keeps ~16 mantissa bits instead of 8). The K order of the accumulation is
// fixed (k16 steps in increasing order, planes in order inside a step; each BK step summed apart,
// then added to the running sum) and does not depend on BM, BN or the warp layout: a row's result
// is the same whichever tile configuration computed it.
#pragma once

#include <cstdint>

#include "cuda/kernels/gemm/map_rows.cuh"
#include "cuda/kernels/gemm/swizzled_tiles.cuh"
#include "cuda/kernels/ptx/sm80.cuh"

namespace fusedmoe::cuda::sm80 {

template <class Elem, int BM, int BN, int WarpsM, int WarpsN, int Stages, int APlanes>
struct GroupedMainloop {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  static constexpr bool kCompiled = true;  // this compilation pass has the instructions
#else
  static constexpr bool kCompiled = false;
#endif
  static constexpr bool kSwapped = false;  // rows are the MMAs' M (sm90: either form)
  static constexpr int kBM = BM, kBN = BN;
  static constexpr int kThreads = WarpsM * WarpsN * 32;
  using Tiles = SwizzledTiles<Elem, BM, BN, kThreads, APlanes>;
  using ARows = typename Tiles::ARows;
  static constexpr int kBK = Tiles::kBK;
  static constexpr int kWarpM = BM / WarpsM;  // rows per warp
  static constexpr int kWarpN = BN / WarpsN;  // columns per warp
  static constexpr int kMI = kWarpM / 16;     // m16 fragments per warp
  static constexpr int kNI = kWarpN / 8;      // n8 fragments per warp
  static constexpr int kAStageElems = APlanes * BM * kBK;
  static constexpr int kStageElems = kAStageElems + BN * kBK;
  static constexpr int kSmemBytes = Stages * kStageElems * static_cast<int>(sizeof(Elem));

  static_assert(BM % (16 * WarpsM) == 0 && BN % (16 * WarpsN) == 0, "warp tiles of m16 x n16");
  static_assert(Stages >= 2, "at least double buffering");
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");

  // acc[mi][ni][4]: the m16n8 accumulator fragments of this warp.
  // a_plane_stride: elements from plane 0 to plane 1. a_cols: columns of A that exist (a multiple
  // of 8); columns past it load as zeros. b: the first of this block's BN rows; b_ld: elements
  // between B rows (a multiple of 64); k_tiles: BK-wide steps over K. valid_rows: rows of the tile
  // that exist; a warp whose rows are all past them skips its MMAs (its accumulators stay 0), so
  // a tile an expert fills only partly leaves tensor time to the other blocks on the SM. (Skipping
  // per m16 fragment inside a warp was measured slower: it breaks the unrolled MMA schedule.)
  __device__ __forceinline__ static void run(float (&acc)[kMI][kNI][4], void* smem_raw,
                                             const ARows& a, std::int64_t a_plane_stride,
                                             int a_cols, const Elem* b, std::int64_t b_ld,
                                             int k_tiles, int valid_rows, MapRows /*b_map*/ = {}) {
    Elem* smem = static_cast<Elem*>(smem_raw);
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
      Tiles::load_a(sa, a, a_plane_stride, a_cols, kt * kBK, b);
      Tiles::load_b(sa + kAStageElems, b, b_ld, kt * kBK);
    };

#pragma unroll
    for (int s = 0; s < Stages - 1; ++s) {
      if (s < k_tiles) load_stage(s, s);
      ptx::cp_async_commit();
    }

    const int lane = static_cast<int>(threadIdx.x) % 32;
    const int warp = static_cast<int>(threadIdx.x) / 32;
    const int warp_m = warp / WarpsN, warp_n = warp % WarpsN;
    for (int kt = 0; kt < k_tiles; ++kt) {
      ptx::cp_async_wait<Stages - 2>();
      __syncthreads();
      // Refill the stage computed in the previous iteration (every thread is past it now).
      const int next = kt + Stages - 1;
      if (next < k_tiles) load_stage(next % Stages, next);
      ptx::cp_async_commit();

      const Elem* sa = smem + (kt % Stages) * kStageElems;
      const Elem* sb = sa + kAStageElems;
      if (warp_m * kWarpM >= valid_rows) continue;  // this warp's rows are all padding
      // The tensor cores add each MMA's products to the accumulator with truncation, and over a
      // long K that error grows with the running sum (measured: 1e-4 relative at K = 14336, which
      // fails CONTRACT.md's per-element bound where outputs cancel). So each BK step accumulates
      // from zero in the tensor cores and is then added to `acc` with ordinary round-to-nearest
      // FADDs: the long sum is IEEE fp32, in a fixed order.
      float part[kMI][kNI][4];
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi) {
#pragma unroll
        for (int ni = 0; ni < kNI; ++ni) {
#pragma unroll
          for (int r = 0; r < 4; ++r) part[mi][ni][r] = 0.0f;
        }
      }
#pragma unroll
      for (int ks = 0; ks < kBK / 16; ++ks) {
        std::uint32_t bf[kNI][2];
#pragma unroll
        for (int nj = 0; nj < kNI; nj += 2) {
          const int row = warp_n * kWarpN + nj * 8 + ((lane >> 4) << 3) + (lane & 7);
          const int chunk = ks * 2 + ((lane >> 3) & 1);
          std::uint32_t r[4];
          ptx::ldmatrix_x4_b16(r, sb + Tiles::swizzle(row, chunk));
          bf[nj][0] = r[0];
          bf[nj][1] = r[1];
          bf[nj + 1][0] = r[2];
          bf[nj + 1][1] = r[3];
        }
#pragma unroll
        for (int p = 0; p < APlanes; ++p) {
#pragma unroll
          for (int mi = 0; mi < kMI; ++mi) {
            const int row = warp_m * kWarpM + mi * 16 + (lane & 15);
            const int chunk = ks * 2 + (lane >> 4);
            std::uint32_t af[4];
            ptx::ldmatrix_x4_b16(af, sa + p * BM * kBK + Tiles::swizzle(row, chunk));
#pragma unroll
            for (int ni = 0; ni < kNI; ++ni)
              ptx::SM80_16x8x16_F32<Elem>::mma(part[mi][ni], af, bf[ni]);
          }
        }
      }
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

  // The tile row and column of accumulator element r of fragment (mi, ni) for this thread.
  __device__ __forceinline__ static int acc_row(int mi, int r) {
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    return (warp / WarpsN) * kWarpM + mi * 16 + (lane >> 2) + (r >= 2 ? 8 : 0);
  }
  __device__ __forceinline__ static int acc_col(int ni, int r) {
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    return (warp % WarpsN) * kWarpN + ni * 8 + (lane & 3) * 2 + (r & 1);
  }
};

}  // namespace fusedmoe::cuda::sm80
