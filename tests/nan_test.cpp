// Non-finite values (CONTRACT.md): NaN or Inf in one token's activations never reaches another
// token's output or routing, and NaN, Inf or huge router logits still give in-range, distinct ids.
// Checked on the reference and the backend under test (Backend::cpu, or Backend::cuda with
// FUSEDMOE_TEST_BACKEND=cuda).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <tuple>

#include "test_util.hpp"

namespace fusedmoe {
namespace {

using test::Problem;
using test::RunResult;

enum class Kind { softmax, grouped, gpt_oss, precomputed, shared };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::softmax:
      return "softmax";
    case Kind::grouped:
      return "grouped";
    case Kind::gpt_oss:
      return "gptoss";
    case Kind::precomputed:
      return "precomputed";
    case Kind::shared:
      return "shared";
  }
  return "?";
}

LayerConfig kind_config(Kind k, DType dt) {
  switch (k) {
    case Kind::softmax:
      return test::make_config(136, 48, 16, 4, dt);
    case Kind::grouped:
      return test::deepseek_like(136, 48, 32, 8, 8, 4, dt);
    case Kind::gpt_oss:
      return test::gpt_oss_like(136, 48, 16, 4, dt);
    case Kind::precomputed: {
      LayerConfig c = test::make_config(136, 48, 16, 4, dt);
      c.routing.kind = RoutingKind::precomputed;
      return c;
    }
    case Kind::shared: {
      LayerConfig c = test::make_config(136, 48, 16, 4, dt);
      c.shared = {40, true};
      return c;
    }
  }
  return {};
}

void PrintTo(Kind k, std::ostream* os) { *os << kind_name(k); }

class NonFiniteToken : public ::testing::TestWithParam<std::tuple<Kind, DType, bool>> {
 protected:
  void SetUp() override {
    FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test());
    const auto [kind, dtype, inf] = GetParam();
    FUSEDMOE_TEST_REQUIRE_SUPPORT(test::backend_under_test(), kind_config(kind, dtype));
  }
};

