// Adversarial routing and sizes on the backend under test, against the reference: every token to
// one expert at T = 4096 with E = 256, experts with no tokens, non-finite and huge logits planted
// through the router weights (several experts, grouped routing included) and through x, ids out
// of range in bulk, a large prefill (T = 65536, so that T·k·H passes 2^24 and 32-bit slot
// indices are exercised), and the workspace arithmetic for T near and past what fits.
#include <cstdint>
#include <limits>
#include <vector>

#include "test_util.hpp"

namespace fusedmoe {
namespace {

using test::Problem;
using test::RunResult;

class Adversarial : public ::testing::Test {
 protected:
  void SetUp() override { FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test()); }
  static Backend backend() { return test::backend_under_test(); }
};

// A router bias of `value` on expert `e` (the layer's bias tensor, whatever its dtype).
void set_router_bias(Problem& p, std::int64_t e, float value) {
  HostTensor& b = p.edit_weights().router_bias;
  core::store_f32(b.cref().dtype, b.bytes(), e, value);
}

TEST_F(Adversarial, EveryTokenToOneExpertPrecomputed) {
  LayerConfig c = test::make_config(48, 40, 256, 8);
  c.routing.kind = RoutingKind::precomputed;
  c.routing.renormalize = false;
  test::Options o;
  o.ids = test::Ids::one_expert;
  FUSEDMOE_TEST_REQUIRE_SUPPORT(backend(), c, o);
  const Problem p(c, 4096, o);
  test::expect_matches_reference(p, backend());
}

TEST_F(Adversarial, EveryTokenToOneExpertThroughTheRouter) {
  // softmax over a bias of +30 on expert 77: every token's top-1 is 77; the other 7 slots are
  // what the logits say.
  LayerConfig c = test::make_config(48, 40, 256, 8);
  c.routing.router_bias = true;
  Problem p(c, 4096);
  set_router_bias(p, 77, 30.0f);
  FUSEDMOE_TEST_REQUIRE_SUPPORT(backend(), c);
  const RunResult ref = test::run_backend(p, Backend::reference);
  const RunResult got = test::run_backend(p, backend());
  test::check_against(p, ref, got);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const std::vector<std::int32_t> ids = got.ids(t, c.top_k);
    ASSERT_NE(std::find(ids.begin(), ids.end(), 77), ids.end()) << "token " << t;
  }
}

TEST_F(Adversarial, MostExpertsWithoutTokens) {
  // Grouped sigmoid routing where one group's correction bias wins every selection: 224 of the
  // 256 experts get no token.
  LayerConfig c = test::deepseek_like(48, 40, 256, 8, 8, 1);
  Problem p(c, 1000);
  HostTensor& b = p.edit_weights().correction_bias;
  for (std::int64_t e = 0; e < 32; ++e) core::store_f32(b.cref().dtype, b.bytes(), 64 + e, 4.0f);
  FUSEDMOE_TEST_REQUIRE_SUPPORT(backend(), c);
  const RunResult ref = test::run_backend(p, Backend::reference);
  const RunResult got = test::run_backend(p, backend());
  test::check_against(p, ref, got);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    for (std::int32_t id : got.ids(t, c.top_k)) {
      ASSERT_TRUE(id >= 64 && id < 96) << "token " << t << " got expert " << id;
    }
  }
}

TEST_F(Adversarial, HalfTheExpertsWithoutTokensPrecomputed) {
  LayerConfig c = test::make_config(40, 24, 64, 4, DType::f16);
  c.routing.kind = RoutingKind::precomputed;
  c.routing.renormalize = false;
  test::Options o;
  o.ids = test::Ids::half_experts;
  o.zipf_s = 2.0;
  FUSEDMOE_TEST_REQUIRE_SUPPORT(backend(), c, o);
  test::expect_matches_reference(Problem(c, 1000, o), backend());
}

TEST_F(Adversarial, InvalidIdsInBulk) {
  // Every third token has an id outside [0, E) of every kind: counted, zero contribution.
  LayerConfig c = test::make_config(32, 16, 256, 8);
  c.routing.kind = RoutingKind::precomputed;
  c.routing.renormalize = false;
  test::Options o;
  o.ids = test::Ids::invalid;
  FUSEDMOE_TEST_REQUIRE_SUPPORT(backend(), c, o);
  const Problem p(c, 4096, o);
  ASSERT_GT(p.invalid_id_count(), 1000);
  test::expect_matches_reference(p, backend());
}

// Non-finite and huge router rows on several experts of a large grouped layer: ids stay in
// range and distinct, out is fully written and the guards hold; huge but finite values match
// the reference outright.
class PlantedLogits : public Adversarial, public ::testing::WithParamInterface<float> {};

TEST_P(PlantedLogits, InRouterWeights) {
  const float v = GetParam();
  for (const LayerConfig& c :
       {test::deepseek_like(48, 24, 256, 8, 8, 4), test::gpt_oss_like(48, 24, 128, 4),
        test::make_config(48, 24, 256, 8)}) {
    SCOPED_TRACE(test::describe_config(c));
    Problem p(c, 500);
    HostTensor& router = p.edit_weights().router;
    for (std::int64_t e : {std::int64_t{0}, std::int64_t{5}, std::int64_t{37}, std::int64_t{64},
                           std::int64_t{100}, c.experts - 1}) {
      for (std::int64_t h = 0; h < c.hidden; ++h) {
        core::store_f32(router.cref().dtype, router.bytes(), e * c.hidden + h,
                        h % 3 == 0 ? v : (e % 2 == 0 ? -v : v));
      }
    }
    if (std::isfinite(v)) {
      test::expect_matches_reference(p, backend());
      continue;
    }
    for (Backend b : {Backend::reference, backend()}) {
      SCOPED_TRACE(to_string(b));
      const RunResult r = test::run_backend(p, b);
      ASSERT_TRUE(r.status.ok()) << r.status.to_string();
      for (std::int64_t t = 0; t < p.tokens; ++t) test::expect_valid_ids(r, t, c);
      EXPECT_EQ(test::count_poison(r.out.cref()), 0);
      EXPECT_TRUE(r.out.guard_intact());
    }
  }
}

