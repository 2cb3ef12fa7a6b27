// dot_tile in plain C++ (default compiler flags), the fallback for CPUs without AVX2 and for
// other architectures. It runs the same step-policy skeleton as the SIMD kernels with an
// 8-lane array standing in for a vector register: lane l of a pair's accumulator sums the
// products of elements h with h % 8 == l, in order; the tail chunk is zero-padded; the lanes
// are summed in a fixed tree. Compilers may turn the lane loops into SSE/NEON code, which
// changes nothing numerically (each lane is still its own serial sum); sources.cmake turns off
// FMA contraction, so products round before the add and results differ from the SIMD kernels
// in the last bits, within fp32 tolerance. Micro-tiles: 1 a row x 4 b rows, for m == 1 too
// (without SIMD this path is compute-bound, so rows side by side).
#include <cstdint>
#include <cstring>

#include "core/half.hpp"
#include "cpu/kernels/dot_tile_impl.hpp"
#include "cpu/kernels/dot_tile_isa.hpp"

namespace fusedmoe::cpu::portable {
namespace {

constexpr int kLanes = 8;

struct Lanes {
  float v[kLanes];
};

float f32_to_f32(float x) { return x; }

// E in memory, kToF32 its conversion.
template <class E, float (*kToF32)(E)>
struct Load {
  using Elem = E;
  static Lanes load(const Elem* p) {
    // One block copy first: converting straight from p, GCC -O3 gathers element by element.
    Elem raw[kLanes];
    std::memcpy(raw, p, sizeof(raw));
    Lanes x;
    for (int l = 0; l < kLanes; ++l) x.v[l] = kToF32(raw[l]);
    return x;
  }
  static Lanes load_tail(const Elem* p, int count) {
    Lanes x{};
    for (int l = 0; l < count; ++l) x.v[l] = kToF32(p[l]);
    return x;
  }
};

using LoadF32 = Load<float, f32_to_f32>;
using LoadF16 = Load<std::uint16_t, core::f16_to_f32>;
using LoadBf16 = Load<std::uint16_t, core::bf16_to_f32>;

template <class A, class B>
struct Step {
  using LoadA = A;
  using LoadB = B;
  using Chunk = Lanes;
  using Acc = Lanes;
  static constexpr int kStep = kLanes;
  static constexpr int kRows = 1;
  static constexpr int kCols = 4;
  static constexpr int kChains = 1;
  static constexpr int kDecodeCols = 4;

  static Acc zero() { return Lanes{}; }
  static Acc madd(const Chunk& a, const Chunk& b, Acc acc) {
    for (int l = 0; l < kLanes; ++l) acc.v[l] += a.v[l] * b.v[l];
    return acc;
  }
  static Acc add(const Acc& x, const Acc& y) {
    Acc s;
    for (int l = 0; l < kLanes; ++l) s.v[l] = x.v[l] + y.v[l];
    return s;
  }
  static float reduce(const Acc& acc) {
    float s4[4];
    for (int l = 0; l < 4; ++l) s4[l] = acc.v[l] + acc.v[l + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
  }
};

}  // namespace
}  // namespace fusedmoe::cpu::portable

namespace fusedmoe::cpu::detail {

void dot_tile_portable(DType a_dtype, const void* const* a_rows, int m, DType b_dtype,
                       const void* b, std::int64_t ldb, int n, std::int64_t k, float* c,
                       std::int64_t ldc) {
  dot_tile_any<portable::Step, portable::LoadF32, portable::LoadF16, portable::LoadBf16>(
      a_dtype, a_rows, m, b_dtype, b, ldb, n, k, c, ldc);
}

}  // namespace fusedmoe::cpu::detail
