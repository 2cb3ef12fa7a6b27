#include "fusedmoe/config.hpp"

#include <cmath>
#include <string>

namespace fusedmoe {

std::string_view to_string(RoutingKind kind) {
  switch (kind) {
    case RoutingKind::softmax_topk:
      return "softmax_topk";
    case RoutingKind::sigmoid_topk:
      return "sigmoid_topk";
    case RoutingKind::topk_softmax:
      return "topk_softmax";
    case RoutingKind::precomputed:
      return "precomputed";
  }
  return "unknown_routing";
}

std::string_view to_string(Activation activation) {
  switch (activation) {
    case Activation::swiglu:
      return "swiglu";
    case Activation::geglu:
      return "geglu";
    case Activation::swiglu_oss:
      return "swiglu_oss";
  }
  return "unknown_activation";
}

namespace {

// Sizes beyond these are not MoE layers anyone runs, and keep every index product in int64.
constexpr std::int64_t kMaxDim = std::int64_t{1} << 20;
constexpr std::int64_t kMaxExperts = 1 << 16;

Status config_error(const std::string& message) {
  return {StatusCode::unsupported_config, message};
}

Status validate_routing(const LayerConfig& c) {
  const Routing& r = c.routing;
  switch (r.kind) {
    case RoutingKind::softmax_topk:
    case RoutingKind::sigmoid_topk:
    case RoutingKind::topk_softmax:
    case RoutingKind::precomputed:
      break;
    default:
      return {StatusCode::invalid_argument, "routing.kind is not a RoutingKind"};
  }
  if (!std::isfinite(r.scaling) || r.scaling == 0.0f) {
    return {StatusCode::invalid_argument,
            "routing.scaling must be finite and non-zero, got " + std::to_string(r.scaling)};
  }
  if (r.kind != RoutingKind::sigmoid_topk) {
    if (r.n_group != 1 || r.topk_group != 1) {
      return config_error("routing.n_group/topk_group apply to sigmoid_topk only; " +
                          std::string(to_string(r.kind)) + " needs 1 and 1");
    }
    if (r.correction_bias) {
      return config_error("routing.correction_bias applies to sigmoid_topk only");
    }
  }
  if (r.kind == RoutingKind::precomputed && r.router_bias) {
    return config_error("routing.router_bias has no meaning with precomputed routing");
  }
  if (r.n_group < 1 || c.experts % r.n_group != 0) {
    return config_error("routing.n_group (" + std::to_string(r.n_group) +
                        ") must be >= 1 and divide the expert count (" + std::to_string(c.experts) +
                        ")");
  }
  if (r.topk_group < 1 || r.topk_group > r.n_group) {
    return config_error("routing.topk_group (" + std::to_string(r.topk_group) +
                        ") must be in [1, n_group = " + std::to_string(r.n_group) + "]");
  }
  const std::int64_t group_size = c.experts / r.n_group;
  if (r.n_group > 1 && group_size < 2) {
    return config_error(
        "grouped routing scores a group by its top 2 experts: experts / n_group = " +
        std::to_string(group_size) + " must be >= 2");
  }
  if (c.top_k > r.topk_group * group_size) {
    return config_error("top_k (" + std::to_string(c.top_k) + ") exceeds the experts in the " +
                        std::to_string(r.topk_group) + " kept groups (" +
                        std::to_string(r.topk_group * group_size) + ")");
  }
  return {};
}

}  // namespace

Status validate(const LayerConfig& c) {
  if (c.dtype != DType::f32 && c.dtype != DType::f16 && c.dtype != DType::bf16) {
    return {StatusCode::invalid_dtype,
            "dtype must be f32, f16 or bf16, got " + std::string(to_string(c.dtype))};
  }
  if (c.hidden < 1 || c.hidden > kMaxDim) {
    return config_error("hidden must be in [1, 2^20], got " + std::to_string(c.hidden));
  }
  if (c.intermediate < 1 || c.intermediate > kMaxDim) {
    return config_error("intermediate must be in [1, 2^20], got " + std::to_string(c.intermediate));
  }
  if (c.experts < 1 || c.experts > kMaxExperts) {
    return config_error("experts must be in [1, 65536], got " + std::to_string(c.experts));
  }
  if (c.top_k < 1 || c.top_k > c.experts) {
    return config_error("top_k must be in [1, experts = " + std::to_string(c.experts) + "], got " +
                        std::to_string(c.top_k));
  }
  if (c.shared.intermediate < 0 || c.shared.intermediate > kMaxDim) {
    return config_error("shared.intermediate must be in [0, 2^20] (0: none), got " +
                        std::to_string(c.shared.intermediate));
  }
  if (c.shared.gated && c.shared.intermediate == 0) {
    return config_error("shared.gated is set but there is no shared expert (intermediate = 0)");
  }
  switch (c.activation) {
    case Activation::swiglu:
    case Activation::geglu:
    case Activation::swiglu_oss:
      break;
    default:
      return {StatusCode::invalid_argument, "activation is not an Activation"};
  }
  // Unused by the other activations, but NaN would make the config unequal to itself, and
  // Layer::create compares the packed weights' config with the one it is given.
  if (std::isnan(c.swiglu_limit) || std::isnan(c.swiglu_alpha)) {
    return {StatusCode::invalid_argument, "swiglu_limit and swiglu_alpha must not be NaN"};
  }
  if (c.activation == Activation::swiglu_oss &&
      (!std::isfinite(c.swiglu_limit) || c.swiglu_limit <= 0 || !std::isfinite(c.swiglu_alpha))) {
    return {StatusCode::invalid_argument,
            "swiglu_oss needs a finite swiglu_limit > 0 and a finite swiglu_alpha"};
  }
  return validate_routing(c);
}

}  // namespace fusedmoe
