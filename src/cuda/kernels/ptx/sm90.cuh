// Instruction wrappers for sm_90a: the warpgroup MMA (wgmma), its fences, the shared-memory matrix
// descriptor, the proxy fence that makes ordinary shared-memory writes visible to it, and the
// mbarriers and bulk tensor copy (TMA) that load the weights. Each
// wrapper is one PTX instruction. Compiled for anything but sm_90a, the bodies trap: the launcher
// only picks sm_90a kernels on a device that runs that machine code.
#pragma once

#include <cuda.h>  // CUtensorMap (a plain struct: no driver calls here)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/kernels/ptx/sm80.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FUSEDMOE_WGMMA 1
#else
#define FUSEDMOE_WGMMA 0
#endif

namespace fusedmoe::cuda::ptx {

// Shared memory written by ordinary stores or cp.async, read next by wgmma (the async proxy):
// each writing thread fences before the barrier that publishes the data.
__device__ __forceinline__ void fence_proxy_async_shared() {
#if FUSEDMOE_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Orders this warpgroup's register and shared-memory accesses before the wgmmas that follow.
__device__ __forceinline__ void wgmma_fence() {
#if FUSEDMOE_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void wgmma_commit() {
#if FUSEDMOE_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// Waits until at most N committed wgmma groups of this warpgroup are still running.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if FUSEDMOE_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Pins accumulator registers in place: reads and writes of `r` are not moved across this point,
// so the code around a wgmma group touches its accumulators only before it starts or after the
// wait that ends it (otherwise ptxas inserts waits of its own and serialises the MMAs).
template <int N>
__device__ __forceinline__ void fence_registers(float (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+f"(r[i][j])::"memory");
  }
}

// Descriptor of a K-major operand tile in shared memory laid out as 128-byte rows (64 16-bit
// elements of K) whose 16-byte chunks are XOR-swizzled by (row % 8), 8-row groups 1024 bytes apart:
// the 128-byte swizzle mode. `tile` must sit at a 1024-byte boundary plus a multiple of 32 bytes
// along K (the k16 step inside the row). Fields: start address >> 4 (bits 0-13), leading byte
// offset >> 4 (16-29; unused by this mode, 1 by convention), stride byte offset >> 4 (32-45: the
// 1024 bytes between 8-row groups), swizzle mode 1 = 128 B (bits 62-63).
__device__ __forceinline__ std::uint64_t smem_desc_sw128(const void* tile) {
  const std::uint64_t addr = smem_addr(tile);
  return ((addr & 0x3FFFF) >> 4) | (std::uint64_t{1} << 16) | (std::uint64_t{1024 >> 4} << 32) |
         (std::uint64_t{1} << 62);
}

// D[64 x 128] (+)= A[64 x 16] · B[128 x 16]ᵀ for the warpgroup, both operands K-major in shared
// memory, fp32 accumulators. d[j][r] of a thread holds the same element as the m16n8 fragment j
// of an mma.sync C tile for warp (thread / 32) % 4's 16 rows: row 16·warp + lane / 4 (+8 for
// r >= 2), column 8·j + 2·(lane % 4) + r % 2. accumulate = false: D = A·B.
#define FUSEDMOE_WGMMA_M64N128K16(TYPE)                                                           \
  asm volatile(                                                                                   \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE                                \
      " {"                                                                                        \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                    \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "          \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "          \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "         \
      "%64, %65, p, 1, 1, 0, 0;\n}\n"                                                             \
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), \
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), \
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), \
        "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), \
        "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]),               \
        "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]),           \
        "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]),           \
        "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),           \
        "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]),           \
        "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])                                            \
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)))

template <class Elem>
struct SM90_64x128x16_F32 {
  static_assert(std::is_same_v<Elem, __nv_bfloat16> || std::is_same_v<Elem, __half>);
  __device__ __forceinline__ static void mma(float (&d)[16][4], std::uint64_t desc_a,
                                             std::uint64_t desc_b, bool accumulate) {
#if FUSEDMOE_WGMMA
    if constexpr (std::is_same_v<Elem, __half>) {
      FUSEDMOE_WGMMA_M64N128K16("f16");
    } else {
      FUSEDMOE_WGMMA_M64N128K16("bf16");
    }
#else
    __trap();
#endif
  }
};

#undef FUSEDMOE_WGMMA_M64N128K16

