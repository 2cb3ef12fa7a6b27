// libFuzzer harness: layer configurations and weight sets, through fusedmoe::validate,
// pack_weights and Layer::create, and through the C ABI's structs (fusedmoe_layer_config with any
// bytes and any struct_size, fusedmoe_weights). Properties besides "no crash, no out-of-bounds":
// - a config validate() accepts keeps the invariants every backend relies on;
// - the C ABI accepts exactly the configs validate() accepts;
// - a small valid config with well-formed random weights packs, creates and runs on the
//   reference and the CPU backend (a valid call never fails);
// - weights with one or two descriptors changed (fuzz_tensor.hpp) are accepted or refused, never
//   read out of bounds.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "fusedmoe/fusedmoe.h"
#include "fusedmoe/layer.hpp"
#include "fusedmoe/workload.hpp"
#include "fuzz_tensor.hpp"

namespace fusedmoe::fuzz {
namespace {

float any_float(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 3)) {
    case 0:
      return 1.0f;
    case 1:
      return in.ConsumeFloatingPointInRange(-10.0f, 10.0f);
    case 2: {
      const std::uint32_t bits = in.ConsumeIntegral<std::uint32_t>();
      float f = 0;
      std::memcpy(&f, &bits, 4);
      return f;  // NaN and Inf too
    }
    default:
      return 0.0f;
  }
}

std::int64_t any_size(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 3)) {
    case 0:
      return in.ConsumeIntegralInRange<std::int64_t>(0, 24);
    case 1:
      return in.ConsumeIntegralInRange<std::int64_t>(-2, 300);
    case 2:
      return std::int64_t{1} << in.ConsumeIntegralInRange(0, 62);
    default:
      return in.ConsumeIntegral<std::int64_t>();
  }
}

LayerConfig any_config(FuzzedDataProvider& in) {
  LayerConfig c;
  c.hidden = any_size(in);
  c.intermediate = any_size(in);
  c.experts = any_size(in);
  c.top_k = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(0, 9) : any_size(in);
  c.routing.kind = static_cast<RoutingKind>(in.ConsumeIntegralInRange(0, 5));
  c.routing.renormalize = in.ConsumeBool();
  c.routing.n_group = in.ConsumeBool() ? 1 : in.ConsumeIntegralInRange(-1, 9);
  c.routing.topk_group = in.ConsumeBool() ? 1 : in.ConsumeIntegralInRange(-1, 9);
  c.routing.scaling = any_float(in);
  c.routing.router_bias = in.ConsumeBool();
  c.routing.correction_bias = in.ConsumeBool();
  c.activation = static_cast<Activation>(in.ConsumeIntegralInRange(0, 4));
  c.swiglu_limit = in.ConsumeBool() ? 7.0f : any_float(in);
  c.swiglu_alpha = in.ConsumeBool() ? 1.702f : any_float(in);
  c.expert_bias = in.ConsumeBool();
  c.shared.intermediate = in.ConsumeBool() ? 0 : any_size(in);
  c.shared.gated = in.ConsumeBool();
  c.dtype = static_cast<DType>(in.ConsumeIntegralInRange(0, 4));
  return c;
}

// What validate() promises the backends.
void check_invariants(const LayerConfig& c) {
  const Routing& r = c.routing;
  const bool ok = c.hidden >= 1 && c.intermediate >= 1 && c.experts >= 1 && c.top_k >= 1 &&
                  c.top_k <= c.experts && c.shared.intermediate >= 0 && r.n_group >= 1 &&
                  c.experts % r.n_group == 0 && r.topk_group >= 1 && r.topk_group <= r.n_group &&
                  std::isfinite(r.scaling) && dtype_size(c.dtype) > 0 && c.dtype != DType::i32 &&
                  static_cast<int>(r.kind) <= 3 && static_cast<int>(c.activation) <= 2;
  FUSEDMOE_FUZZ_REQUIRE(ok);
}

fusedmoe_weights to_c(const WeightSet& w, std::vector<fusedmoe_tensor>& separate) {
  fusedmoe_weights cw;
  fusedmoe_weights_init(&cw);
  cw.layout = static_cast<std::int32_t>(w.experts.layout);
  cw.router = fuzz::to_c(w.router.weight);
  cw.router_bias = fuzz::to_c(w.router.bias);
  cw.correction_bias = fuzz::to_c(w.router.correction_bias);
  cw.gate_up = fuzz::to_c(w.experts.gate_up);
  cw.down = fuzz::to_c(w.experts.down);
  cw.gate_up_bias = fuzz::to_c(w.experts.gate_up_bias);
  cw.down_bias = fuzz::to_c(w.experts.down_bias);
  cw.shared_gate = fuzz::to_c(w.shared.gate);
  cw.shared_up = fuzz::to_c(w.shared.up);
  cw.shared_down = fuzz::to_c(w.shared.down);
  cw.shared_gate_weight = fuzz::to_c(w.shared.gate_weight);
  const std::size_t e = w.experts.w1.size();
  separate.clear();
  for (const auto* list : {&w.experts.w1, &w.experts.w3, &w.experts.w2}) {
    for (const ConstTensorRef& t : *list) separate.push_back(fuzz::to_c(t));
  }
  if (e > 0 && separate.size() == 3 * e) {
    cw.w1 = separate.data();
    cw.w3 = separate.data() + e;
    cw.w2 = separate.data() + 2 * e;
    cw.separate_count = static_cast<std::int64_t>(e);
  }
  return cw;
}

