// The CUDA backend's edge cases, small enough to run under compute-sanitizer (memcheck,
// racecheck, synccheck; CONTRACT.md): odd token counts on odd sizes, precomputed ids out of range,
// all tokens on one expert, idle experts, NaN router logits and NaN tokens, strided rows, gated
// shared expert, gpt-oss and DeepSeek-like routing, fp16 and bf16. Every run goes through
// test::run_layer, so outputs are poisoned and guarded on the device. Well under a minute on a
// GPU without a sanitizer; skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace fusedmoe {
namespace {

using test::Problem;
using test::RunResult;

LayerConfig with_shared(LayerConfig c, std::int64_t inter, bool gated) {
  c.shared = {inter, gated};
  return c;
}

LayerConfig precomputed(LayerConfig c) {
  c.routing.kind = RoutingKind::precomputed;
  return c;
}

// The odd-sized layers of the token sweep: H 1408, I 733, E 60, k 4. Their weights are drawn
// once per config and shared by the token counts.
LayerConfig odd_layer(DType dt) {
  LayerConfig c = test::make_config(1408, 733, 60, 4, dt);
  if (dt == DType::f16) {
    // Qwen-like: not renormalised, sigmoid-gated shared expert
    c.routing.renormalize = false;
    c.shared = {352, true};
  }
  return c;
}

std::shared_ptr<HostWeights> odd_layer_weights(const LayerConfig& c) {
  static std::map<std::string, std::shared_ptr<HostWeights>> cache;
  std::shared_ptr<HostWeights>& w = cache[test::describe_config(c)];
  if (w == nullptr) {
    WorkloadOptions o;
    o.seed = (test::fnv1a("cuda_edge odd layer") ^ test::base_seed()) & 0xffffffffffffull;
    w = std::make_shared<HostWeights>(HostWeights::random(c, o));
  }
  return w;
}

struct EdgeCase {
  std::string name;
  LayerConfig config;
  std::int64_t tokens = 1;
  test::Options options;
  bool odd_layer = false;  // weights from odd_layer_weights()
};

void PrintTo(const EdgeCase& c, std::ostream* os) { *os << c.name; }

test::Options ids(test::Ids kind, double s) {
  test::Options o;
  o.ids = kind;
  o.zipf_s = s;
  return o;
}

std::vector<EdgeCase> edge_cases() {
  std::vector<EdgeCase> v;
  for (DType dt : {DType::bf16, DType::f16}) {
    for (std::int64_t t : {1, 3, 17, 129}) {
      v.push_back({"OddSizes_T" + std::to_string(t) + "_" + std::string(to_string(dt)),
                   odd_layer(dt),
                   t,
                   {},
                   true});
    }
  }
  const LayerConfig pre = precomputed(test::make_config(256, 136, 60, 4));
  v.push_back({"PrecomputedInvalidIds", pre, 129, ids(test::Ids::invalid, 1.0)});
  v.push_back({"PrecomputedInvalidIdsF16",
               with_shared(precomputed(test::make_config(256, 136, 8, 2, DType::f16)), 72, true),
               17, ids(test::Ids::invalid, 0.0)});
  v.push_back({"PrecomputedOneExpert", pre, 129, ids(test::Ids::one_expert, 1.0)});
  // k = 1 and every slot on one expert: one expert has all tokens, the others none
  v.push_back({"PrecomputedAllTokensOneExpert", precomputed(test::make_config(256, 136, 8, 1)), 129,
               ids(test::Ids::one_expert, 0.0)});
  v.push_back({"PrecomputedIdleExperts", pre, 129, ids(test::Ids::half_experts, 1.0)});
  v.push_back({"PrecomputedDuplicateIds", pre, 33, ids(test::Ids::duplicate, 0.0)});
  {
    test::Options o;
    o.x_row_stride = 256 + 40;
    o.out_row_stride = 256 + 3;
    v.push_back({"StridedXOut_f16", test::make_config(256, 136, 16, 4, DType::f16), 129, o});
    v.push_back(
        {"StridedXOut_bf16", with_shared(test::make_config(256, 136, 16, 4), 64, true), 17, o});
  }
  v.push_back({"SharedGated", with_shared(test::make_config(256, 136, 60, 4), 200, true), 129});
  // Zipf-skewed (s = 1.2) over 8 experts, 160 slots: on sm_90a the first experts' rows (> 32) run
  // on 64-row tiles and the tail's on narrow tiles, in the same launch; the shared expert's 80
  // rows on one partial 96-row tile (sm_90a) or two 64-row ones
  v.push_back({"NarrowAndRowTiles",
               with_shared(precomputed(test::make_config(256, 136, 8, 2)), 200, false), 80,
               ids(test::Ids::zipf, 1.2)});
  // Shaped for 96-row tiles (sm_90a, 49..96 rows per expert, which these small layers take when
  // FUSEDMOE_CUDA_TILE=m96n128 forces them: CTest's cuda_edge_test_cuda_m96): every expert of 2
  // with all 90 tokens in one partial tile, and the shared expert's 90 rows too; then
  // Zipf-skewed over 8 experts at 64 per expert on average, so that some experts take two tiles
  // and some a few rows
  v.push_back({"Tiles96_AllTokens",
               with_shared(precomputed(test::make_config(256, 136, 2, 2)), 200, true), 90,
               ids(test::Ids::zipf, 0.0)});
  v.push_back({"Tiles96_AllTokens_f16",
               with_shared(test::make_config(256, 136, 2, 2, DType::f16), 72, false), 90});
  v.push_back({"Tiles96_Zipf", precomputed(test::make_config(256, 136, 8, 2)), 256,
               ids(test::Ids::zipf, 0.8)});
  // The same for the m96n256 tile (CTest's cuda_edge_test_cuda_m96n256), in layers
  // whose packed rows are whole 256-row blocks in both GEMMs (the ones above fall back to
  // m96n128 there): all tokens on each of 2 experts with a gated shared expert, and Zipf over 8
  v.push_back({"Tiles96x256_AllTokens",
               with_shared(precomputed(test::make_config(256, 128, 2, 2)), 256, true), 90,
               ids(test::Ids::zipf, 0.0)});
  v.push_back({"Tiles96x256_Zipf_f16", precomputed(test::make_config(512, 384, 8, 2, DType::f16)),
               256, ids(test::Ids::zipf, 0.8)});
  v.push_back({"GptOss", test::gpt_oss_like(256, 136, 32, 4), 129});
  {
    test::Options big;
    big.x_scale = 6.0f;  // many gate/up values cross the clamp
    v.push_back({"GptOssClamped_f16", test::gpt_oss_like(256, 136, 32, 4, DType::f16), 65, big});
  }
  v.push_back({"DeepSeekGrouped",
               with_shared(test::deepseek_like(256, 136, 64, 8, 8, 4), 128, false), 129});
  v.push_back({"DeepSeekGrouped_f16", test::deepseek_like(256, 136, 64, 8, 8, 4, DType::f16), 3});
  // H odd: rows are not 16-byte aligned
  v.push_back({"OddHidden_f16", test::make_config(733, 136, 8, 2, DType::f16), 17});
  v.push_back({"OddHidden_bf16", test::make_config(733, 136, 8, 2), 3});
  return v;
}

class CudaEdge : public ::testing::TestWithParam<EdgeCase> {
 protected:
  void SetUp() override { FUSEDMOE_TEST_REQUIRE_BACKEND(Backend::cuda); }
};

TEST_P(CudaEdge, MatchesReference) {
  const EdgeCase& e = GetParam();
  const Problem p(e.config, e.tokens, e.options,
                  e.odd_layer ? odd_layer_weights(e.config) : nullptr);
  test::expect_matches_reference(p, Backend::cuda);
}

INSTANTIATE_TEST_SUITE_P(CudaEdge, CudaEdge, ::testing::ValuesIn(edge_cases()),
                         [](const auto& info) { return info.param.name; });

// ---- cases that need more than one run
// --------------------------------------------------------------

class CudaEdgeRuns : public ::testing::Test {
 protected:
  void SetUp() override { FUSEDMOE_TEST_REQUIRE_BACKEND(Backend::cuda); }
};

TEST_F(CudaEdgeRuns, NaNRouterRowGivesValidIds) {
  // router row 3 NaN: every token's logit for expert 3 is NaN
  for (const LayerConfig& c :
       {test::make_config(256, 136, 60, 4), test::deepseek_like(256, 136, 64, 8, 8, 4),
        test::gpt_oss_like(256, 136, 32, 4)}) {
    Problem p(c, 129);
    SCOPED_TRACE(p.describe());
    HostTensor& router = p.edit_weights().router;
    for (std::int64_t h = 0; h < c.hidden; ++h) {
      core::store_f32(router.cref().dtype, router.bytes(), 3 * c.hidden + h,
                      std::numeric_limits<float>::quiet_NaN());
    }
    const RunResult r = test::run_backend(p, Backend::cuda);
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    for (std::int64_t t = 0; t < p.tokens; ++t) expect_valid_ids(r, t, c);
    EXPECT_EQ(test::count_poison(r.out.cref()), 0) << "out not fully written";
    EXPECT_TRUE(r.out.guard_intact() && r.ids_out.guard_intact() && r.weights_out.guard_intact());
  }
}

TEST_F(CudaEdgeRuns, NaNTokenStaysInItsRow) {
  const LayerConfig c = with_shared(test::make_config(256, 136, 60, 4), 64, true);
  const std::int64_t t_count = 129, bad = 70;
  const Problem p(c, t_count);
  Problem q(c, t_count, p.options, p.weights_ptr);
  for (std::int64_t h = 0; h < c.hidden; h += 7) {
    q.set_x(bad, h, std::numeric_limits<float>::quiet_NaN());
  }
  SCOPED_TRACE(q.describe());
  Result<Layer> layer = test::make_layer(c, p.weights().view(), Backend::cuda);
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const RunResult clean = test::run_layer(layer.value(), p, c.dtype);
  const RunResult dirty = test::run_layer(layer.value(), q, c.dtype);
  ASSERT_TRUE(clean.status.ok() && dirty.status.ok()) << dirty.status.to_string();
  expect_valid_ids(dirty, bad, c);
  EXPECT_EQ(test::count_poison(dirty.out.cref()), 0) << "the bad row must still be written";
  EXPECT_TRUE(dirty.out.guard_intact());
  for (std::int64_t t = 0; t < t_count; ++t) {
    if (t == bad) continue;
    ASSERT_TRUE(dirty.out.row_bytes(t) == clean.out.row_bytes(t)) << "token " << t << " changed";
    ASSERT_TRUE(dirty.ids_out.row_bytes(t) == clean.ids_out.row_bytes(t)) << "token " << t;
  }
}

TEST_F(CudaEdgeRuns, InvalidIdsAreCountedAcrossForwards) {
  const LayerConfig c = precomputed(test::make_config(256, 136, 60, 4));
  const Problem p(c, 129, ids(test::Ids::invalid, 0.0));
  const std::int64_t want = p.invalid_id_count();
  ASSERT_GT(want, 0);
  Result<Layer> layer = test::make_layer(c, p.weights().view(), Backend::cuda);
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const RunResult once = test::run_layer(layer.value(), p, c.dtype);
  const RunResult thrice = test::run_layer(layer.value(), p, c.dtype, 3);
  ASSERT_TRUE(once.status.ok() && thrice.status.ok()) << thrice.status.to_string();
  EXPECT_EQ(once.invalid_ids, want);
  EXPECT_EQ(thrice.invalid_ids, 3 * want);
  EXPECT_EQ(layer->take_invalid_id_count(), 0);
  // running again on the same buffers rewrites the same bits
  EXPECT_TRUE(test::output_bytes(once) == test::output_bytes(thrice));
}

}  // namespace
}  // namespace fusedmoe
