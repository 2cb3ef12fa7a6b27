#include "fusedmoe/presets.hpp"

#include <algorithm>
#include <array>

namespace fusedmoe {

namespace {

constexpr LayerConfig softmax_layer(std::int64_t h, std::int64_t i, std::int64_t e, std::int64_t k,
                                    bool renormalize) {
  LayerConfig c;
  c.hidden = h;
  c.intermediate = i;
  c.experts = e;
  c.top_k = k;
  c.routing.kind = RoutingKind::softmax_topk;
  c.routing.renormalize = renormalize;
  return c;
}

constexpr LayerConfig with_gated_shared(LayerConfig c, std::int64_t shared_intermediate) {
  c.shared = {shared_intermediate, true};
  return c;
}

constexpr LayerConfig deepseek_v3() {
  LayerConfig c = softmax_layer(7168, 2048, 256, 8, true);
  c.routing = {RoutingKind::sigmoid_topk, true, 8, 4, 2.5f, false, true};
  c.shared = {2048, false};
  return c;
}

constexpr LayerConfig seed_deepseek_v3() {
  LayerConfig c = softmax_layer(7168, 2048, 256, 8, true);
  c.routing.kind = RoutingKind::sigmoid_topk;
  return c;
}

constexpr LayerConfig gpt_oss_20b() {
  LayerConfig c = softmax_layer(2880, 2880, 32, 4, false);
  c.routing.kind = RoutingKind::topk_softmax;
  c.routing.router_bias = true;
  c.activation = Activation::swiglu_oss;
  c.expert_bias = true;
  return c;
}

constexpr std::array kPresets = {
    Preset{"mixtral-8x7b", "Mixtral 8x7B: softmax, top-2, renormalised",
           softmax_layer(4096, 14336, 8, 2, true)},
    Preset{"mixtral-8x22b", "Mixtral 8x22B: softmax, top-2, renormalised",
           softmax_layer(6144, 16384, 8, 2, true)},
    Preset{"qwen1.5-moe-a2.7b",
           "Qwen1.5-MoE-A2.7B: softmax, top-4, not renormalised, sigmoid-gated shared expert",
           with_gated_shared(softmax_layer(2048, 1408, 60, 4, false), 5632)},
    Preset{"qwen2-57b-a14b",
           "Qwen2-57B-A14B: softmax, top-8, not renormalised, sigmoid-gated shared expert",
           with_gated_shared(softmax_layer(3584, 2560, 64, 8, false), 20480)},
    Preset{"qwen3-30b-a3b", "Qwen3-30B-A3B: softmax, top-8, renormalised",
           softmax_layer(2048, 768, 128, 8, true)},
    Preset{"olmoe-1b-7b", "OLMoE-1B-7B: softmax, top-8, not renormalised",
           softmax_layer(2048, 1024, 64, 8, false)},
    Preset{"deepseek-v3",
           "DeepSeek-V3: sigmoid grouped top-8 (8 groups, 4 kept), correction bias, x2.5, "
           "ungated shared expert",
           deepseek_v3()},
    Preset{"gpt-oss-20b",
           "gpt-oss-20b: top-4 of biased logits then softmax, clamped SwiGLU, biases",
           gpt_oss_20b()},
    Preset{"seed-mixtral-8x7b", "seed paper's Mixtral-8x7B: softmax, top-2, renormalised",
           softmax_layer(4096, 14336, 8, 2, true)},
    Preset{"seed-mixtral-8x22b", "seed paper's Mixtral-8x22B: softmax, top-2, renormalised",
           softmax_layer(6144, 16384, 8, 2, true)},
    Preset{
        "seed-deepseek-v3",
        "seed paper's DeepSeek-V3: plain sigmoid top-8, renormalised, no groups or shared expert",
        seed_deepseek_v3()},
    Preset{"seed-qwen2-moe-57b",
           "seed paper's Qwen2-MoE-57B: softmax, top-4, not renormalised, no shared expert",
           softmax_layer(3584, 2560, 64, 4, false)},
};

constexpr std::array<std::int64_t, 15> kContractTokens = {0,   1,   2,   3,    7,    16,   17,  33,
                                                          127, 128, 129, 1000, 4095, 4096, 4097};
constexpr std::array<std::int64_t, 6> kBenchTokens = {1, 16, 64, 256, 1024, 4096};

}  // namespace

std::span<const Preset> presets() { return kPresets; }

const Preset* find_preset(std::string_view name) {
  const auto it = std::find_if(kPresets.begin(), kPresets.end(),
                               [&](const Preset& p) { return p.name == name; });
  return it == kPresets.end() ? nullptr : &*it;
}

LayerConfig with_experts(const LayerConfig& config, std::int64_t experts) {
  LayerConfig c = config;
  const std::int64_t groups = c.routing.n_group;
  // Two experts per group at least (grouped scoring takes a group's top 2), enough for k in the
  // kept groups, and a whole number per group.
  std::int64_t per_group = (std::max<std::int64_t>(experts, 1) + groups - 1) / groups;
  if (groups > 1) per_group = std::max<std::int64_t>(per_group, 2);
  const std::int64_t kept = c.routing.topk_group;
  per_group = std::max(per_group, (c.top_k + kept - 1) / kept);
  c.experts = per_group * groups;
  return c;
}

std::int64_t weight_bytes(const LayerConfig& c) {
  const auto es = static_cast<std::int64_t>(dtype_size(c.dtype));
  std::int64_t bytes = c.experts * 3 * c.hidden * c.intermediate * es;
  bytes += 3 * c.hidden * c.shared.intermediate * es;
  bytes += c.experts * c.hidden * 4;  // router, f32
  return bytes;
}

std::span<const std::int64_t> contract_token_counts() { return kContractTokens; }
std::span<const std::int64_t> bench_token_counts() { return kBenchTokens; }

}  // namespace fusedmoe
