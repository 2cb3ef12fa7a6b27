// dot_tile for AVX-512 (F, BW, VL; compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mfma -mf16c). One 16-lane fp32 accumulator per (a row, b row) pair, fed with FMAs, 16
// elements per step, each operand widened to fp32 on load: f32 as is, f16 by vcvtph2ps, bf16
// by zero-extension and a 16-bit shift. Any dtype of a meets any dtype of b this way.
// bf16 against bf16 takes 32 elements per step instead: one 64-byte load gives the even
// elements (shift left by 16) and the odd elements (mask the high halves) as two fp32 vectors
// with no lane crossing; the pair takes the even FMA, then the odd one (the element grouping
// vdpbf16ps uses).
// The tail (k % step) goes through zero-masked loads that never touch memory past the row, so
// it is the same chunk arithmetic for every tile shape. Micro-tiles: 4 a rows x 4 b rows for
// m >= 2 (16 accumulators); for m == 1 one b row at a time, streaming. No allocation; rows may
// be unaligned. Rows 4 KiB apart (k = 2048 bf16) alias in L1 sets; padding them helps a little.
//
// dot_tile_impl.hpp comes first: it includes <immintrin.h> with a GCC 12 warning silenced.
#include "cpu/kernels/dot_tile_impl.hpp"

#include <cstdint>

#include "cpu/kernels/dot_tile_isa.hpp"

namespace fusedmoe::cpu::avx512 {
namespace {

__mmask16 first16(int count) { return static_cast<__mmask16>((1u << count) - 1u); }

struct LoadF32 {
  using Elem = float;
  static __m512 load(const Elem* p) { return _mm512_loadu_ps(p); }
  static __m512 load_tail(const Elem* p, int count) {
    return _mm512_maskz_loadu_ps(first16(count), p);
  }
};

struct LoadF16 {
  using Elem = std::uint16_t;
  static __m512 load(const Elem* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load_tail(const Elem* p, int count) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first16(count), p));
  }
};

struct LoadBf16 {
  using Elem = std::uint16_t;
  static __m512 widen(__m256i x) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x), 16));
  }
  static __m512 load(const Elem* p) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load_tail(const Elem* p, int count) {
    return widen(_mm256_maskz_loadu_epi16(first16(count), p));
  }
};

// Any (a, b) dtype pair, both widened to fp32.
template <class A, class B>
struct StepFma {
  using LoadA = A;
  using LoadB = B;
  using Chunk = __m512;  // (16) fp32
  using Acc = __m512;    // (16) fp32 partial sums, lane l holding elements h with h % 16 == l
  static constexpr int kStep = 16;
  static constexpr int kRows = 4;
  static constexpr int kCols = 4;
  static constexpr int kChains = 1;
  static constexpr int kDecodeCols = 1;

  static Acc zero() { return _mm512_setzero_ps(); }
  static Acc madd(Chunk a, Chunk b, Acc acc) { return _mm512_fmadd_ps(a, b, acc); }
  static Acc add(Acc x, Acc y) { return _mm512_add_ps(x, y); }
  static float reduce(Acc acc) { return detail::reduce_add_fixed(acc); }
  static void reduce4(const Acc* x, float* out) { detail::reduce4_add_fixed(x, out); }
};
static_assert(detail::fits_registers<StepFma<LoadF32, LoadF32>>(1, 32));

// bf16 against bf16, 32 elements per step as even/odd fp32 halves.
struct StepBf16Pairs {
  struct Chunk {
    __m512 even;  // (16) fp32 of elements 0, 2, ..., 30
    __m512 odd;   // (16) fp32 of elements 1, 3, ..., 31
  };
  struct Load {
    using Elem = std::uint16_t;
    static Chunk split(__m512i x) {
      return {_mm512_castsi512_ps(_mm512_slli_epi32(x, 16)),
              _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(-65536)))};
    }
    static Chunk load(const Elem* p) { return split(_mm512_loadu_si512(p)); }
    static Chunk load_tail(const Elem* p, int count) {
      return split(_mm512_maskz_loadu_epi16(static_cast<__mmask32>((1ull << count) - 1u), p));
    }
  };
  using LoadA = Load;
  using LoadB = Load;
  using Acc = __m512;
  static constexpr int kStep = 32;
  static constexpr int kRows = 4;
  static constexpr int kCols = 4;
  static constexpr int kChains = 1;
  static constexpr int kDecodeCols = 1;

  static Acc zero() { return _mm512_setzero_ps(); }
  static Acc madd(const Chunk& a, const Chunk& b, Acc acc) {
    return _mm512_fmadd_ps(a.odd, b.odd, _mm512_fmadd_ps(a.even, b.even, acc));
  }
  static Acc add(Acc x, Acc y) { return _mm512_add_ps(x, y); }
  static float reduce(Acc acc) { return detail::reduce_add_fixed(acc); }
  static void reduce4(const Acc* x, float* out) { detail::reduce4_add_fixed(x, out); }
};
static_assert(detail::fits_registers<StepBf16Pairs>(2, 32));

}  // namespace
}  // namespace fusedmoe::cpu::avx512

namespace fusedmoe::cpu::detail {

void dot_tile_avx512(DType a_dtype, const void* const* a_rows, int m, DType b_dtype, const void* b,
                     std::int64_t ldb, int n, std::int64_t k, float* c, std::int64_t ldc) {
  if (a_dtype == DType::bf16 && b_dtype == DType::bf16) {
    return dot_tile_rows<avx512::StepBf16Pairs>(a_rows, m, b, ldb, n, k, c, ldc);
  }
  dot_tile_any<avx512::StepFma, avx512::LoadF32, avx512::LoadF16, avx512::LoadBf16>(
      a_dtype, a_rows, m, b_dtype, b, ldb, n, k, c, ldc);
}

}  // namespace fusedmoe::cpu::detail
