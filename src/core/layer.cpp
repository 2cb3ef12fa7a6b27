#include "fusedmoe/layer.hpp"

#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/check.hpp"

namespace fusedmoe {

struct Layer::Impl {
  LayerConfig config;
  PackedWeights weights;
  const core::BackendOps* ops = nullptr;
  std::vector<std::byte> owned_workspace;  // for the convenience forward()
};

Layer::Layer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Layer::Layer(Layer&&) noexcept = default;
Layer& Layer::operator=(Layer&&) noexcept = default;
Layer::~Layer() = default;

Result<Layer> Layer::create(const LayerConfig& config, PackedWeights&& weights) {
  FUSEDMOE_RETURN_IF_ERROR(validate(config));
  if (weights.impl() == nullptr) {
    return Status{StatusCode::invalid_argument, "weights are empty (not from pack_weights)"};
  }
  if (!(weights.impl()->config == config)) {
    return Status{StatusCode::invalid_argument,
                  "weights were packed for another layer configuration"};
  }
  const core::BackendOps* ops = core::backend_ops(weights.backend());
  if (ops == nullptr) {
    return Status{StatusCode::unsupported_arch,
                  "the " + std::string(to_string(weights.backend())) + " backend is not available"};
  }
  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>();
  } catch (const std::bad_alloc&) {
    return Status{StatusCode::out_of_memory, "allocating the layer failed"};
  }
  impl->config = config;
  impl->weights = std::move(weights);
  impl->ops = ops;
  return Layer(std::move(impl));
}

const LayerConfig& Layer::config() const { return impl_->config; }
Backend Layer::backend() const { return impl_->ops->kind(); }

namespace {

// The backends index the T·k routing slots with int32; a larger T could have no workspace anyway
// (and its size arithmetic would overflow).
bool too_many_tokens(const LayerConfig& c, std::int64_t tokens) {
  return tokens > std::numeric_limits<std::int32_t>::max() / c.top_k;
}

}  // namespace

std::size_t Layer::workspace_size(std::int64_t tokens) const {
  if (tokens <= 0) return 0;
  if (too_many_tokens(impl_->config, tokens)) return std::numeric_limits<std::size_t>::max();
  return impl_->ops->workspace_size(impl_->config, tokens);
}

std::string Layer::describe(std::int64_t tokens) const {
  if (tokens <= 0 || too_many_tokens(impl_->config, tokens)) return {};
  return impl_->ops->describe(impl_->config, tokens);
}

std::int64_t Layer::take_invalid_id_count() const {
  return impl_->weights.impl()->take_invalid_ids();
}

namespace {

Status check_forward(const LayerConfig& c, const core::BackendOps& ops, const ForwardArgs& a,
                     std::size_t workspace_needed) {
  const Device dev = ops.device();
  if (!a.x.present()) return {StatusCode::null_pointer, "x is required but absent"};
  if (a.x.rank != 2) {
    return {StatusCode::invalid_shape,
            "x must be [T, " + std::to_string(c.hidden) + "], got " + describe(a.x)};
  }
  const std::int64_t t = a.x.size(0), k = c.top_k;
  FUSEDMOE_RETURN_IF_ERROR(core::check_tensor(a.x, {"x", {t, c.hidden}, {c.dtype}, dev, true}));
  if (too_many_tokens(c, t)) {
    return {StatusCode::invalid_shape,
            "x has " + std::to_string(t) +
                " rows: T · top_k must be below 2^31, got top_k = " + std::to_string(k)};
  }
  const DType out_dtype = ops.writes_f32_out() && a.out.dtype == DType::f32 ? DType::f32 : c.dtype;
  FUSEDMOE_RETURN_IF_ERROR(
      core::check_tensor(a.out, {"out", {t, c.hidden}, {out_dtype}, dev, true, true}));
  if (c.routing.kind == RoutingKind::precomputed) {
    FUSEDMOE_RETURN_IF_ERROR(
        core::check_tensor(a.topk_ids, {"topk_ids", {t, k}, {DType::i32}, dev}));
    FUSEDMOE_RETURN_IF_ERROR(
        core::check_tensor(a.topk_weights, {"topk_weights", {t, k}, {DType::f32}, dev}));
  } else {
    FUSEDMOE_RETURN_IF_ERROR(
        core::check_absent(a.topk_ids, "topk_ids", "routing is not precomputed"));
    FUSEDMOE_RETURN_IF_ERROR(
        core::check_absent(a.topk_weights, "topk_weights", "routing is not precomputed"));
  }
  FUSEDMOE_RETURN_IF_ERROR(
      core::check_optional_tensor(a.ids_out, {"ids_out", {t, k}, {DType::i32}, dev, false, true}));
  FUSEDMOE_RETURN_IF_ERROR(core::check_optional_tensor(
      a.weights_out, {"weights_out", {t, k}, {DType::f32}, dev, false, true}));
  if (a.magnitude_out.present() && ops.kind() != Backend::reference) {
    return {StatusCode::unsupported_config,
            "magnitude_out is computed by the reference backend only, not by " +
                std::string(to_string(ops.kind()))};
  }
  FUSEDMOE_RETURN_IF_ERROR(core::check_optional_tensor(
      a.magnitude_out, {"magnitude_out", {t, c.hidden}, {DType::f32}, dev, false, true}));
  if (a.workspace.bytes < workspace_needed) {
    return {StatusCode::workspace_too_small,
            "workspace has " + std::to_string(a.workspace.bytes) + " bytes, forward needs " +
                std::to_string(workspace_needed) + " for T = " + std::to_string(t)};
  }
  if (workspace_needed > 0 && a.workspace.data == nullptr) {
    return {StatusCode::null_pointer, "workspace.data is null"};
  }
  if (reinterpret_cast<std::uintptr_t>(a.workspace.data) % kWorkspaceAlignment != 0) {
    return {StatusCode::misaligned,
            "workspace.data must be aligned to " + std::to_string(kWorkspaceAlignment) + " bytes"};
  }
  return {};
}

}  // namespace

Status Layer::forward(const ForwardArgs& args) const {
  const std::int64_t tokens = args.x.rank == 2 ? args.x.size(0) : 0;
  FUSEDMOE_RETURN_IF_ERROR(check_forward(impl_->config, *impl_->ops, args, workspace_size(tokens)));
  if (tokens == 0) return {};
  try {
    return impl_->ops->forward(*impl_->weights.impl(), args);
  } catch (const std::bad_alloc&) {
    return {StatusCode::out_of_memory, "forward ran out of memory"};
  }
}

Status Layer::forward(ConstTensorRef x, TensorRef out) {
  const std::int64_t tokens = x.rank == 2 ? x.size(0) : 0;
  const std::size_t needed = workspace_size(tokens);
  if (impl_->ops->device().kind != DeviceKind::cpu) {
    return {StatusCode::invalid_argument,
            "forward(x, out) owns a host workspace: pass ForwardArgs with a device workspace"};
  }
  try {
    if (impl_->owned_workspace.size() < needed) impl_->owned_workspace.resize(needed);
  } catch (const std::bad_alloc&) {
    return {StatusCode::out_of_memory,
            "allocating a " + std::to_string(needed) + "-byte workspace failed"};
  }
  ForwardArgs args;
  args.x = x;
  args.out = out;
  args.workspace = {impl_->owned_workspace.data(), impl_->owned_workspace.size()};
  return forward(args);
}

}  // namespace fusedmoe