// D[64 x 32] (+)= A[64 x 16] · B[32 x 16]ᵀ: the narrow tiles' MMA (gemm/sm90/grouped_mainloop.cuh),
// with the weights as A and up to 32 token rows as B. Same operands and fragment layout as above,
// 4 fragments of 8 columns.
#define FUSEDMOE_WGMMA_M64N32K16(TYPE)                                                            \
  asm volatile(                                                                                   \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"                                                \
      "wgmma.mma_async.sync.aligned.m64n32k16.f32." TYPE "." TYPE                                 \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "                 \
      "%16, %17, p, 1, 1, 0, 0;\n}\n"                                                             \
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), \
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])                                \
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)))

template <class Elem>
struct SM90_64x32x16_F32 {
  static_assert(std::is_same_v<Elem, __nv_bfloat16> || std::is_same_v<Elem, __half>);
  __device__ __forceinline__ static void mma(float (&d)[4][4], std::uint64_t desc_a,
                                             std::uint64_t desc_b, bool accumulate) {
#if FUSEDMOE_WGMMA
    if constexpr (std::is_same_v<Elem, __half>) {
      FUSEDMOE_WGMMA_M64N32K16("f16");
    } else {
      FUSEDMOE_WGMMA_M64N32K16("bf16");
    }
#else
    __trap();
#endif
  }
};

#undef FUSEDMOE_WGMMA_M64N32K16

// D[64 x 96] (+)= A[64 x 16] · B[96 x 16]ᵀ: the 96-row swapped tiles' MMA (the weights as A, up to
// 96 token rows as B). Same operands and fragment layout as above, 12 fragments of 8 columns.
#define FUSEDMOE_WGMMA_M64N96K16(TYPE)                                                             \
  asm volatile(                                                                                    \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %50, 0;\n"                                                 \
      "wgmma.mma_async.sync.aligned.m64n96k16.f32." TYPE "." TYPE                                  \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "    \
      "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, " \
      "%37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, "                                   \
      "%48, %49, p, 1, 1, 0, 0;\n}\n"                                                              \
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),  \
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),  \
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),  \
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),  \
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),  \
        "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),  \
        "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]),                \
        "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]),            \
        "+f"(d[11][2]), "+f"(d[11][3])                                                             \
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)))

template <class Elem>
struct SM90_64x96x16_F32 {
  static_assert(std::is_same_v<Elem, __nv_bfloat16> || std::is_same_v<Elem, __half>);
  __device__ __forceinline__ static void mma(float (&d)[12][4], std::uint64_t desc_a,
                                             std::uint64_t desc_b, bool accumulate) {
#if FUSEDMOE_WGMMA
    if constexpr (std::is_same_v<Elem, __half>) {
      FUSEDMOE_WGMMA_M64N96K16("f16");
    } else {
      FUSEDMOE_WGMMA_M64N96K16("bf16");
    }
#else
    __trap();
#endif
  }
};

#undef FUSEDMOE_WGMMA_M64N96K16

// ---- mbarriers and the bulk tensor copy (TMA) -------------------------------------------------

// An mbarrier in shared memory that completes a phase after `count` arrivals (and the bytes
// announced with expect_tx).
__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, int count) {
#if FUSEDMOE_WGMMA
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
#else
  __trap();
#endif
}

// Makes initialised mbarriers visible to the copy engine (before the barrier that publishes them).
__device__ __forceinline__ void fence_mbarrier_init() {
#if FUSEDMOE_WGMMA
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#else
  __trap();
#endif
}

// One arrival that also announces `bytes` the phase waits for (the copies' complete_tx).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
#if FUSEDMOE_WGMMA
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}

// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, std::uint32_t parity) {
#if FUSEDMOE_WGMMA
  asm volatile(
      "{\n.reg .pred done;\n"
      "wait:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait;\n}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
#else
  __trap();
#endif
}

// Copies the box at (c0, c1) (elements along the inner dimension, rows) of a 2-D tensor map into
// shared memory, laid out and swizzled as the map says; completes the box's bytes on `bar` (the
// caller announced them with mbarrier_arrive_expect_tx). `map` is the
// address of a __grid_constant__ kernel parameter (or const/global memory).
__device__ __forceinline__ void tma_load_2d(void* smem, const CUtensorMap* map, int c0, int c1,
                                            std::uint64_t* bar) {
#if FUSEDMOE_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
      "%3}], [%4];\n" ::"r"(smem_addr(smem)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
#else
  __trap();
#endif
}

}  // namespace fusedmoe::cuda::ptx