TEST_P(NonFiniteToken, StaysInItsOwnRow) {
  const auto [kind, dtype, inf] = GetParam();
  const LayerConfig c = kind_config(kind, dtype);
  const std::int64_t t_count = 70, bad = 37;  // bad sits inside the second 32-token chunk
  Problem p(c, t_count);
  SCOPED_TRACE(p.describe());
  const float value =
      inf ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  for (Backend backend : {Backend::reference, test::backend_under_test()}) {
    SCOPED_TRACE(to_string(backend));
    Result<Layer> layer = test::make_layer(c, p.weights().view(), backend);
    ASSERT_TRUE(layer.ok()) << layer.status().to_string();
    const DType out = backend == Backend::reference ? DType::f32 : dtype;
    Problem q(c, t_count, p.options, p.weights_ptr);
    const RunResult clean = test::run_layer(layer.value(), q, out);
    for (std::int64_t h = 0; h < c.hidden; h += 5) q.set_x(bad, h, value);
    const RunResult dirty = test::run_layer(layer.value(), q, out);
    ASSERT_TRUE(clean.status.ok() && dirty.status.ok()) << dirty.status.to_string();
    if (c.routing.kind != RoutingKind::precomputed) expect_valid_ids(dirty, bad, c);
    EXPECT_TRUE(dirty.out.guard_intact());
    EXPECT_EQ(test::count_poison(dirty.out.cref()), 0) << "the bad row must still be written";
    for (std::int64_t t = 0; t < t_count; ++t) {
      if (t == bad) continue;
      ASSERT_TRUE(dirty.out.row_bytes(t) == clean.out.row_bytes(t)) << "token " << t << " changed";
      ASSERT_TRUE(dirty.ids_out.row_bytes(t) == clean.ids_out.row_bytes(t)) << "token " << t;
      ASSERT_TRUE(dirty.weights_out.row_bytes(t) == clean.weights_out.row_bytes(t))
          << "token " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Nan, NonFiniteToken,
                         ::testing::Combine(::testing::Values(Kind::softmax, Kind::grouped,
                                                              Kind::gpt_oss, Kind::precomputed,
                                                              Kind::shared),
                                            ::testing::Values(DType::bf16, DType::f32),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(kind_name(std::get<0>(info.param))) + "_" +
                                  std::string(to_string(std::get<1>(info.param))) +
                                  (std::get<2>(info.param) ? "_inf" : "_nan");
                         });

TEST(Nan, NaNPrecomputedWeightStaysInItsToken) {
  FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test());
  for (DType dt : {DType::f32, DType::bf16}) {
    LayerConfig c = test::make_config(96, 40, 8, 2, dt);
    c.routing.kind = RoutingKind::precomputed;
    Problem p(c, 40);
    for (Backend backend : {Backend::reference, test::backend_under_test()}) {
      if (!test::unsupported_reason(backend, c).empty()) continue;
      SCOPED_TRACE(std::string(to_string(backend)) + " " + std::string(to_string(dt)));
      Problem q(c, 40, p.options, p.weights_ptr);
      const RunResult clean = test::run_backend(q, backend);
      q.route_weight(11, 1) = std::numeric_limits<float>::quiet_NaN();
      const RunResult dirty = test::run_backend(q, backend);
      ASSERT_TRUE(clean.status.ok() && dirty.status.ok()) << dirty.status.to_string();
      for (std::int64_t t = 0; t < 40; ++t) {
        if (t != 11) {
          EXPECT_TRUE(dirty.out.row_bytes(t) == clean.out.row_bytes(t)) << t;
        }
      }
    }
  }
}

// ---- router logits: NaN, Inf, huge --------------------------------------------------------------

enum class Plant { huge, overflow, nan, inf };

const char* plant_name(Plant p) {
  switch (p) {
    case Plant::huge:
      return "huge";
    case Plant::overflow:
      return "overflow";
    case Plant::nan:
      return "nan";
    case Plant::inf:
      return "inf";
  }
  return "?";
}

void PrintTo(Plant p, std::ostream* os) { *os << plant_name(p); }

class BadRouterRow : public ::testing::TestWithParam<std::tuple<Kind, Plant>> {
 protected:
  void SetUp() override { FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test()); }
};

TEST_P(BadRouterRow, IdsStayInRangeAndDistinct) {
  const auto [kind, plant] = GetParam();
  const LayerConfig c = kind_config(kind, DType::bf16);
  Problem p(c, 50);
  SCOPED_TRACE(p.describe() + " plant " + plant_name(plant));
  // Row 3 of the router: ±1e30 (logits ~1e31, still finite in f32), ±3e38 (the f32 sum
  // overflows to ±Inf), NaN, or ±Inf (Inf·x sums to ±Inf or NaN). Signs alternate so that
  // logits of both signs occur.
  HostTensor& router = p.edit_weights().router;
  const float values[] = {1e30f, 3e38f, std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity()};
  const float v = values[static_cast<int>(plant)];
  for (std::int64_t h = 0; h < c.hidden; ++h) {
    core::store_f32(DType::bf16, router.bytes(), 3 * c.hidden + h, h % 2 == 0 ? v : -v / 2);
  }
  if (plant == Plant::huge) {
    // still finite: the fast path must match the reference outright
    test::expect_matches_reference(p, test::backend_under_test());
    return;
  }
  for (Backend backend : {Backend::reference, test::backend_under_test()}) {
    SCOPED_TRACE(to_string(backend));
    const RunResult r = test::run_backend(p, backend);
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    for (std::int64_t t = 0; t < p.tokens; ++t) expect_valid_ids(r, t, c);
    EXPECT_EQ(test::count_poison(r.out.cref()), 0) << "out not fully written";
    EXPECT_TRUE(r.out.guard_intact());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Nan, BadRouterRow,
    ::testing::Combine(::testing::Values(Kind::softmax, Kind::grouped, Kind::gpt_oss),
                       ::testing::Values(Plant::huge, Plant::overflow, Plant::nan, Plant::inf)),
    [](const auto& info) {
      return std::string(kind_name(std::get<0>(info.param))) + "_" +
             plant_name(std::get<1>(info.param));
    });

}  // namespace
}  // namespace fusedmoe