// Runs a small layer once on T tokens of random input (and valid precomputed routing).
Status run_once(const Layer& layer, std::int64_t t) {
  const LayerConfig& c = layer.config();
  HostTensor x(c.dtype, {t, c.hidden});
  x.randomize(Fill::gaussian, 3, 1);
  HostTensor out(c.dtype, {t, c.hidden});
  HostTensor ids(DType::i32, {t, c.top_k});
  HostTensor weights(DType::f32, {t, c.top_k});
  ForwardArgs a;
  a.x = x.cref();
  a.out = out.ref();
  if (c.routing.kind == RoutingKind::precomputed) {
    zipf_routing(t, c.experts, c.top_k, 1.0, 5, ids.ref(), weights.ref());
    a.topk_ids = ids.cref();
    a.topk_weights = weights.cref();
  }
  std::vector<std::byte> ws(layer.workspace_size(t));
  a.workspace = {ws.data(), ws.size()};
  return layer.forward(a);
}

bool small(const LayerConfig& c) {
  return c.hidden <= 48 && c.intermediate <= 48 && c.experts <= 24 && c.shared.intermediate <= 48;
}

}  // namespace
}  // namespace fusedmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fusedmoe;
  using namespace fusedmoe::fuzz;
  FuzzedDataProvider in(data, size);

  if (in.ConsumeBool()) {
    // The C ABI with a struct of any bytes: whatever it holds, create answers with a status.
    fusedmoe_layer_config raw;
    fusedmoe_layer_config_init(&raw);
    const std::vector<std::uint8_t> bytes = in.ConsumeBytes<std::uint8_t>(sizeof(raw));
    if (!bytes.empty()) std::memcpy(&raw, bytes.data(), bytes.size());
    if (in.ConsumeBool()) raw.struct_size = sizeof(raw);
    fusedmoe_weights w;
    fusedmoe_weights_init(&w);
    fusedmoe_layer* layer = nullptr;
    const fusedmoe_status s = fusedmoe_layer_create(&raw, &w, FUSEDMOE_BACKEND_CPU, &layer);
    // Expert weights are always required: an empty weight set is never accepted.
    FUSEDMOE_FUZZ_REQUIRE(s != FUSEDMOE_OK && layer == nullptr && fusedmoe_last_error()[0] != '\0');
    return 0;
  }

  const LayerConfig c = any_config(in);
  const Status v = validate(c);
  if (v.ok()) check_invariants(c);
  FUSEDMOE_FUZZ_REQUIRE(v.ok() || !v.message().empty());

  const WeightLayout layout = static_cast<WeightLayout>(in.ConsumeIntegralInRange(0, 3));
  const Backend backend = in.ConsumeBool() ? Backend::cpu : Backend::reference;
  const bool through_c = in.ConsumeBool();
  if (!v.ok() || !small(c)) {
    // The C ABI must refuse it too (with no weights it could not succeed anyway, but the
    // config is what it must name when validate() does).
    if (!v.ok()) {
      fusedmoe_layer_config cc = to_c(c);
      fusedmoe_weights w;
      fusedmoe_weights_init(&w);
      fusedmoe_layer* layer = nullptr;
      const fusedmoe_status s = fusedmoe_layer_create(&cc, &w, FUSEDMOE_BACKEND_CPU, &layer);
      FUSEDMOE_FUZZ_REQUIRE(s != FUSEDMOE_OK);
    }
    return 0;
  }

  WorkloadOptions o;
  o.seed = 11;
  o.layout = layout;
  HostWeights hw = HostWeights::random(c, o);
  WeightSet w = hw.view();

  // Optionally change one or two descriptors (the backing buffers live in `changed`).
  std::vector<FuzzTensor> changed;
  changed.reserve(2);
  const int n_changes = in.ConsumeIntegralInRange(0, 2);
  for (int i = 0; i < n_changes; ++i) {
    ConstTensorRef* targets[] = {
        &w.router.weight, &w.router.bias,          &w.router.correction_bias, &w.experts.gate_up,
        &w.experts.down,  &w.experts.gate_up_bias, &w.experts.down_bias,      &w.shared.gate,
        &w.shared.up,     &w.shared.down,          &w.shared.gate_weight};
    ConstTensorRef* target =
        targets[in.ConsumeIntegralInRange<std::size_t>(0, std::size(targets) - 1)];
    // An absent target gets a plausible shape to start from.
    const ConstTensorRef like =
        target->present() ? *target : make_tensor(target->data, c.dtype, {c.experts, c.hidden});
    changed.push_back(mutate(in, like));
    *target = changed.back().ref;
  }

  if (through_c) {
    std::vector<fusedmoe_tensor> separate;
    fusedmoe_layer_config cc = to_c(c);
    fusedmoe_weights cw = to_c(w, separate);
    fusedmoe_layer* layer = nullptr;
    const fusedmoe_status s =
        fusedmoe_layer_create(&cc, &cw, static_cast<fusedmoe_backend>(backend), &layer);
    if (s == FUSEDMOE_OK) {
      FUSEDMOE_FUZZ_REQUIRE(layer != nullptr);
      fusedmoe_layer_destroy(layer);
    } else {
      // a valid config with well-formed weights must be accepted
      if (n_changes == 0) std::fprintf(stderr, "refused: %s\n", fusedmoe_last_error());
      FUSEDMOE_FUZZ_REQUIRE(n_changes > 0);
    }
    return 0;
  }

  Result<PackedWeights> packed = pack_weights(c, w, backend);
  if (!packed.ok()) {
    FUSEDMOE_FUZZ_REQUIRE(n_changes > 0);
    return 0;
  }
  Result<Layer> layer = Layer::create(c, std::move(packed).value());
  FUSEDMOE_FUZZ_REQUIRE(layer.ok());
  const std::int64_t t = in.ConsumeIntegralInRange<std::int64_t>(0, 5);
  FUSEDMOE_FUZZ_REQUIRE(run_once(layer.value(), t).ok());
  return 0;
}
