// The ISA-neutral part of dot_tile: a register-blocked micro-tile templated on a step policy,
// the driver that covers an m x n tile with micro-tiles, and the switch from the (a, b) dtype
// pair to a policy. Each ISA translation unit supplies policies (how to load kStep elements of
// a and of b into registers, multiply-accumulate them, and reduce an accumulator to one float)
// and instantiates dot_tile_rows with them.
//
// Batch invariance: every (a row, b row) pair owns one accumulator (or two, see micro_tile) that
// sees the chunks [0, kStep), [kStep, 2 kStep), ... in order, then one zero-padded tail chunk,
// then a fixed reduction. The micro-tile shape only decides which pairs share loaded registers,
// never the arithmetic a pair sees, so the value of c[i][j] is the same for every m, n and
// position.
//
// Everything here has internal linkage: this header is compiled into translation units built
// with different -m flags, and an external inline symbol would let the linker keep, say, the
// AVX-512 copy for the AVX2 path (an ODR merge that turns into SIGILL on an AVX2-only CPU).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fusedmoe/tensor.hpp"

#if defined(__AVX__)
// GCC 12.2's intrinsic headers seed undefined vectors with `__Y = __Y`, which -Wuninitialized
// reports at every inlined use (GCC PR 105593); the diagnostic state at the header's own lines
// is what counts, so silencing it around the include keeps the warning live for our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace fusedmoe::cpu::detail {
namespace {  // NOLINT(google-build-namespaces, cert-dcl59-cpp): see the note at the top

// Step policy P provides:
//   LoadA, LoadB                         loaders for a and for b, each with
//     Elem                                 the element in memory
//     Chunk load(const Elem* p)            kStep elements, any alignment
//     Chunk load_tail(const Elem* p, int count)   0 < count < kStep; the rest reads as zero
//                                          and nothing past p + count is touched
//   Chunk, Acc                           loaded registers (the same for a and b), accumulator
//   kStep                                elements consumed per chunk
//   kRows, kCols                         micro-tile for m >= 2 (a rows x b rows)
//   kDecodeCols                          b rows per micro-tile when m == 1
//   kChains                              accumulators per pair, 1 or 2 (see micro_tile)
//   Acc zero()
//   Acc madd(const Chunk& a, const Chunk& b, Acc acc)
//   Acc add(Acc x, Acc y)                lane-wise, used once per pair when kChains == 2
//   float reduce(Acc acc)                a fixed-order horizontal sum
//   void reduce4(const Acc* x, float* out)   optional: out[q] = reduce(x[q]) for q < 4, bit
//                                        for bit (the same adds, four sums per instruction)

// b rows kept hot while all a-row blocks pass over them (m >= 2); half of a 1 MiB L2, so the
// a-row block and c share the rest.
inline constexpr std::int64_t kL2BlockBytes = 512 * 1024;

// Whether P's largest micro-tile keeps its accumulators, its a chunks and one b chunk in
// `registers` vector registers (a chunk takes `chunk_registers`); past that the tile spills.
template <class P>
constexpr bool fits_registers(int chunk_registers, int registers) {
  return P::kChains * P::kRows * P::kCols + (P::kRows + 1) * chunk_registers <= registers;
}

template <class P>
concept HasReduce4 = requires(const typename P::Acc* x, float* out) {
  P::reduce4(x, out);
};

template <class P>
using ElemA = typename P::LoadA::Elem;
template <class P>
using ElemB = typename P::LoadB::Elem;

template <class P>
using TileFn = void (*)(const ElemA<P>* const* a, const ElemB<P>* b, std::int64_t ldb,
                        std::int64_t k, float* c, std::int64_t ldc);

// acc[i][j] += a[i][h, h + kStep) . b[j][h, h + kStep), or only the first `count` elements
// (zero-padded) when kTail.
template <class P, int MR, int NR, bool kTail>
[[gnu::always_inline]] inline void accumulate(const ElemA<P>* const* ar, const ElemB<P>* const* br,
                                              std::int64_t h, int count,
                                              typename P::Acc (&acc)[MR][NR]) {
  using Chunk = typename P::Chunk;
  using LoadA = typename P::LoadA;
  using LoadB = typename P::LoadB;
  Chunk av[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    av[i] = kTail ? LoadA::load_tail(ar[i] + h, count) : LoadA::load(ar[i] + h);
  }
#pragma GCC unroll 16
  for (int j = 0; j < NR; ++j) {
    const Chunk bv = kTail ? LoadB::load_tail(br[j] + h, count) : LoadB::load(br[j] + h);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][j] = P::madd(av[i], bv, acc[i][j]);
  }
}