TEST_P(PlantedLogits, InOneTokensX) {
  // A whole row of x at the value: that token's logits are all non-finite (or huge); the
  // other tokens match a clean run bit for bit.
  const float v = GetParam();
  const LayerConfig c = test::deepseek_like(48, 24, 256, 8, 8, 4);
  Problem clean(c, 300);
  Problem dirty(c, 300, clean.options, clean.weights_ptr);
  for (std::int64_t h = 0; h < c.hidden; ++h) dirty.set_x(150, h, v);
  Result<Layer> layer = test::make_layer(c, clean.weights().view(), backend());
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const RunResult a = test::run_layer(layer.value(), clean, c.dtype);
  const RunResult b = test::run_layer(layer.value(), dirty, c.dtype);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  test::expect_valid_ids(b, 150, c);
  EXPECT_EQ(test::count_poison(b.out.cref()), 0);
  for (std::int64_t t = 0; t < 300; ++t) {
    if (t == 150) continue;
    ASSERT_EQ(a.out.row_bytes(t), b.out.row_bytes(t)) << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Adversarial, PlantedLogits,
                         ::testing::Values(std::numeric_limits<float>::quiet_NaN(),
                                           std::numeric_limits<float>::infinity(),
                                           -std::numeric_limits<float>::infinity(), 1e30f, -1e30f),
                         [](const auto& info) {
                           const float v = info.param;
                           if (std::isnan(v)) return std::string("nan");
                           if (std::isinf(v)) return std::string(v > 0 ? "inf" : "minus_inf");
                           return std::string(v > 0 ? "huge" : "minus_huge");
                         });

TEST_F(Adversarial, LargePrefill65536Tokens) {
  LayerConfig c = test::make_config(24, 12, 64, 8);
  c.shared = {8, true};
  FUSEDMOE_TEST_REQUIRE_SUPPORT(backend(), c);
  const Problem p(c, 65536);
  test::expect_matches_reference(p, backend());
}

TEST_F(Adversarial, LargePrefillPrecomputedOneExpert) {
  // 65536 · 8 slots, all with expert 255 in them: one expert's group holds 65536 rows.
  LayerConfig c = test::make_config(16, 8, 256, 8, DType::f32);
  c.routing.kind = RoutingKind::precomputed;
  c.routing.renormalize = false;
  test::Options o;
  o.ids = test::Ids::one_expert;
  FUSEDMOE_TEST_REQUIRE_SUPPORT(backend(), c, o);
  test::expect_matches_reference(Problem(c, 65536, o), backend());
}

TEST_F(Adversarial, WorkspaceSizeGrowsWithTokensAndNeverWraps) {
  WorkloadOptions wo;
  const LayerConfig small = test::deepseek_like(16, 8, 256, 8, 8, 4);
  Result<Layer> layer = test::make_layer(small, HostWeights::random(small, wo).view(), backend());
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  std::size_t previous = 0;
  for (std::int64_t t : {std::int64_t{1}, std::int64_t{4096}, std::int64_t{65536},
                         std::int64_t{1} << 20, std::int64_t{1} << 26, std::int64_t{1} << 40,
                         std::int64_t{1} << 62, std::numeric_limits<std::int64_t>::max()}) {
    const std::size_t bytes = layer->workspace_size(t);
    EXPECT_GE(bytes, previous) << "T = " << t;
    previous = bytes;
    // at least the routed activations, [T·k, I] f32, or "cannot be had"
    const long double floor = static_cast<long double>(t) * 8 * 8 * 4;
    EXPECT_TRUE(static_cast<long double>(bytes) >= floor ||
                bytes == std::numeric_limits<std::size_t>::max())
        << "T = " << t << ": " << bytes << " bytes";
  }
}

TEST_F(Adversarial, HugeTokenCountWithAliasedRowsIsRefused) {
  // x and out of 2^40 rows that all alias one row (stride 0) are valid descriptors of small
  // buffers; the workspace they would need cannot exist, so forward must refuse them instead of
  // trusting a wrapped-around size.
  const LayerConfig c = test::make_config(16, 8, 8, 2);
  WorkloadOptions wo;
  const HostWeights w = HostWeights::random(c, wo);
  Result<Layer> layer = test::make_layer(c, w.view(), backend());
  ASSERT_TRUE(layer.ok());
  if (layer->backend() == Backend::cuda) GTEST_SKIP() << "host buffers only";
  std::vector<std::uint16_t> x(16), out(16);
  std::vector<std::byte> ws(1 << 20);
  for (std::int64_t t :
       {std::int64_t{1} << 40, std::int64_t{1} << 60, std::numeric_limits<std::int64_t>::max()}) {
    ForwardArgs a;
    a.x = make_strided_rows(static_cast<const void*>(x.data()), DType::bf16, t, 16, 0);
    a.out = make_strided_rows(static_cast<void*>(out.data()), DType::bf16, t, 16, 0);
    a.workspace = {ws.data(), ws.size()};
    const Status s = layer->forward(a);
    EXPECT_FALSE(s.ok()) << "T = " << t;
  }
}

}  // namespace
}  // namespace fusedmoe
