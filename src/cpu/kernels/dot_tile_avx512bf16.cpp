// dot_tile for AVX-512 with BF16 (compiled with the avx512 flags plus -mavx512bf16). For bf16
// a against bf16 b, vdpbf16ps multiplies 32 bf16 pairs per instruction straight from the loaded
// bytes (no widening) into one 16-lane fp32 accumulator per (a row, b row) pair: lane l gets
// a[2l] b[2l] and a[2l+1] b[2l+1] per step. Like all vdpbf16ps it rounds to nearest even and
// treats denormal inputs and outputs as zero whatever MXCSR says. The tail (k % 32) is a
// zero-masked load, so every tile shape sees the same chunks. Micro-tiles: 3 a rows x 8 b rows
// for m >= 2 (24 accumulators; the best of 4x4, 4x6, 6x4, 3x8 measured on Zen 4); one b row at
// a time for m == 1. Every other dtype pair goes to the avx512 kernel: rounding an f32 or f16
// operand to bf16 for vdpbf16ps would lose precision.
//
// dot_tile_impl.hpp comes first: it includes <immintrin.h> with a GCC 12 warning silenced.
#include "cpu/kernels/dot_tile_impl.hpp"

#include <cstdint>

#include "cpu/kernels/dot_tile_isa.hpp"

namespace fusedmoe::cpu::avx512bf16 {
namespace {

struct StepBf16Dot {
  struct Load {
    using Elem = std::uint16_t;
    static __m512bh load(const Elem* p) {
      return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
    }
    static __m512bh load_tail(const Elem* p, int count) {
      return reinterpret_cast<__m512bh>(
          _mm512_maskz_loadu_epi16(static_cast<__mmask32>((1ull << count) - 1u), p));
    }
  };
  using LoadA = Load;
  using LoadB = Load;
  using Chunk = __m512bh;  // (32) bf16 as loaded
  using Acc = __m512;      // (16) fp32, lane l holding elements h with h % 32 in {2l, 2l + 1}
  static constexpr int kStep = 32;
  static constexpr int kRows = 3;
  static constexpr int kCols = 8;
  static constexpr int kChains = 1;
  static constexpr int kDecodeCols = 1;

  static Acc zero() { return _mm512_setzero_ps(); }
  static Acc madd(Chunk a, Chunk b, Acc acc) { return _mm512_dpbf16_ps(acc, a, b); }
  static Acc add(Acc x, Acc y) { return _mm512_add_ps(x, y); }
  static float reduce(Acc acc) { return detail::reduce_add_fixed(acc); }
  static void reduce4(const Acc* x, float* out) { detail::reduce4_add_fixed(x, out); }
};
static_assert(detail::fits_registers<StepBf16Dot>(1, 32));

}  // namespace
}  // namespace fusedmoe::cpu::avx512bf16

namespace fusedmoe::cpu::detail {

void dot_tile_avx512bf16(DType a_dtype, const void* const* a_rows, int m, DType b_dtype,
                         const void* b, std::int64_t ldb, int n, std::int64_t k, float* c,
                         std::int64_t ldc) {
  if (a_dtype != DType::bf16 || b_dtype != DType::bf16) {
    return dot_tile_avx512(a_dtype, a_rows, m, b_dtype, b, ldb, n, k, c, ldc);
  }
  dot_tile_rows<avx512bf16::StepBf16Dot>(a_rows, m, b, ldb, n, k, c, ldc);
}

}  // namespace fusedmoe::cpu::detail