// c[i * ldc + j] for i < MR, j < NR: a[i] against the b row at b + j * ldb.
// With P::kChains == 2 each pair has two accumulators, for the even and the odd chunks (two
// dependency chains, so one b row alone still keeps the FMA pipes busy); the tail chunk goes
// where its index says, and the two are added before the reduction.
template <class P, int MR, int NR>
void micro_tile(const ElemA<P>* const* a, const ElemB<P>* b, std::int64_t ldb, std::int64_t k,
                float* c, std::int64_t ldc) {
  static_assert(P::kChains == 1 || P::kChains == 2);
  constexpr std::int64_t kStep = P::kStep;
  const ElemA<P>* ar[MR];
  const ElemB<P>* br[NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) ar[i] = a[i];
#pragma GCC unroll 16
  for (int j = 0; j < NR; ++j) br[j] = b + j * ldb;

  typename P::Acc acc[P::kChains][MR][NR];
#pragma GCC unroll 16
  for (int ch = 0; ch < P::kChains; ++ch) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[ch][i][j] = P::zero();
    }
  }

  std::int64_t h = 0;
  if constexpr (P::kChains == 1) {
    for (; h + kStep <= k; h += kStep) accumulate<P, MR, NR, false>(ar, br, h, 0, acc[0]);
    if (h < k) accumulate<P, MR, NR, true>(ar, br, h, static_cast<int>(k - h), acc[0]);
  } else {
    for (; h + 2 * kStep <= k; h += 2 * kStep) {
      accumulate<P, MR, NR, false>(ar, br, h, 0, acc[0]);
      accumulate<P, MR, NR, false>(ar, br, h + kStep, 0, acc[1]);
    }
    if (h + kStep <= k) {
      accumulate<P, MR, NR, false>(ar, br, h, 0, acc[0]);
      h += kStep;
      if (h < k) accumulate<P, MR, NR, true>(ar, br, h, static_cast<int>(k - h), acc[1]);
    } else if (h < k) {
      accumulate<P, MR, NR, true>(ar, br, h, static_cast<int>(k - h), acc[0]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[0][i][j] = P::add(acc[0][i][j], acc[1][i][j]);
    }
  }

  // For small k the reductions cost as much as the products; four at a time where the policy
  // can, which gives the same bits as one at a time.
  constexpr int kQuads = HasReduce4<P> ? NR / 4 : 0;
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if constexpr (kQuads > 0) {
#pragma GCC unroll 16
      for (int q = 0; q < kQuads; ++q) P::reduce4(&acc[0][i][4 * q], c + i * ldc + 4 * q);
    }
#pragma GCC unroll 16
    for (int j = 4 * kQuads; j < NR; ++j) c[i * ldc + j] = P::reduce(acc[0][i][j]);
  }
}

// The MR x nr micro-tile, 1 <= nr <= NR.
template <class P, int MR, int NR>
TileFn<P> pick_cols(int nr) {
  if constexpr (NR == 1) {
    return &micro_tile<P, MR, 1>;
  } else {
    return nr == NR ? &micro_tile<P, MR, NR> : pick_cols<P, MR, NR - 1>(nr);
  }
}

// The mr x nr micro-tile of the m >= 2 path, 1 <= mr <= MR, 1 <= nr <= P::kCols.
template <class P, int MR>
TileFn<P> pick_tile(int mr, int nr) {
  if constexpr (MR == 1) {
    return pick_cols<P, 1, P::kCols>(nr);
  } else {
    return mr == MR ? pick_cols<P, MR, P::kCols>(nr) : pick_tile<P, MR - 1>(mr, nr);
  }
}

// The DotTileFn contract for one (a, b) dtype pair (see dot_tile.hpp).
template <class P>
void dot_tile_rows(const void* const* a_rows, int m, const void* b, std::int64_t ldb, int n,
                   std::int64_t k, float* c, std::int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  const auto* bp = static_cast<const ElemB<P>*>(b);
  const ElemA<P>* a[P::kRows];

  if (m == 1) {
    // Decode: b streams from memory once. SIMD policies take its rows one at a time, in memory
    // order: one sequential stream, which hardware prefetchers follow across rows (and, on huge
    // pages, across 4 KiB boundaries); several rows at once measured slower on Zen 4.
    constexpr int kCols = P::kDecodeCols;
    a[0] = static_cast<const ElemA<P>*>(a_rows[0]);
    const TileFn<P> full = pick_cols<P, 1, kCols>(kCols);
    for (int j = 0; j < n; j += kCols) {
      const int nr = n - j < kCols ? n - j : kCols;
      const TileFn<P> tile = nr == kCols ? full : pick_cols<P, 1, kCols>(nr);
      tile(a, bp + j * ldb, ldb, k, c + j, ldc);
    }
    return;
  }

  constexpr int kRows = P::kRows;
  constexpr int kCols = P::kCols;
  const std::int64_t row_bytes = (k > 0 ? k : 1) * static_cast<std::int64_t>(sizeof(ElemB<P>));
  std::int64_t block = kL2BlockBytes / row_bytes / kCols * kCols;
  if (block < kCols) block = kCols;
  const int n_block = block < n ? static_cast<int>(block) : n;

  for (int j0 = 0; j0 < n; j0 += n_block) {
    const int j1 = n - j0 < n_block ? n : j0 + n_block;
    for (int i = 0; i < m; i += kRows) {
      const int mr = m - i < kRows ? m - i : kRows;
      for (int r = 0; r < mr; ++r) a[r] = static_cast<const ElemA<P>*>(a_rows[i + r]);
      const TileFn<P> full = pick_tile<P, kRows>(mr, kCols);
      for (int j = j0; j < j1; j += kCols) {
        const int nr = j1 - j < kCols ? j1 - j : kCols;
        const TileFn<P> tile = nr == kCols ? full : pick_tile<P, kRows>(mr, nr);
        tile(a, bp + j * ldb, ldb, k, c + static_cast<std::int64_t>(i) * ldc + j, ldc);
      }
    }
  }
}

