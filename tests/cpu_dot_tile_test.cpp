// dot_tile against a float64 reference, for every ISA this CPU runs and every (a, b) dtype pair:
// values,
// exactness on integer data, coverage of c (poisoned first), strided and unaligned rows, batch
// invariance (a pair's value never depends on the tile around it), NaN/Inf and empty shapes.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/half.hpp"
#include "cpu/kernels/dot_tile.hpp"

namespace fusedmoe::cpu {
namespace {

constexpr std::uint32_t kPoisonBits = 0x7fc0dead;  // a quiet NaN no kernel produces
constexpr Isa kIsas[] = {Isa::portable, Isa::avx2, Isa::avx512, Isa::avx512_bf16};
constexpr DType kDtypes[] = {DType::f32, DType::f16, DType::bf16};
constexpr std::int64_t kKs[] = {0,  1,  3,   15,  16,   17,   31,   32,  33,
                                63, 64, 100, 733, 1408, 2048, 2880, 7168};
constexpr int kMs[] = {1, 2, 3, 4, 5, 7, 8, 9, 17};
constexpr int kNs[] = {1, 2, 3, 4, 5, 8, 13, 33};

enum class Fill { gaussian, integer };

std::int64_t elem_bytes(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

bool is_poison(float x) { return std::bit_cast<std::uint32_t>(x) == kPoisonBits; }

// `rows` rows of k elements of one dtype; row r starts `offset + r * ld` elements into a buffer
// that ends exactly where the last row does (so a read past it is a sanitizer error).
class Rows {
 public:
  Rows(DType dtype, int rows, std::int64_t k, std::int64_t ld, std::int64_t offset, Fill fill,
       std::mt19937_64& rng)
      : dtype_(dtype), rows_(rows), k_(k), ld_(ld), offset_(offset) {
    const std::int64_t elems = rows > 0 ? offset + (rows - 1) * ld + k : 0;
    bytes_.assign(static_cast<std::size_t>(elems * elem_bytes(dtype)) + 1, 0xff);
    values_.resize(static_cast<std::size_t>(rows * k));
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    std::uniform_int_distribution<int> integer(-4, 4);
    for (int r = 0; r < rows; ++r) {
      for (std::int64_t h = 0; h < k; ++h) {
        const float v = fill == Fill::gaussian ? gauss(rng) : static_cast<float>(integer(rng));
        set(r, h, v);
      }
    }
  }

  // Stores v rounded to the dtype; the reference sees the rounded value.
  void set(int r, std::int64_t h, float v) {
    core::store_f32(dtype_, bytes_.data(), offset_ + r * ld_ + h, v);
    values_[static_cast<std::size_t>(r * k_ + h)] =
        core::load_f32(dtype_, bytes_.data(), offset_ + r * ld_ + h);
  }
  const void* row(int r) const { return bytes_.data() + (offset_ + r * ld_) * elem_bytes(dtype_); }
  double value(int r, std::int64_t h) const {
    return values_[static_cast<std::size_t>(r * k_ + h)];
  }
  std::int64_t ld() const { return ld_; }
  int rows() const { return rows_; }

 private:
  DType dtype_;
  int rows_;
  std::int64_t k_, ld_, offset_;
  std::vector<unsigned char> bytes_;
  std::vector<double> values_;
};

struct Reference {
  std::vector<double> dot;      // (a rows, b rows)
  std::vector<double> abs_dot;  // sum of |products|, the scale of the rounding error
};

Reference reference(const Rows& a, const Rows& b, std::int64_t k) {
  Reference ref;
  ref.dot.resize(static_cast<std::size_t>(a.rows() * b.rows()));
  ref.abs_dot.resize(ref.dot.size());
  for (int i = 0; i < a.rows(); ++i) {
    for (int j = 0; j < b.rows(); ++j) {
      double s = 0.0, s_abs = 0.0;
      for (std::int64_t h = 0; h < k; ++h) {
        const double p = a.value(i, h) * b.value(j, h);
        s += p;
        s_abs += std::fabs(p);
      }
      ref.dot[static_cast<std::size_t>(i * b.rows() + j)] = s;
      ref.abs_dot[static_cast<std::size_t>(i * b.rows() + j)] = s_abs;
    }
  }
  return ref;
}

// fp32 accumulation over k terms: the error grows like sqrt(k) ulps of the |product| sum.
double tolerance(std::int64_t k, double abs_dot) {
  return 1e-6 * std::sqrt(static_cast<double>(k > 0 ? k : 1)) * abs_dot + 1e-30;
}

std::uint64_t seed_of(Isa isa, DType a_dtype, DType b_dtype, std::int64_t k, int salt) {
  return 0x9e3779b97f4a7c15ull * (static_cast<std::uint64_t>(isa) + 1) +
         0xbf58476d1ce4e5b9ull *
             (static_cast<std::uint64_t>(a_dtype) * 4 + static_cast<std::uint64_t>(b_dtype) + 1) +
         0x94d049bb133111ebull * static_cast<std::uint64_t>(k + 1) +
         static_cast<std::uint64_t>(salt);
}

class DotTileTest : public ::testing::TestWithParam<std::tuple<Isa, DType, DType>> {
 protected:
  void SetUp() override {
    kernels_ = kernels_for(isa());
    if (kernels_ == nullptr) GTEST_SKIP() << to_string(isa()) << " is not available on this CPU";
  }
  Isa isa() const { return std::get<0>(GetParam()); }
  DType a_dtype() const { return std::get<1>(GetParam()); }
  DType b_dtype() const { return std::get<2>(GetParam()); }
  std::uint64_t seed(std::int64_t k, int salt) const {
    return seed_of(isa(), a_dtype(), b_dtype(), k, salt);
  }
  void run(const std::vector<const void*>& a_rows, const void* b, std::int64_t ldb, int n,
           std::int64_t k, float* c, std::int64_t ldc) const {
    kernels_->dot_tile(a_dtype(), a_rows.data(), static_cast<int>(a_rows.size()), b_dtype(), b, ldb,
                       n, k, c, ldc);
  }
  const Kernels* kernels_ = nullptr;
};

TEST_P(DotTileTest, MatchesReferenceAndWritesExactlyTheTile) {
  constexpr int kARows = 17, kBRows = 33;
  int failures = 0;
  for (Fill fill : {Fill::gaussian, Fill::integer}) {
    for (std::int64_t k : kKs) {
      const std::uint64_t seed = this->seed(k, fill == Fill::gaussian ? 1 : 2);
      SCOPED_TRACE(::testing::Message()
                   << "fill " << (fill == Fill::gaussian ? "gaussian" : "integer") << " k " << k
                   << " seed " << seed);
      std::mt19937_64 rng(seed);
      // Odd leading dimensions and offsets: no row is vector-aligned.
      const Rows a(a_dtype(), kARows, k, k + 3, 1, fill, rng);
      const Rows b(b_dtype(), kBRows, k, k + 5, 3, fill, rng);
      const Reference ref = reference(a, b, k);
      for (int m : kMs) {
        for (int n : kNs) {
          const int i0 = (m * 7) % (kARows - m + 1);
          const int j0 = (n * 5) % (kBRows - n + 1);
          std::vector<const void*> a_rows;
          for (int i = 0; i < m; ++i) a_rows.push_back(a.row(i0 + i));
          const std::int64_t ldc = n + 3;
          std::vector<float> c(static_cast<std::size_t>(m * ldc),
                               std::bit_cast<float>(kPoisonBits));
          run(a_rows, b.row(j0), b.ld(), n, k, c.data(), ldc);
          for (int i = 0; i < m; ++i) {
            for (std::int64_t j = 0; j < ldc; ++j) {
              const float got = c[static_cast<std::size_t>(i * ldc + j)];
              if (j >= n) {
                if (!is_poison(got) && failures++ < 10) {
                  ADD_FAILURE() << "m " << m << " n " << n << ": wrote the gap at (" << i << ", "
                                << j << ")";
                }
                continue;
              }
              const auto r = static_cast<std::size_t>((i0 + i) * kBRows + (j0 + j));
              const double want = ref.dot[r];
              const bool ok = fill == Fill::integer
                                  ? static_cast<double>(got) == want
                                  : std::fabs(got - want) <= tolerance(k, ref.abs_dot[r]);
              if ((!ok || is_poison(got)) && failures++ < 10) {
                ADD_FAILURE() << "m " << m << " n " << n << " (" << i << ", " << j << "): got "
                              << got << " want " << want << " (sum |ab| " << ref.abs_dot[r] << ")";
              }
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

// A pair's value is bit-identical alone (m = n = 1) and anywhere inside any tile, including
// the m == 1 decode path, tiles of repeated and shuffled rows, and n spanning L2 blocks.
TEST_P(DotTileTest, BatchInvariant) {
  constexpr int kARows = 17, kBRows = 160;
  for (std::int64_t k : {1, 17, 33, 733, 2048, 2880}) {
    const std::uint64_t seed = this->seed(k, 3);
    SCOPED_TRACE(::testing::Message() << "k " << k << " seed " << seed);
    std::mt19937_64 rng(seed);
    const Rows a(a_dtype(), kARows, k, k + 1, 0, Fill::gaussian, rng);
    const Rows b(b_dtype(), kBRows, k, k + 7, 5, Fill::gaussian, rng);
    std::vector<float> alone(static_cast<std::size_t>(kARows * kBRows));
    for (int i = 0; i < kARows; ++i) {
      for (int j = 0; j < kBRows; ++j) {
        run({a.row(i)}, b.row(j), b.ld(), 1, k, &alone[static_cast<std::size_t>(i * kBRows + j)],
            1);
      }
    }
    for (int m : {1, 2, 3, 4, 5, 8, 9, 17, 333}) {
      if (m > kARows && k > 733) continue;  // the big batch is slow on the portable kernel
      std::vector<int> rows;                // which a row sits at each tile row
      std::uniform_int_distribution<int> pick(0, kARows - 1);
      for (int i = 0; i < m; ++i) rows.push_back(m <= kARows ? (i * 5 + 3) % kARows : pick(rng));
      std::vector<const void*> a_rows;
      for (int r : rows) a_rows.push_back(a.row(r));
      for (int j0 : {0, 3}) {
        const int n = kBRows - j0;
        std::vector<float> c(static_cast<std::size_t>(m * n));
        run(a_rows, b.row(j0), b.ld(), n, k, c.data(), n);
        int mismatches = 0;
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < n; ++j) {
            const float got = c[static_cast<std::size_t>(i * n + j)];
            const float want = alone[static_cast<std::size_t>(rows[i] * kBRows + j0 + j)];
            if (std::bit_cast<std::uint32_t>(got) != std::bit_cast<std::uint32_t>(want) &&
                mismatches++ < 5) {
              ADD_FAILURE() << "m " << m << " j0 " << j0 << " at (" << i << ", " << j
                            << "): " << got << " in the tile, " << want << " alone";
            }
          }
        }
      }
    }
  }
}

// NaN in one a row reaches only that row of c; Inf in one b row only that column; the other
// elements keep their values. Positions cover the body and the tail chunk.
TEST_P(DotTileTest, NanAndInfStayInTheirRowAndColumn) {
  constexpr int kARows = 5, kBRows = 7;
  for (std::int64_t k : {64, 100, 733}) {
    std::mt19937_64 rng(seed(k, 4));
    Rows a(a_dtype(), kARows, k, k, 0, Fill::gaussian, rng);
    Rows b(b_dtype(), kBRows, k, k, 0, Fill::gaussian, rng);
    const Reference clean = reference(a, b, k);
    a.set(2, k - 1, std::numeric_limits<float>::quiet_NaN());
    a.set(4, 5, std::numeric_limits<float>::quiet_NaN());
    b.set(3, 11, std::numeric_limits<float>::infinity());
    b.set(6, k - 2, -std::numeric_limits<float>::infinity());
    std::vector<const void*> a_rows;
    for (int i = 0; i < kARows; ++i) a_rows.push_back(a.row(i));
    std::vector<float> c(kARows * kBRows);
    run(a_rows, b.row(0), b.ld(), kBRows, k, c.data(), kBRows);
    for (int i = 0; i < kARows; ++i) {
      for (int j = 0; j < kBRows; ++j) {
        const float got = c[static_cast<std::size_t>(i * kBRows + j)];
        SCOPED_TRACE(::testing::Message() << "k " << k << " (" << i << ", " << j << ")");
        if (i == 2 || i == 4) {
          EXPECT_TRUE(std::isnan(got)) << got;
        } else if (j == 3 || j == 6) {
          EXPECT_FALSE(std::isfinite(got)) << got;
        } else {
          const auto r = static_cast<std::size_t>(i * kBRows + j);
          EXPECT_NEAR(got, clean.dot[r], tolerance(k, clean.abs_dot[r]));
        }
      }
    }
  }
}

TEST_P(DotTileTest, EmptyShapes) {
  std::mt19937_64 rng(seed(0, 5));
  const Rows a(a_dtype(), 3, 16, 16, 0, Fill::gaussian, rng);
  const Rows b(b_dtype(), 2, 16, 16, 0, Fill::gaussian, rng);
  const std::vector<const void*> a_rows = {a.row(0), a.row(1), a.row(2)};
  std::vector<float> c(6, std::bit_cast<float>(kPoisonBits));
  // m == 0 and n == 0 write nothing and read nothing, even through null pointers.
  kernels_->dot_tile(a_dtype(), nullptr, 0, b_dtype(), b.row(0), 16, 2, 16, c.data(), 2);
  kernels_->dot_tile(a_dtype(), a_rows.data(), 3, b_dtype(), nullptr, 16, 0, 16, c.data(), 2);
  for (float x : c) EXPECT_TRUE(is_poison(x));
  // k == 0 writes zeros.
  run(a_rows, b.row(0), 16, 2, 0, c.data(), 2);
  for (float x : c) EXPECT_EQ(x, 0.0f);
}

// "a_bf16_b_f32_on_avx512"
std::string param_name(const ::testing::TestParamInfo<std::tuple<Isa, DType, DType>>& info) {
  return std::string("a_") + std::string(to_string(std::get<1>(info.param))) + "_b_" +
         std::string(to_string(std::get<2>(info.param))) + "_on_" +
         std::string(to_string(std::get<0>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(AllIsasAndDtypes, DotTileTest,
                         ::testing::Combine(::testing::ValuesIn(kIsas),
                                            ::testing::ValuesIn(kDtypes),
                                            ::testing::ValuesIn(kDtypes)),
                         param_name);

TEST(DotTileDispatch, NamesAndAvailability) {
  EXPECT_EQ(to_string(Isa::portable), "portable");
  EXPECT_EQ(to_string(Isa::avx2), "avx2");
  EXPECT_EQ(to_string(Isa::avx512), "avx512");
  EXPECT_EQ(to_string(Isa::avx512_bf16), "avx512_bf16");
  ASSERT_NE(kernels_for(Isa::portable), nullptr);
  // Availability is monotone in ISA order, and kernels() is one of the available ones.
  bool seen_missing = false;
  for (Isa isa : kIsas) {
    const Kernels* k = kernels_for(isa);
    if (k == nullptr) {
      seen_missing = true;
      continue;
    }
    EXPECT_FALSE(seen_missing) << to_string(isa) << " available above a missing ISA";
    EXPECT_EQ(k->isa, isa);
    EXPECT_NE(k->dot_tile, nullptr);
  }
  EXPECT_NE(kernels_for(kernels().isa), nullptr);
}

// FUSEDMOE_CPU_ISA is read once per process, so each setting runs in a fresh child.
TEST(DotTileDispatch, EnvironmentCapsTheChoice) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Isa best = Isa::portable;
  for (Isa isa : kIsas) {
    if (kernels_for(isa) != nullptr) best = isa;
  }
  for (Isa cap : kIsas) {
    const Isa want = kernels_for(cap) != nullptr ? cap : best;
    EXPECT_EXIT(
        {
          setenv("FUSEDMOE_CPU_ISA", std::string(to_string(cap)).c_str(), 1);
          std::_Exit(kernels().isa == want ? 0 : 1);
        },
        ::testing::ExitedWithCode(0), "")
        << "cap " << to_string(cap);
  }
  EXPECT_EXIT(
      {
        setenv("FUSEDMOE_CPU_ISA", "sse9000", 1);
        std::_Exit(kernels().isa == best ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace fusedmoe::cpu
