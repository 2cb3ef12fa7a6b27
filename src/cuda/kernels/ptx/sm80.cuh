// Instruction wrappers for sm_80 and later: cp.async, ldmatrix and the m16n8k16 tensor-core MMA.
// Each wrapper is one PTX instruction; names carry shape and types. On an architecture without
// the instruction the body traps instead of computing something wrong.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fusedmoe::cuda::ptx {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define FUSEDMOE_SM80_OR_TRAP() __trap()
#else
#define FUSEDMOE_SM80_OR_TRAP() (void)0
#endif

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; `src_bytes` = 0 writes zeros and reads nothing.
__device__ __forceinline__ void cp_async_16B_zfill(void* smem, const void* gmem, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(src_bytes));
#else
  FUSEDMOE_SM80_OR_TRAP();
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// Four 8x8 b16 matrices from shared memory; lane i gives the address of row i % 8 of matrix i / 8.
__device__ __forceinline__ void ldmatrix_x4_b16(std::uint32_t (&r)[4], const void* smem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
#else
  FUSEDMOE_SM80_OR_TRAP();
#endif
}

// D = A·B + D, A 16x16 row-major, B 16x8 column-major, fp32 accumulators.
__device__ __forceinline__ void mma_16x8x16_f32_bf16(float (&d)[4], const std::uint32_t (&a)[4],
                                                     const std::uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  FUSEDMOE_SM80_OR_TRAP();
#endif
}

__device__ __forceinline__ void mma_16x8x16_f32_f16(float (&d)[4], const std::uint32_t (&a)[4],
                                                    const std::uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  FUSEDMOE_SM80_OR_TRAP();
#endif
}

// The MMA for an element type: SM80_16x8x16_F32<Elem>::mma(d, a, b).
template <class Elem>
struct SM80_16x8x16_F32;
template <>
struct SM80_16x8x16_F32<__nv_bfloat16> {
  __device__ __forceinline__ static void mma(float (&d)[4], const std::uint32_t (&a)[4],
                                             const std::uint32_t (&b)[2]) {
    mma_16x8x16_f32_bf16(d, a, b);
  }
};
template <>
struct SM80_16x8x16_F32<__half> {
  __device__ __forceinline__ static void mma(float (&d)[4], const std::uint32_t (&a)[4],
                                             const std::uint32_t (&b)[2]) {
    mma_16x8x16_f32_f16(d, a, b);
  }
};

}  // namespace fusedmoe::cuda::ptx
