// dot_tile for AVX2 (compiled with -mavx2 -mfma -mf16c). Two 8-lane fp32 accumulators per
// (a row, b row) pair, one for the even and one for the odd chunks, so that a single b row
// (decode) keeps two FMA chains in flight; they are added before the reduction. Each step
// widens 8 elements of each operand to fp32 (f32 as is, f16 by vcvtph2ps, bf16 by
// zero-extension and a 16-bit shift), so any dtype of a meets any dtype of b. bf16 against
// bf16 takes 16 elements per step instead: one 32-byte load gives the even elements (shift
// left by 16) and the odd elements (mask the high halves); the even FMA goes first.
// AVX2 has no 16-bit masked load, so the tail (k % step) of every row is copied into a zeroed
// stack chunk and goes through the same step as the body: every tile shape sees the same
// chunks. With 16 ymm registers the micro-tiles for m >= 2 are 2 x 3, and 1 x 4 for bf16
// pairs (whose chunks take two registers); for m == 1 one b row at a time, streaming. No
// allocation; rows may be unaligned.
//
// dot_tile_impl.hpp comes first: it includes <immintrin.h> with a GCC 12 warning silenced.
#include "cpu/kernels/dot_tile_impl.hpp"

#include <cstdint>

#include "cpu/kernels/dot_tile_isa.hpp"

namespace fusedmoe::cpu::avx2 {
namespace {

// The first `count` elements of p, then zeros, as one step's worth of elements.
template <class Elem, int kStep>
struct ZeroPadded {
  alignas(32) Elem v[kStep];
  ZeroPadded(const Elem* p, int count) {
    for (int l = 0; l < kStep; ++l) v[l] = l < count ? p[l] : Elem{0};
  }
};

struct LoadF32 {
  using Elem = float;
  static __m256 load(const Elem* p) { return _mm256_loadu_ps(p); }
  static __m256 load_tail(const Elem* p, int count) {
    return load(ZeroPadded<Elem, 8>(p, count).v);
  }
};

struct LoadF16 {
  using Elem = std::uint16_t;
  static __m256 load(const Elem* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static __m256 load_tail(const Elem* p, int count) {
    return load(ZeroPadded<Elem, 8>(p, count).v);
  }
};

struct LoadBf16 {
  using Elem = std::uint16_t;
  static __m256 load(const Elem* p) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(x), 16));
  }
  static __m256 load_tail(const Elem* p, int count) {
    return load(ZeroPadded<Elem, 8>(p, count).v);
  }
};

// Any (a, b) dtype pair, both widened to fp32.
template <class A, class B>
struct StepFma {
  using LoadA = A;
  using LoadB = B;
  using Chunk = __m256;  // (8) fp32
  using Acc = __m256;    // (8) fp32 partial sums
  static constexpr int kStep = 8;
  static constexpr int kRows = 2;
  static constexpr int kCols = 3;
  static constexpr int kChains = 2;
  static constexpr int kDecodeCols = 1;

  static Acc zero() { return _mm256_setzero_ps(); }
  static Acc madd(Chunk a, Chunk b, Acc acc) { return _mm256_fmadd_ps(a, b, acc); }
  static Acc add(Acc x, Acc y) { return _mm256_add_ps(x, y); }
  static float reduce(Acc acc) { return detail::reduce_add_fixed(acc); }
  static void reduce4(const Acc* x, float* out) { detail::reduce4_add_fixed(x, out); }
};
static_assert(detail::fits_registers<StepFma<LoadF32, LoadF32>>(1, 16));

// bf16 against bf16, 16 elements per step as even/odd fp32 halves.
struct StepBf16Pairs {
  struct Chunk {
    __m256 even;  // (8) fp32 of elements 0, 2, ..., 14
    __m256 odd;   // (8) fp32 of elements 1, 3, ..., 15
  };
  struct Load {
    using Elem = std::uint16_t;
    static Chunk load(const Elem* p) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return {_mm256_castsi256_ps(_mm256_slli_epi32(x, 16)),
              _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(-65536)))};
    }
    static Chunk load_tail(const Elem* p, int count) {
      return load(ZeroPadded<Elem, 16>(p, count).v);
    }
  };
  using LoadA = Load;
  using LoadB = Load;
  using Acc = __m256;
  static constexpr int kStep = 16;
  static constexpr int kRows = 1;
  static constexpr int kCols = 4;
  static constexpr int kChains = 2;
  static constexpr int kDecodeCols = 1;

  static Acc zero() { return _mm256_setzero_ps(); }
  static Acc madd(const Chunk& a, const Chunk& b, Acc acc) {
    return _mm256_fmadd_ps(a.odd, b.odd, _mm256_fmadd_ps(a.even, b.even, acc));
  }
  static Acc add(Acc x, Acc y) { return _mm256_add_ps(x, y); }
  static float reduce(Acc acc) { return detail::reduce_add_fixed(acc); }
  static void reduce4(const Acc* x, float* out) { detail::reduce4_add_fixed(x, out); }
};
static_assert(detail::fits_registers<StepBf16Pairs>(2, 16));

}  // namespace
}  // namespace fusedmoe::cpu::avx2

namespace fusedmoe::cpu::detail {

void dot_tile_avx2(DType a_dtype, const void* const* a_rows, int m, DType b_dtype, const void* b,
                   std::int64_t ldb, int n, std::int64_t k, float* c, std::int64_t ldc) {
  if (a_dtype == DType::bf16 && b_dtype == DType::bf16) {
    return dot_tile_rows<avx2::StepBf16Pairs>(a_rows, m, b, ldb, n, k, c, ldc);
  }
  dot_tile_any<avx2::StepFma, avx2::LoadF32, avx2::LoadF16, avx2::LoadBf16>(
      a_dtype, a_rows, m, b_dtype, b, ldb, n, k, c, ldc);
}

}  // namespace fusedmoe::cpu::detail
