// The configuration of one MoE layer: sizes, routing, activation, shared expert and dtype.
// Every routing scheme and activation of the models fusedmoe supports is a value of these types;
// model presets (presets.hpp) are just named LayerConfigs. The exact math is in MODELS.md.
#pragma once

#include <cstdint>
#include <string_view>

#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe {

enum class RoutingKind : std::uint8_t {
  // softmax over all E logits (fp32), top-k, optionally renormalised to sum 1
  // (Mixtral, Qwen, OLMoE).
  softmax_topk,
  // s = sigmoid(logits); selection on s (+ correction bias if any), optionally restricted to the
  // best `topk_group` of `n_group` groups (group score = sum of its top-2); weights are the
  // unbiased s, renormalised by (sum + 1e-20) when asked, times `scaling` (DeepSeek-V3, seed).
  sigmoid_topk,
  // top-k of the logits (+ router bias), then softmax over the k chosen (gpt-oss).
  topk_softmax,
  // the caller supplies ids [T, k] int32 and weights [T, k] fp32 to forward().
  precomputed,
};

struct Routing {
  RoutingKind kind = RoutingKind::softmax_topk;
  bool renormalize = true;       // softmax_topk, sigmoid_topk: divide the k weights by their sum
  int n_group = 1;               // sigmoid_topk: experts split into n_group equal groups
  int topk_group = 1;            // sigmoid_topk: groups kept (1 <= topk_group <= n_group)
  float scaling = 1.0f;          // weights multiplied by this (DeepSeek-V3's routed_scaling_factor)
  bool router_bias = false;      // logits = x·Wᵀ + b (gpt-oss)
  bool correction_bias = false;  // sigmoid_topk: a bias [E] added for selection only
  friend bool operator==(const Routing&, const Routing&) = default;
};

enum class Activation : std::uint8_t {
  swiglu,  // silu(gate) · up
  geglu,   // gelu_tanh(gate) · up
  // gpt-oss: g = min(gate, limit), u = clamp(up, -limit, limit), (u + 1) · g · sigmoid(alpha · g)
  swiglu_oss,
};

struct SharedExpert {
  std::int64_t intermediate = 0;  // 0: no shared expert
  bool gated = false;             // output scaled by sigmoid(x · g), g: [H] (Qwen2-MoE)
  friend bool operator==(const SharedExpert&, const SharedExpert&) = default;
};

struct LayerConfig {
  std::int64_t hidden = 0;        // H
  std::int64_t intermediate = 0;  // I, per routed expert
  std::int64_t experts = 0;       // E
  std::int64_t top_k = 0;         // k
  Routing routing{};
  Activation activation = Activation::swiglu;
  float swiglu_limit = 7.0f;    // swiglu_oss only
  float swiglu_alpha = 1.702f;  // swiglu_oss only
  bool expert_bias = false;     // the expert GEMMs add biases (gpt-oss)
  SharedExpert shared{};        // runs on every token with the routed activation (no biases)
  DType dtype = DType::bf16;    // of x, out and the expert weights: f32, f16 or bf16
  friend bool operator==(const LayerConfig&, const LayerConfig&) = default;
};

// Checks the configuration on its own (sizes, routing parameters, dtype).
Status validate(const LayerConfig& config);

std::string_view to_string(RoutingKind kind);
std::string_view to_string(Activation activation);

}  // namespace fusedmoe