// Step<A, B> for b's loader among F32, F16 and Bf16; other dtypes write nothing (the caller
// validates dtypes before it gets here).
template <template <class, class> class Step, class F32, class F16, class Bf16, class A>
void dot_tile_for_b(DType b_dtype, const void* const* a_rows, int m, const void* b,
                    std::int64_t ldb, int n, std::int64_t k, float* c, std::int64_t ldc) {
  switch (b_dtype) {
    case DType::f32:
      return dot_tile_rows<Step<A, F32>>(a_rows, m, b, ldb, n, k, c, ldc);
    case DType::f16:
      return dot_tile_rows<Step<A, F16>>(a_rows, m, b, ldb, n, k, c, ldc);
    case DType::bf16:
      return dot_tile_rows<Step<A, Bf16>>(a_rows, m, b, ldb, n, k, c, ldc);
    case DType::i32:
      return;
  }
}

// Step<A, B> for the loaders of a_dtype and b_dtype among F32, F16 and Bf16: every dtype pair.
template <template <class, class> class Step, class F32, class F16, class Bf16>
void dot_tile_any(DType a_dtype, const void* const* a_rows, int m, DType b_dtype, const void* b,
                  std::int64_t ldb, int n, std::int64_t k, float* c, std::int64_t ldc) {
  switch (a_dtype) {
    case DType::f32:
      return dot_tile_for_b<Step, F32, F16, Bf16, F32>(b_dtype, a_rows, m, b, ldb, n, k, c, ldc);
    case DType::f16:
      return dot_tile_for_b<Step, F32, F16, Bf16, F16>(b_dtype, a_rows, m, b, ldb, n, k, c, ldc);
    case DType::bf16:
      return dot_tile_for_b<Step, F32, F16, Bf16, Bf16>(b_dtype, a_rows, m, b, ldb, n, k, c, ldc);
    case DType::i32:
      return;
  }
}

#if defined(__AVX__)
// Fixed pairwise tree: lanes (l, l + 4), then (l, l + 2), then (0, 1).
inline float reduce_add_fixed(__m256 v) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// out[q] = reduce_add_fixed(x[q]), the same adds on the same operands, grouped so that one
// instruction serves several sums.
inline void reduce4_add_fixed(const __m256* x, float* out) {
  // (l, l + 4): [x0 | x1] and [x2 | x3] halves, four lanes each
  const __m256 s01 = _mm256_add_ps(_mm256_permute2f128_ps(x[0], x[1], 0x20),
                                   _mm256_permute2f128_ps(x[0], x[1], 0x31));
  const __m256 s23 = _mm256_add_ps(_mm256_permute2f128_ps(x[2], x[3], 0x20),
                                   _mm256_permute2f128_ps(x[2], x[3], 0x31));
  // (l, l + 2): per 128-bit half, lanes [x0 x0 x2 x2 | x1 x1 x3 x3]
  const __m256 s2 = _mm256_add_ps(_mm256_shuffle_ps(s01, s23, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 2, 3, 2)));
  // (0, 1): lanes [x0 x2 . . | x1 x3 . .]
  const __m256 s1 = _mm256_add_ps(_mm256_shuffle_ps(s2, s2, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm256_shuffle_ps(s2, s2, _MM_SHUFFLE(3, 1, 3, 1)));
  _mm_storeu_ps(out, _mm_unpacklo_ps(_mm256_castps256_ps128(s1), _mm256_extractf128_ps(s1, 1)));
}
#endif  // __AVX__

#if defined(__AVX512F__)
// Lanes (l, l + 8) first, then the 256-bit tree.
inline float reduce_add_fixed(__m512 v) {
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  return reduce_add_fixed(_mm256_add_ps(_mm512_castps512_ps256(v), hi));
}

// out[q] = reduce_add_fixed(x[q]), the same adds on the same operands.
inline void reduce4_add_fixed(const __m512* x, float* out) {
  // (l, l + 8): 128-bit blocks [x0 x0 x1 x1] and [x2 x2 x3 x3]
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(x[0], x[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(x[0], x[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(x[2], x[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(x[2], x[3], _MM_SHUFFLE(3, 2, 3, 2)));
  // (l, l + 4): blocks [x0 x1 x2 x3]
  const __m512 s4 = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
  // (l, l + 2), then (0, 1), inside each block
  const __m512 s2 = _mm512_add_ps(s4, _mm512_permute_ps(s4, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 s1 = _mm512_add_ps(s2, _mm512_permute_ps(s2, _MM_SHUFFLE(1, 1, 1, 1)));
  const __m512i lane0_of_blocks = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
  _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(lane0_of_blocks, s1)));
}
#endif

}  // namespace
}  // namespace fusedmoe::cpu::detail
