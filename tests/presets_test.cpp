// The preset registry against MODELS.md, field by field (the table below is MODELS.md's table
// transcribed by hand, not read from the registry), plus with_experts, weight_bytes and the
// contract's token counts, and the C ABI's view of the same presets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fusedmoe/fusedmoe.h"
#include "fusedmoe/presets.hpp"
#include "test_util.hpp"

namespace fusedmoe {
namespace {

struct Expected {
  const char* name;
  std::int64_t hidden, inter, experts, k;
  std::int64_t shared_inter;
  bool shared_gated;
  RoutingKind kind;
  std::optional<bool> renormalize;  // nullopt: MODELS.md does not say (or it has no meaning)
  int n_group, topk_group;
  std::optional<float> scaling;
  bool router_bias, correction_bias;
  Activation activation;
  bool expert_bias;
};

void PrintTo(const Expected& e, std::ostream* os) { *os << e.name; }

constexpr auto kSoftmax = RoutingKind::softmax_topk;
constexpr auto kSigmoid = RoutingKind::sigmoid_topk;
constexpr auto kTopkSoftmax = RoutingKind::topk_softmax;
constexpr auto kSwiglu = Activation::swiglu;

const Expected kModels[] = {
    // name, H, I, E, k, shared I, gated, routing, renormalize, n_group, topk_group, scaling,
    // router_bias, correction_bias, activation, expert_bias
    {"mixtral-8x7b", 4096, 14336, 8, 2, 0, false, kSoftmax, true, 1, 1, 1.0f, false, false, kSwiglu,
     false},
    {"mixtral-8x22b", 6144, 16384, 8, 2, 0, false, kSoftmax, true, 1, 1, 1.0f, false, false,
     kSwiglu, false},
    {"qwen1.5-moe-a2.7b", 2048, 1408, 60, 4, 5632, true, kSoftmax, false, 1, 1, 1.0f, false, false,
     kSwiglu, false},
    {"qwen2-57b-a14b", 3584, 2560, 64, 8, 20480, true, kSoftmax, false, 1, 1, 1.0f, false, false,
     kSwiglu, false},
    {"qwen3-30b-a3b", 2048, 768, 128, 8, 0, false, kSoftmax, true, 1, 1, 1.0f, false, false,
     kSwiglu, false},
    {"olmoe-1b-7b", 2048, 1024, 64, 8, 0, false, kSoftmax, false, 1, 1, 1.0f, false, false, kSwiglu,
     false},
    // DeepSeek-V3: n_group 8, topk_group 4, routed_scaling_factor 2.5, norm_topk_prob, bias
    {"deepseek-v3", 7168, 2048, 256, 8, 2048, false, kSigmoid, true, 8, 4, 2.5f, false, true,
     kSwiglu, false},
    // gpt-oss: top-k of logits + bias, softmax over the k, clamped SwiGLU, GEMM biases
    {"gpt-oss-20b", 2880, 2880, 32, 4, 0, false, kTopkSoftmax, std::nullopt, 1, 1, 1.0f, true,
     false, Activation::swiglu_oss, true},
    {"seed-mixtral-8x7b", 4096, 14336, 8, 2, 0, false, kSoftmax, true, 1, 1, 1.0f, false, false,
     kSwiglu, false},
    {"seed-mixtral-8x22b", 6144, 16384, 8, 2, 0, false, kSoftmax, true, 1, 1, 1.0f, false, false,
     kSwiglu, false},
    // "plain sigmoid top-k": no groups, no correction bias, no shared expert
    {"seed-deepseek-v3", 7168, 2048, 256, 8, 0, false, kSigmoid, std::nullopt, 1, 1, std::nullopt,
     false, false, kSwiglu, false},
    // "Qwen2-MoE-57B" with E 64, k 4, no shared expert
    {"seed-qwen2-moe-57b", 3584, 2560, 64, 4, 0, false, kSoftmax, std::nullopt, 1, 1, 1.0f, false,
     false, kSwiglu, false},
};

class PresetRegistry : public ::testing::TestWithParam<Expected> {};

TEST_P(PresetRegistry, MatchesModelsMd) {
  const Expected& e = GetParam();
  const Preset* p = find_preset(e.name);
  ASSERT_NE(p, nullptr) << "no preset named " << e.name;
  EXPECT_EQ(p->name, e.name);
  EXPECT_FALSE(p->summary.empty());
  const LayerConfig& c = p->config;
  EXPECT_EQ(c.hidden, e.hidden);
  EXPECT_EQ(c.intermediate, e.inter);
  EXPECT_EQ(c.experts, e.experts);
  EXPECT_EQ(c.top_k, e.k);
  EXPECT_EQ(c.shared.intermediate, e.shared_inter);
  EXPECT_EQ(c.shared.gated, e.shared_gated);
  EXPECT_EQ(c.routing.kind, e.kind);
  if (e.renormalize) {
    EXPECT_EQ(c.routing.renormalize, *e.renormalize);
  }
  EXPECT_EQ(c.routing.n_group, e.n_group);
  EXPECT_EQ(c.routing.topk_group, e.topk_group);
  if (e.scaling) {
    EXPECT_EQ(c.routing.scaling, *e.scaling);
  }
  EXPECT_EQ(c.routing.router_bias, e.router_bias);
  EXPECT_EQ(c.routing.correction_bias, e.correction_bias);
  EXPECT_EQ(c.activation, e.activation);
  if (c.activation == Activation::swiglu_oss) {
    EXPECT_EQ(c.swiglu_limit, 7.0f);
    EXPECT_EQ(c.swiglu_alpha, 1.702f);
  }
  EXPECT_EQ(c.expert_bias, e.expert_bias);
  EXPECT_EQ(c.dtype, DType::bf16) << "presets are bf16 at real sizes";
  const Status s = validate(c);
  EXPECT_TRUE(s.ok()) << s.to_string();
}

TEST_P(PresetRegistry, CApiSeesTheSameConfig) {
  const Expected& e = GetParam();
  fusedmoe_layer_config cc;
  ASSERT_EQ(fusedmoe_preset_config(e.name, &cc), FUSEDMOE_OK) << fusedmoe_last_error();
  const LayerConfig& c = find_preset(e.name)->config;
  EXPECT_EQ(cc.struct_size, sizeof(fusedmoe_layer_config));
  EXPECT_EQ(cc.hidden, c.hidden);
  EXPECT_EQ(cc.intermediate, c.intermediate);
  EXPECT_EQ(cc.experts, c.experts);
  EXPECT_EQ(cc.top_k, c.top_k);
  EXPECT_EQ(cc.routing_kind, static_cast<std::int32_t>(c.routing.kind));
  EXPECT_EQ(cc.renormalize != 0, c.routing.renormalize);
  EXPECT_EQ(cc.n_group, c.routing.n_group);
  EXPECT_EQ(cc.topk_group, c.routing.topk_group);
  EXPECT_EQ(cc.scaling, c.routing.scaling);
  EXPECT_EQ(cc.router_bias != 0, c.routing.router_bias);
  EXPECT_EQ(cc.correction_bias != 0, c.routing.correction_bias);
  EXPECT_EQ(cc.activation, static_cast<std::int32_t>(c.activation));
  EXPECT_EQ(cc.expert_bias != 0, c.expert_bias);
  EXPECT_EQ(cc.shared_intermediate, c.shared.intermediate);
  EXPECT_EQ(cc.shared_gated != 0, c.shared.gated);
  EXPECT_EQ(cc.dtype, static_cast<std::int32_t>(c.dtype));
}

INSTANTIATE_TEST_SUITE_P(Presets, PresetRegistry, ::testing::ValuesIn(kModels),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           std::replace_if(
                               n.begin(), n.end(),
                               [](unsigned char ch) { return std::isalnum(ch) == 0; }, '_');
                           return n;
                         });

TEST(Presets, RegistryHoldsExactlyTheseNamesOnce) {
  std::set<std::string> want;
  for (const Expected& e : kModels) want.insert(e.name);
  std::set<std::string> have;
  for (const Preset& p : presets()) {
    EXPECT_TRUE(have.insert(std::string(p.name)).second) << "duplicate preset " << p.name;
  }
  EXPECT_EQ(have, want);
  EXPECT_EQ(fusedmoe_preset_count(), static_cast<std::int32_t>(presets().size()));
  for (std::int32_t i = 0; i < fusedmoe_preset_count(); ++i) {
    ASSERT_NE(fusedmoe_preset_name(i), nullptr);
    EXPECT_EQ(have.count(fusedmoe_preset_name(i)), 1u) << fusedmoe_preset_name(i);
  }
  EXPECT_EQ(find_preset("mixtral"), nullptr);
  EXPECT_EQ(find_preset(""), nullptr);
}

TEST(Presets, SeedPresetsExist) {
  int seeds = 0;
  for (const Preset& p : presets()) seeds += p.name.starts_with("seed-") ? 1 : 0;
  EXPECT_EQ(seeds, 4);
}

// ---- with_experts
// -----------------------------------------------------------------------------------

TEST(Presets, WithExpertsDeepSeekKeepsEightGroups) {
  const LayerConfig full = find_preset("deepseek-v3")->config;
  const LayerConfig small = with_experts(full, 32);
  EXPECT_EQ(small.experts, 32);
  EXPECT_EQ(small.routing.n_group, 8);  // 8 groups of 4
  EXPECT_EQ(small.routing.topk_group, 4);
  EXPECT_EQ(small.top_k, 8);
  EXPECT_TRUE(validate(small).ok()) << validate(small).to_string();
  LayerConfig rest = small;
  rest.experts = full.experts;
  EXPECT_EQ(rest, full) << "only the expert count may change";
}

TEST(Presets, WithExpertsRoundsUpToWhatRoutingNeeds) {
  const LayerConfig ds = find_preset("deepseek-v3")->config;
  // fewer than 2 per group, or than k in the kept groups: rounded up to 8 groups of 2
  EXPECT_EQ(with_experts(ds, 1).experts, 16);
  EXPECT_EQ(with_experts(ds, 9).experts, 16);
  EXPECT_EQ(with_experts(ds, 33).experts, 40);  // a multiple of n_group
  // softmax presets: at least k experts, otherwise as asked
  const LayerConfig qwen = find_preset("qwen2-57b-a14b")->config;
  EXPECT_EQ(with_experts(qwen, 3).experts, 8);
  EXPECT_EQ(with_experts(qwen, 13).experts, 13);
  EXPECT_EQ(with_experts(find_preset("mixtral-8x7b")->config, 4).experts, 4);
}

TEST(Presets, WithExpertsIsValidForEveryPresetAndTarget) {
  for (const Preset& p : presets()) {
    for (std::int64_t target : {1, 2, 3, 5, 8, 16, 17, 32, 64, 100, 256}) {
      const LayerConfig c = with_experts(p.config, target);
      SCOPED_TRACE(std::string(p.name) + " -> " + std::to_string(target));
      EXPECT_TRUE(validate(c).ok()) << validate(c).to_string();
      EXPECT_GE(c.experts, target);
      EXPECT_EQ(c.experts % c.routing.n_group, 0);
      EXPECT_GE(c.experts, c.top_k);
      EXPECT_EQ(c.top_k, p.config.top_k);
      EXPECT_EQ(c.routing, p.config.routing);
    }
    // the preset's own count is kept
    EXPECT_EQ(with_experts(p.config, p.config.experts).experts, p.config.experts);
  }
}

// ---- sizes -------------------------------------------------------------------------------------

TEST(Presets, WeightBytes) {
  // routed experts (gate, up, down) + shared expert in bf16, plus the router
  for (const Preset& p : presets()) {
    const LayerConfig& c = p.config;
    const double experts =
        3.0 * c.hidden * (c.experts * c.intermediate + c.shared.intermediate) * 2;
    const auto bytes = static_cast<double>(weight_bytes(c));
    EXPECT_GE(bytes, experts) << p.name;
    EXPECT_LE(bytes, experts * 1.01) << p.name;
  }
  EXPECT_NEAR(static_cast<double>(weight_bytes(find_preset("deepseek-v3")->config)) / 1e9, 22.6,
              0.2);
  EXPECT_NEAR(static_cast<double>(weight_bytes(find_preset("mixtral-8x22b")->config)) / 1e9, 4.83,
              0.05);
}

TEST(Presets, ContractTokenCounts) {
  const std::vector<std::int64_t> want = {0,   1,   2,   3,    7,    16,   17,  33,
                                          127, 128, 129, 1000, 4095, 4096, 4097};
  const auto have = contract_token_counts();
  EXPECT_EQ(std::vector<std::int64_t>(have.begin(), have.end()), want);
  const auto bench = bench_token_counts();
  EXPECT_FALSE(bench.empty());
  EXPECT_TRUE(std::is_sorted(bench.begin(), bench.end()));
}

// ---- presets at small sizes run end to end
// --------------------------------------------------------

class PresetShrunk : public ::testing::TestWithParam<Expected> {};

TEST_P(PresetShrunk, RoutingAndActivationMatchReference) {
  // The preset's routing, activation, biases and shared expert on small H and I (and experts
  // reduced by with_experts): cheap enough for every build, including the sanitizers.
  LayerConfig c = with_experts(find_preset(GetParam().name)->config, 32);
  c.hidden = 136;
  c.intermediate = 52;
  if (c.shared.intermediate > 0) c.shared.intermediate = 44;
  const test::Problem p(c, 64);
  test::expect_matches_reference(p);
}

INSTANTIATE_TEST_SUITE_P(Presets, PresetShrunk, ::testing::ValuesIn(kModels), [](const auto& info) {
  std::string n = info.param.name;
  std::replace_if(
      n.begin(), n.end(), [](unsigned char ch) { return std::isalnum(ch) == 0; }, '_');
  return n;
});

}  // namespace
}  // namespace fusedmoe
