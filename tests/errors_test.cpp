// Bad input gets its typed status (CONTRACT.md), with a message naming the argument, and a failed
// call touches nothing: x and the weights keep their bytes, out keeps its poison and its guards.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fusedmoe/device.hpp"
#include "fusedmoe/fusedmoe.h"
#include "fusedmoe/presets.hpp"
#include "test_util.hpp"

namespace fusedmoe {
namespace {

using test::GuardedOutput;

// Every byte of every tensor a HostWeights holds, to prove a failed call did not write them.
std::vector<std::byte> snapshot(HostWeights& w) {
  std::vector<std::byte> s;
  const auto add = [&](HostTensor& t) { s.insert(s.end(), t.bytes(), t.bytes() + t.size_bytes()); };
  for (HostTensor* t :
       {&w.router, &w.router_bias, &w.correction_bias, &w.gate_up, &w.down, &w.gate_up_bias,
        &w.down_bias, &w.shared_gate, &w.shared_up, &w.shared_down, &w.shared_gate_weight}) {
    add(*t);
  }
  for (auto* v : {&w.w1, &w.w3, &w.w2}) {
    for (HostTensor& t : *v) add(t);
  }
  return s;
}

void expect_status(const Status& s, StatusCode code, std::string_view names) {
  EXPECT_EQ(s.code(), code) << "got " << s.to_string();
  EXPECT_NE(s.message().find(names), std::string::npos)
      << "the message should name '" << names << "': " << s.to_string();
}

// A small valid layer (and its inputs) that each test breaks in one place.
class Errors : public ::testing::Test {
 protected:
  static constexpr std::int64_t kTokens = 5;

  void SetUp() override { build(base_config()); }

  static LayerConfig base_config() { return test::make_config(64, 24, 8, 2); }

  void build(const LayerConfig& c, WeightLayout layout = WeightLayout::gate_up_rows) {
    config = c;
    WorkloadOptions o;
    o.seed = test::case_seed();
    o.layout = layout;
    weights = HostWeights::random(c, o);
    x = HostTensor(c.dtype, {kTokens, c.hidden});
    x.randomize(Fill::gaussian, o.seed, 1000);
    out = GuardedOutput(c.dtype, kTokens, c.hidden);
    if (c.routing.kind == RoutingKind::precomputed) {
      ids = HostTensor(DType::i32, {kTokens, c.top_k});
      route_weights = HostTensor(DType::f32, {kTokens, c.top_k});
      zipf_routing(kTokens, c.experts, c.top_k, 1.0, o.seed, ids.ref(), route_weights.ref());
    }
  }

  // Packing `set` for `backend` fails with `code` and names `name`; nothing is written.
  void expect_pack_error(const WeightSet& set, StatusCode code, std::string_view name,
                         const LayerConfig* c = nullptr, Backend backend = Backend::cpu) {
    const std::vector<std::byte> before = snapshot(weights);
    Result<PackedWeights> packed = pack_weights(c != nullptr ? *c : config, set, backend);
    ASSERT_FALSE(packed.ok()) << "pack_weights accepted bad weights";
    expect_status(packed.status(), code, name);
    EXPECT_TRUE(snapshot(weights) == before) << "a failed pack_weights wrote its input";
  }

  Layer make(Backend backend) {
    Result<Layer> layer = test::make_layer(config, weights.view(), backend);
    EXPECT_TRUE(layer.ok()) << layer.status().to_string();
    return std::move(layer).value();
  }

  ForwardArgs valid_args(const Layer& layer) {
    workspace.assign(layer.workspace_size(kTokens) + 64, std::byte{0});
    ForwardArgs a;
    a.x = x.cref();
    a.out = out.ref();
    a.workspace = {workspace.data(), layer.workspace_size(kTokens)};
    if (config.routing.kind == RoutingKind::precomputed) {
      a.topk_ids = ids.cref();
      a.topk_weights = route_weights.cref();
    }
    return a;
  }

  // forward(a) fails with `code` naming `name`, on both CPU backends; x, the ids and the
  // weights keep their bytes and out stays poisoned inside intact guards.
  void expect_forward_error(const std::function<void(ForwardArgs&)>& edit, StatusCode code,
                            std::string_view name) {
    for (Backend backend : {Backend::reference, Backend::cpu}) {
      SCOPED_TRACE(to_string(backend));
      Layer layer = make(backend);
      ForwardArgs a = valid_args(layer);
      edit(a);
      const std::vector<std::byte> x_before(x.bytes(), x.bytes() + x.size_bytes());
      const std::vector<std::byte> ids_before(ids.bytes(), ids.bytes() + ids.size_bytes());
      const std::vector<std::byte> w_before = snapshot(weights);
      const Status s = layer.forward(a);
      expect_status(s, code, name);
      EXPECT_TRUE(std::vector<std::byte>(x.bytes(), x.bytes() + x.size_bytes()) == x_before);
      EXPECT_TRUE(std::vector<std::byte>(ids.bytes(), ids.bytes() + ids.size_bytes()) ==
                  ids_before);
      EXPECT_TRUE(snapshot(weights) == w_before);
      EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden) << "out was written";
      EXPECT_TRUE(out.guard_intact());
      EXPECT_EQ(layer.take_invalid_id_count(), 0);
    }
  }

  LayerConfig config;
  HostWeights weights;
  HostTensor x, ids, route_weights;
  GuardedOutput out{DType::bf16, 0, 0};
  std::vector<std::byte> workspace;
  HostTensor spare;  // storage for replacement tensors
};

ConstTensorRef reshaped(ConstTensorRef t, std::initializer_list<std::int64_t> shape) {
  return make_tensor(t.data, t.dtype, shape, t.device);
}

ConstTensorRef misaligned(ConstTensorRef t) {
  t.data = static_cast<const std::byte*>(t.data) + 1;
  return t;
}

// ---- the valid baseline really is valid
// -----------------------------------------------------------

TEST_F(Errors, BaselineIsAccepted) {
  for (Backend backend : {Backend::reference, Backend::cpu}) {
    Layer layer = make(backend);
    ForwardArgs a = valid_args(layer);
    out = GuardedOutput(backend == Backend::reference ? DType::f32 : config.dtype, kTokens,
                        config.hidden);
    a.out = out.ref();
    const Status s = layer.forward(a);
    EXPECT_TRUE(s.ok()) << s.to_string();
    EXPECT_EQ(test::count_poison(out.cref()), 0);
  }
}

// ---- configuration
// ---------------------------------------------------------------------------------

struct ConfigCase {
  const char* name;
  std::function<void(LayerConfig&)> edit;
  StatusCode code;
  const char* names;  // what the message must mention
};

void PrintTo(const ConfigCase& c, std::ostream* os) { *os << c.name; }

class BadConfig : public ::testing::TestWithParam<ConfigCase> {};

TEST_P(BadConfig, RejectedByValidatePackAndCreate) {
  LayerConfig good = test::make_config(64, 24, 8, 2);
  LayerConfig c = good;
  GetParam().edit(c);
  expect_status(validate(c), GetParam().code, GetParam().names);
  // the same status from pack_weights (weights of the good layer: the config is checked first)
  const HostWeights w = HostWeights::random(good, {test::case_seed(), Fill::gaussian, {}});
  for (Backend backend : {Backend::reference, Backend::cpu}) {
    Result<PackedWeights> packed = pack_weights(c, w.view(), backend);
    ASSERT_FALSE(packed.ok());
    EXPECT_EQ(packed.status().code(), GetParam().code) << packed.status().to_string();
  }
  // and from Layer::create, whatever the weights
  Result<PackedWeights> packed = pack_weights(good, w.view(), Backend::cpu);
  ASSERT_TRUE(packed.ok());
  Result<Layer> layer = Layer::create(c, std::move(packed).value());
  ASSERT_FALSE(layer.ok());
  EXPECT_EQ(layer.status().code(), GetParam().code);
}

const ConfigCase kBadConfigs[] = {
    {"KGreaterThanE", [](LayerConfig& c) { c.top_k = 9; }, StatusCode::unsupported_config, "top_k"},
    {"KZero", [](LayerConfig& c) { c.top_k = 0; }, StatusCode::unsupported_config, "top_k"},
    {"KNegative", [](LayerConfig& c) { c.top_k = -1; }, StatusCode::unsupported_config, "top_k"},
    {"EZero", [](LayerConfig& c) { c.experts = 0; }, StatusCode::unsupported_config, "experts"},
    {"HZero", [](LayerConfig& c) { c.hidden = 0; }, StatusCode::unsupported_config, "hidden"},
    {"HNegative", [](LayerConfig& c) { c.hidden = -64; }, StatusCode::unsupported_config, "hidden"},
    {"IZero", [](LayerConfig& c) { c.intermediate = 0; }, StatusCode::unsupported_config,
     "intermediate"},
    {"HTooLarge", [](LayerConfig& c) { c.hidden = std::int64_t{1} << 21; },
     StatusCode::unsupported_config, "hidden"},
    {"NGroupNotDividingE",
     [](LayerConfig& c) {
       c.routing = {RoutingKind::sigmoid_topk, true, 3, 1, 1.0f, false, false};
     },
     StatusCode::unsupported_config, "n_group"},
    {"TopkGroupAboveNGroup",
     [](LayerConfig& c) {
       c.routing = {RoutingKind::sigmoid_topk, true, 4, 5, 1.0f, false, false};
     },
     StatusCode::unsupported_config, "topk_group"},
    {"TopkGroupZero",
     [](LayerConfig& c) {
       c.routing = {RoutingKind::sigmoid_topk, true, 4, 0, 1.0f, false, false};
     },
     StatusCode::unsupported_config, "topk_group"},
    {"GroupsOfOneExpert",
     [](LayerConfig& c) {
       c.routing = {RoutingKind::sigmoid_topk, true, 8, 4, 1.0f, false, false};
     },
     StatusCode::unsupported_config, "n_group"},
    {"KAboveKeptExperts",
     [](LayerConfig& c) {
       c.top_k = 3;
       c.routing = {RoutingKind::sigmoid_topk, true, 4, 1, 1.0f, false, false};
     },
     StatusCode::unsupported_config, "top_k"},
    {"GroupsWithSoftmax", [](LayerConfig& c) { c.routing.n_group = 2; },
     StatusCode::unsupported_config, "n_group"},
    {"CorrectionBiasWithSoftmax", [](LayerConfig& c) { c.routing.correction_bias = true; },
     StatusCode::unsupported_config, "correction_bias"},
    {"RouterBiasWithPrecomputed",
     [](LayerConfig& c) {
       c.routing.kind = RoutingKind::precomputed;
       c.routing.router_bias = true;
     },
     StatusCode::unsupported_config, "router_bias"},
    {"ScalingZero", [](LayerConfig& c) { c.routing.scaling = 0.0f; }, StatusCode::invalid_argument,
     "scaling"},
    {"ScalingNaN", [](LayerConfig& c) { c.routing.scaling = std::nanf(""); },
     StatusCode::invalid_argument, "scaling"},
    {"RoutingKindOutOfRange", [](LayerConfig& c) { c.routing.kind = static_cast<RoutingKind>(17); },
     StatusCode::invalid_argument, "routing.kind"},
    {"ActivationOutOfRange", [](LayerConfig& c) { c.activation = static_cast<Activation>(9); },
     StatusCode::invalid_argument, "activation"},
    {"SwigluLimitNotPositive",
     [](LayerConfig& c) {
       c.activation = Activation::swiglu_oss;
       c.swiglu_limit = 0.0f;
     },
     StatusCode::invalid_argument, "swiglu_limit"},
    {"SharedGatedWithoutShared", [](LayerConfig& c) { c.shared.gated = true; },
     StatusCode::unsupported_config, "shared.gated"},
    {"SharedNegative", [](LayerConfig& c) { c.shared.intermediate = -1; },
     StatusCode::unsupported_config, "shared.intermediate"},
    {"DtypeI32", [](LayerConfig& c) { c.dtype = DType::i32; }, StatusCode::invalid_dtype, "dtype"},
};

INSTANTIATE_TEST_SUITE_P(Errors, BadConfig, ::testing::ValuesIn(kBadConfigs),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- routed expert weights ---------------------------------------------------------------------

TEST_F(Errors, GateUpWrongRank) {
  WeightSet s = weights.view();
  s.experts.gate_up = reshaped(s.experts.gate_up, {8 * 48, 64});
  expect_pack_error(s, StatusCode::invalid_shape, "experts.gate_up");
}

TEST_F(Errors, GateUpWrongExpertCount) {
  WeightSet s = weights.view();
  s.experts.gate_up = reshaped(s.experts.gate_up, {4, 96, 64});
  expect_pack_error(s, StatusCode::invalid_shape, "experts.gate_up");
}

TEST_F(Errors, IntermediateNotWhatWeightsSay) {
  // weights of I = 24 offered to a layer of I = 20: the sizes disagree
  LayerConfig c = config;
  c.intermediate = 20;
  expect_pack_error(weights.view(), StatusCode::invalid_shape, "experts.gate_up", &c);
}

TEST_F(Errors, HiddenNotWhatWeightsSay) {
  LayerConfig c = config;
  c.hidden = 72;
  expect_pack_error(weights.view(), StatusCode::invalid_shape, "experts.gate_up", &c);
}

TEST_F(Errors, DownWrongShape) {
  WeightSet s = weights.view();
  s.experts.down = reshaped(s.experts.down, {8, 24, 64});  // [E, I, H] is interleaved_cols' down
  expect_pack_error(s, StatusCode::invalid_shape, "experts.down");
}

TEST_F(Errors, DownWrongRank) {
  WeightSet s = weights.view();
  s.experts.down = reshaped(s.experts.down, {8, 64, 24, 1});
  expect_pack_error(s, StatusCode::invalid_shape, "experts.down");
}

TEST_F(Errors, InterleavedColsWithRowLayoutDown) {
  build(config, WeightLayout::interleaved_cols);
  WeightSet s = weights.view();
  s.experts.down = reshaped(s.experts.down, {8, 64, 24});
  expect_pack_error(s, StatusCode::invalid_shape, "experts.down");
}

TEST_F(Errors, InterleavedColsGateUpInRowLayout) {
  build(config, WeightLayout::interleaved_cols);
  WeightSet s = weights.view();
  s.experts.gate_up = reshaped(s.experts.gate_up, {8, 48, 64});
  expect_pack_error(s, StatusCode::invalid_shape, "experts.gate_up");
}

TEST_F(Errors, SeparateWrongCount) {
  build(config, WeightLayout::separate);
  WeightSet s = weights.view();
  s.experts.w1 = s.experts.w1.subspan(0, 7);
  expect_pack_error(s, StatusCode::invalid_shape, "experts.w1");
}

TEST_F(Errors, SeparateOneTensorWrongShape) {
  build(config, WeightLayout::separate);
  WeightSet s = weights.view();
  std::vector<ConstTensorRef> w3(s.experts.w3.begin(), s.experts.w3.end());
  w3[5] = reshaped(w3[5], {64, 24});
  s.experts.w3 = w3;
  expect_pack_error(s, StatusCode::invalid_shape, "experts.w3[5]");
}

TEST_F(Errors, SeparateDownTransposed) {
  build(config, WeightLayout::separate);
  WeightSet s = weights.view();
  std::vector<ConstTensorRef> w2(s.experts.w2.begin(), s.experts.w2.end());
  w2[0] = reshaped(w2[0], {24, 64});
  s.experts.w2 = w2;
  expect_pack_error(s, StatusCode::invalid_shape, "experts.w2[0]");
}

TEST_F(Errors, SeparateNullTensor) {
  build(config, WeightLayout::separate);
  WeightSet s = weights.view();
  std::vector<ConstTensorRef> w2(s.experts.w2.begin(), s.experts.w2.end());
  w2[3].data = nullptr;
  s.experts.w2 = w2;
  expect_pack_error(s, StatusCode::null_pointer, "experts.w2[3]");
}

TEST_F(Errors, SeparateWithFusedTensorAlsoGiven) {
  build(config, WeightLayout::separate);
  WeightSet s = weights.view();
  const HostWeights fused = HostWeights::random(config, {1, Fill::gaussian, {}});
  s.experts.gate_up = fused.gate_up.cref();
  expect_pack_error(s, StatusCode::invalid_argument, "experts.gate_up");
}

TEST_F(Errors, FusedLayoutWithSeparateTensorsAlsoGiven) {
  const HostWeights sep = HostWeights::random(config, {1, Fill::gaussian, WeightLayout::separate});
  WeightSet s = weights.view();
  s.experts.w1 = sep.view().experts.w1;
  expect_pack_error(s, StatusCode::invalid_argument, "w1");
}

TEST_F(Errors, LayoutOutOfRange) {
  WeightSet s = weights.view();
  s.experts.layout = static_cast<WeightLayout>(11);
  expect_pack_error(s, StatusCode::invalid_argument, "layout");
}

TEST_F(Errors, GateUpAbsent) {
  WeightSet s = weights.view();
  s.experts.gate_up = {};
  expect_pack_error(s, StatusCode::null_pointer, "experts.gate_up");
}

TEST_F(Errors, GateUpNullData) {
  WeightSet s = weights.view();
  s.experts.gate_up.data = nullptr;
  expect_pack_error(s, StatusCode::null_pointer, "experts.gate_up");
}

TEST_F(Errors, GateUpMisaligned) {
  WeightSet s = weights.view();
  s.experts.gate_up = misaligned(s.experts.gate_up);
  expect_pack_error(s, StatusCode::misaligned, "experts.gate_up");
}

TEST_F(Errors, DownMisalignedForReferenceToo) {
  WeightSet s = weights.view();
  s.experts.down = misaligned(s.experts.down);
  expect_pack_error(s, StatusCode::misaligned, "experts.down", nullptr, Backend::reference);
}

TEST_F(Errors, GateUpNegativeStride) {
  WeightSet s = weights.view();
  s.experts.gate_up.strides[1] = -s.experts.gate_up.strides[1];
  expect_pack_error(s, StatusCode::invalid_shape, "experts.gate_up");
}

TEST_F(Errors, GateUpOnCudaDevice) {
  WeightSet s = weights.view();
  s.experts.gate_up.device = Device::cuda(0);
  expect_pack_error(s, StatusCode::device_mismatch, "experts.gate_up");
}

TEST_F(Errors, ExpertWeightsOfAnotherDtype) {
  // f16 weights for a bf16 layer: same size, different format; not converted silently
  WeightSet s = weights.view();
  s.experts.gate_up.dtype = DType::f16;
  expect_pack_error(s, StatusCode::invalid_dtype, "experts.gate_up");
}

TEST_F(Errors, ExpertWeightsI32) {
  spare = HostTensor(DType::i32, {8, 48, 64});
  spare.randomize(Fill::integer, 3, 3);
  WeightSet s = weights.view();
  s.experts.gate_up = spare.cref();
  expect_pack_error(s, StatusCode::invalid_dtype, "experts.gate_up");
}

TEST_F(Errors, ExpertWeightsF32ForBf16Layer) {
  spare = HostTensor(DType::f32, {8, 64, 24});
  spare.randomize(Fill::gaussian, 3, 3);
  WeightSet s = weights.view();
  s.experts.down = spare.cref();
  expect_pack_error(s, StatusCode::invalid_dtype, "experts.down");
}

// ---- expert biases
// ---------------------------------------------------------------------------------

TEST_F(Errors, ExpertBiasGivenButNotConfigured) {
  LayerConfig with_bias = config;
  with_bias.expert_bias = true;
  const HostWeights b = HostWeights::random(with_bias, {1, Fill::gaussian, {}});
  WeightSet s = weights.view();
  s.experts.gate_up_bias = b.gate_up_bias.cref();
  expect_pack_error(s, StatusCode::invalid_argument, "experts.gate_up_bias");
}

TEST_F(Errors, ExpertBiasMissing) {
  LayerConfig c = config;
  c.expert_bias = true;
  build(c);
  WeightSet s = weights.view();
  s.experts.down_bias = {};
  expect_pack_error(s, StatusCode::null_pointer, "experts.down_bias");
}

TEST_F(Errors, ExpertBiasWrongShape) {
  LayerConfig c = config;
  c.expert_bias = true;
  build(c);
  WeightSet s = weights.view();
  s.experts.gate_up_bias = reshaped(s.experts.gate_up_bias, {8, 24});
  expect_pack_error(s, StatusCode::invalid_shape, "experts.gate_up_bias");
  s = weights.view();
  s.experts.down_bias = reshaped(s.experts.down_bias, {8 * 64});
  expect_pack_error(s, StatusCode::invalid_shape, "experts.down_bias");
}

// ---- router
// ----------------------------------------------------------------------------------------

TEST_F(Errors, RouterAbsent) {
  WeightSet s = weights.view();
  s.router.weight = {};
  expect_pack_error(s, StatusCode::null_pointer, "router.weight");
}

TEST_F(Errors, RouterWrongShape) {
  WeightSet s = weights.view();
  s.router.weight = reshaped(s.router.weight, {4, 128});
  expect_pack_error(s, StatusCode::invalid_shape, "router.weight");
  s.router.weight = reshaped(s.router.weight, {8 * 64});
  expect_pack_error(s, StatusCode::invalid_shape, "router.weight");
}

TEST_F(Errors, RouterI32) {
  WeightSet s = weights.view();
  spare = HostTensor(DType::i32, {8, 64});
  spare.randomize(Fill::integer, 3, 3);
  s.router.weight = spare.cref();
  expect_pack_error(s, StatusCode::invalid_dtype, "router.weight");
}

TEST_F(Errors, RouterGivenForPrecomputedRouting) {
  LayerConfig c = config;
  c.routing.kind = RoutingKind::precomputed;
  expect_pack_error(weights.view(), StatusCode::invalid_argument, "router.weight", &c);
}

TEST_F(Errors, RouterBiasGivenButNotConfigured) {
  spare = HostTensor(DType::f32, {8});
  spare.randomize(Fill::gaussian, 4, 4);
  WeightSet s = weights.view();
  s.router.bias = spare.cref();
  expect_pack_error(s, StatusCode::invalid_argument, "router.bias");
}

TEST_F(Errors, RouterBiasMissingOrWrongSize) {
  LayerConfig c = config;
  c.routing.router_bias = true;
  build(c);
  WeightSet s = weights.view();
  s.router.bias = {};
  expect_pack_error(s, StatusCode::null_pointer, "router.bias");
  s.router.bias = reshaped(weights.router_bias.cref(), {7});
  expect_pack_error(s, StatusCode::invalid_shape, "router.bias");
}

TEST_F(Errors, CorrectionBiasGivenButNotConfigured) {
  spare = HostTensor(DType::f32, {8});
  spare.randomize(Fill::gaussian, 4, 4);
  WeightSet s = weights.view();
  s.router.correction_bias = spare.cref();
  expect_pack_error(s, StatusCode::invalid_argument, "router.correction_bias");
}

TEST_F(Errors, CorrectionBiasWrongSize) {
  build(test::deepseek_like(64, 24, 8, 2, 4, 2));
  WeightSet s = weights.view();
  s.router.correction_bias = reshaped(s.router.correction_bias, {1, 8});
  expect_pack_error(s, StatusCode::invalid_shape, "router.correction_bias");
}

// ---- shared expert
// -----------------------------------------------------------------------------------

TEST_F(Errors, SharedWeightsGivenWithoutSharedExpert) {
  LayerConfig c = config;
  c.shared = {16, false};
  const HostWeights sh = HostWeights::random(c, {1, Fill::gaussian, {}});
  WeightSet s = weights.view();
  s.shared.up = sh.shared_up.cref();
  expect_pack_error(s, StatusCode::invalid_argument, "shared.up");
}

TEST_F(Errors, SharedWrongShapes) {
  LayerConfig c = config;
  c.shared = {16, true};
  build(c);
  WeightSet s = weights.view();
  s.shared.gate = reshaped(s.shared.gate, {64, 16});
  expect_pack_error(s, StatusCode::invalid_shape, "shared.gate");
  s = weights.view();
  s.shared.down = reshaped(s.shared.down, {16, 64});
  expect_pack_error(s, StatusCode::invalid_shape, "shared.down");
  s = weights.view();
  s.shared.gate_weight = reshaped(s.shared.gate_weight, {2, 32});
  expect_pack_error(s, StatusCode::invalid_shape, "shared.gate_weight");
  s = weights.view();
  s.shared.up = {};
  expect_pack_error(s, StatusCode::null_pointer, "shared.up");
}

TEST_F(Errors, SharedGateWeightGivenButUngated) {
  LayerConfig c = config;
  c.shared = {16, true};
  build(c);
  LayerConfig ungated = c;
  ungated.shared.gated = false;
  expect_pack_error(weights.view(), StatusCode::invalid_argument, "shared.gate_weight", &ungated);
}

TEST_F(Errors, SharedGateWeightMayBeRankOne) {
  // [H] and [1, H] are both documented; [H] must be accepted.
  LayerConfig c = config;
  c.shared = {16, true};
  build(c);
  WeightSet s = weights.view();
  s.shared.gate_weight = reshaped(s.shared.gate_weight, {64});
  Result<PackedWeights> packed = pack_weights(config, s, Backend::cpu);
  EXPECT_TRUE(packed.ok()) << packed.status().to_string();
}

TEST_F(Errors, RouterMayBeF32ForABf16Layer) {
  // router and gate weights may be f32 (weights.hpp); the layer still matches the reference
  HostTensor router(DType::f32, {8, 64});
  router.randomize(Fill::gaussian, 5, 5, 0.125f);
  WeightSet s = weights.view();
  s.router.weight = router.cref();
  for (Backend backend : {Backend::reference, Backend::cpu}) {
    Result<PackedWeights> packed = pack_weights(config, s, backend);
    EXPECT_TRUE(packed.ok()) << packed.status().to_string();
  }
}

// ---- backends and layers
// ------------------------------------------------------------------------------

TEST_F(Errors, CudaBackendOnThisBuildIsUnsupportedArch) {
  if (backend_available(Backend::cuda)) GTEST_SKIP() << "a CUDA backend is available here";
  EXPECT_EQ(best_backend(), Backend::cpu);
  expect_pack_error(weights.view(), StatusCode::unsupported_arch, "cuda", nullptr, Backend::cuda);
}

TEST_F(Errors, LayerCreateWithWeightsOfAnotherConfig) {
  Result<PackedWeights> packed = pack_weights(config, weights.view(), Backend::cpu);
  ASSERT_TRUE(packed.ok());
  LayerConfig other = config;
  other.top_k = 3;  // valid on its own, but not what the weights were packed for
  Result<Layer> layer = Layer::create(other, std::move(packed).value());
  ASSERT_FALSE(layer.ok());
  EXPECT_EQ(layer.status().code(), StatusCode::invalid_argument);
}

TEST_F(Errors, LayerCreateWithEmptyWeights) {
  Result<Layer> layer = Layer::create(config, PackedWeights{});
  ASSERT_FALSE(layer.ok());
  EXPECT_EQ(layer.status().code(), StatusCode::invalid_argument);
  // moved-from weights are empty too
  Result<PackedWeights> packed = pack_weights(config, weights.view(), Backend::cpu);
  ASSERT_TRUE(packed.ok());
  PackedWeights taken = std::move(packed).value();
  PackedWeights rest = std::move(taken);
  Result<Layer> again = Layer::create(config, std::move(taken));  // NOLINT(bugprone-use-after-move)
  EXPECT_FALSE(again.ok());
}

// ---- forward: x
// -------------------------------------------------------------------------------------

TEST_F(Errors, XAbsent) {
  expect_forward_error([](ForwardArgs& a) { a.x = {}; }, StatusCode::null_pointer, "x");
}

TEST_F(Errors, XNullData) {
  expect_forward_error([](ForwardArgs& a) { a.x.data = nullptr; }, StatusCode::null_pointer, "x");
}

TEST_F(Errors, XWrongRank) {
  expect_forward_error([](ForwardArgs& a) { a.x = reshaped(a.x, {5 * 64}); },
                       StatusCode::invalid_shape, "x");
  expect_forward_error(
      [](ForwardArgs& a) {
        a.x = reshaped(a.x, {1, 5, 64});
      },
      StatusCode::invalid_shape, "x");
}

TEST_F(Errors, XWrongHidden) {
  expect_forward_error(
      [](ForwardArgs& a) {
        a.x = reshaped(a.x, {10, 32});
      },
      StatusCode::invalid_shape, "x");
}

TEST_F(Errors, XNegativeTokens) {
  expect_forward_error(
      [](ForwardArgs& a) {
        a.x = reshaped(a.x, {-5, 64});
      },
      StatusCode::invalid_shape, "x");
}

TEST_F(Errors, XNonContiguousColumns) {
  expect_forward_error(
      [](ForwardArgs& a) {
        a.x = reshaped(a.x, {5, 32});
        a.x.strides = {64, 2};
        a.x.shape = {5, 64};
      },
      StatusCode::invalid_shape, "x");
}

TEST_F(Errors, XF32ForBf16Layer) {
  expect_forward_error(
      [this](ForwardArgs& a) {
        spare = HostTensor(DType::f32, {5, 64});
        spare.randomize(Fill::gaussian, 9, 9);
        a.x = spare.cref();
      },
      StatusCode::invalid_dtype, "x");
}

TEST_F(Errors, XMisaligned) {
  expect_forward_error([](ForwardArgs& a) { a.x = misaligned(a.x); }, StatusCode::misaligned, "x");
}

TEST_F(Errors, XOnCuda) {
  expect_forward_error([](ForwardArgs& a) { a.x.device = Device::cuda(0); },
                       StatusCode::device_mismatch, "x");
}

// ---- forward: out
// -----------------------------------------------------------------------------------

TEST_F(Errors, OutAbsent) {
  expect_forward_error([](ForwardArgs& a) { a.out = {}; }, StatusCode::null_pointer, "out");
}

TEST_F(Errors, OutNullData) {
  expect_forward_error([](ForwardArgs& a) { a.out.data = nullptr; }, StatusCode::null_pointer,
                       "out");
}

TEST_F(Errors, OutWrongTokens) {
  expect_forward_error([](ForwardArgs& a) { a.out.shape[0] = 4; }, StatusCode::invalid_shape,
                       "out");
}

TEST_F(Errors, OutWrongHidden) {
  expect_forward_error([](ForwardArgs& a) { a.out.shape[1] = 63; }, StatusCode::invalid_shape,
                       "out");
}

TEST_F(Errors, OutWrongRank) {
  expect_forward_error(
      [](ForwardArgs& a) {
        a.out.rank = 3;
        a.out.shape = {5, 64, 1, 0};
        a.out.strides = {64, 1, 1, 0};
      },
      StatusCode::invalid_shape, "out");
}

TEST_F(Errors, OutOfAnotherDtype) {
  // f16 out for a bf16 layer (both backends); the reference accepts only f32 besides
  expect_forward_error([](ForwardArgs& a) { a.out.dtype = DType::f16; }, StatusCode::invalid_dtype,
                       "out");
}

TEST_F(Errors, OutF32OnTheCpuBackend) {
  Layer layer = make(Backend::cpu);
  ForwardArgs a = valid_args(layer);
  GuardedOutput f32_out(DType::f32, kTokens, config.hidden);
  a.out = f32_out.ref();
  expect_status(layer.forward(a), StatusCode::invalid_dtype, "out");
  EXPECT_EQ(test::count_poison(f32_out.cref()), kTokens * config.hidden);
}

TEST_F(Errors, OutMisaligned) {
  expect_forward_error([](ForwardArgs& a) { a.out.data = static_cast<std::byte*>(a.out.data) + 1; },
                       StatusCode::misaligned, "out");
}

TEST_F(Errors, OutOnCuda) {
  expect_forward_error([](ForwardArgs& a) { a.out.device = Device::cuda(0); },
                       StatusCode::device_mismatch, "out");
}

// ---- forward: routing tensors
// -----------------------------------------------------------------------

TEST_F(Errors, TopkIdsGivenWithoutPrecomputedRouting) {
  ids = HostTensor(DType::i32, {kTokens, 2});
  ids.randomize(Fill::integer, 1, 1);
  expect_forward_error([this](ForwardArgs& a) { a.topk_ids = ids.cref(); },
                       StatusCode::invalid_argument, "topk_ids");
}

class PrecomputedErrors : public Errors {
 protected:
  void SetUp() override {
    LayerConfig c = base_config();
    c.routing.kind = RoutingKind::precomputed;
    build(c);
  }
};

TEST_F(PrecomputedErrors, IdsMissing) {
  expect_forward_error([](ForwardArgs& a) { a.topk_ids = {}; }, StatusCode::null_pointer,
                       "topk_ids");
}

TEST_F(PrecomputedErrors, WeightsMissing) {
  expect_forward_error([](ForwardArgs& a) { a.topk_weights = {}; }, StatusCode::null_pointer,
                       "topk_weights");
}

TEST_F(PrecomputedErrors, IdsWrongShape) {
  expect_forward_error(
      [](ForwardArgs& a) {
        a.topk_ids = reshaped(a.topk_ids, {2, 5});
      },
      StatusCode::invalid_shape, "topk_ids");
  expect_forward_error([](ForwardArgs& a) { a.topk_ids = reshaped(a.topk_ids, {10}); },
                       StatusCode::invalid_shape, "topk_ids");
}

TEST_F(PrecomputedErrors, WeightsWrongShape) {
  expect_forward_error(
      [](ForwardArgs& a) {
        a.topk_weights = reshaped(a.topk_weights, {5, 1});
      },
      StatusCode::invalid_shape, "topk_weights");
}

TEST_F(PrecomputedErrors, IdsNotInt32) {
  expect_forward_error([](ForwardArgs& a) { a.topk_ids.dtype = DType::f32; },
                       StatusCode::invalid_dtype, "topk_ids");
}

TEST_F(PrecomputedErrors, WeightsNotF32) {
  expect_forward_error([](ForwardArgs& a) { a.topk_weights.dtype = DType::i32; },
                       StatusCode::invalid_dtype, "topk_weights");
}

TEST_F(PrecomputedErrors, IdsMisalignedOrOnCuda) {
  expect_forward_error([](ForwardArgs& a) { a.topk_ids = misaligned(a.topk_ids); },
                       StatusCode::misaligned, "topk_ids");
  expect_forward_error([](ForwardArgs& a) { a.topk_weights.device = Device::cuda(1); },
                       StatusCode::device_mismatch, "topk_weights");
}

TEST_F(PrecomputedErrors, IdsNullData) {
  expect_forward_error([](ForwardArgs& a) { a.topk_ids.data = nullptr; }, StatusCode::null_pointer,
                       "topk_ids");
}

TEST_F(Errors, IdsOutWrongShapeOrDtype) {
  HostTensor bad(DType::i32, {kTokens, 3});
  expect_forward_error([&](ForwardArgs& a) { a.ids_out = bad.ref(); }, StatusCode::invalid_shape,
                       "ids_out");
  HostTensor f(DType::f32, {kTokens, 2});
  expect_forward_error([&](ForwardArgs& a) { a.ids_out = f.ref(); }, StatusCode::invalid_dtype,
                       "ids_out");
}

TEST_F(Errors, WeightsOutWrongShapeOrDtype) {
  HostTensor bad(DType::f32, {kTokens + 1, 2});
  expect_forward_error([&](ForwardArgs& a) { a.weights_out = bad.ref(); },
                       StatusCode::invalid_shape, "weights_out");
  HostTensor i(DType::i32, {kTokens, 2});
  expect_forward_error([&](ForwardArgs& a) { a.weights_out = i.ref(); }, StatusCode::invalid_dtype,
                       "weights_out");
  HostTensor ok(DType::f32, {kTokens, 3});
  expect_forward_error(
      [&](ForwardArgs& a) {
        a.weights_out = ok.ref();
        a.weights_out.shape[1] = 2;
        a.weights_out.data = ok.bytes() + 2;
      },
      StatusCode::misaligned, "weights_out");
}

// ---- forward: workspace
// -----------------------------------------------------------------------------

TEST_F(Errors, WorkspaceTooSmall) {
  Layer layer = make(Backend::cpu);
  const std::size_t needed = layer.workspace_size(kTokens);
  ASSERT_GT(needed, 0u);
  // a pure function of (config, tokens), growing with tokens
  EXPECT_EQ(layer.workspace_size(kTokens), needed);
  EXPECT_GE(layer.workspace_size(kTokens * 10), needed);
  EXPECT_EQ(layer.workspace_size(0), 0u);
  ForwardArgs a = valid_args(layer);
  for (std::size_t bytes : {std::size_t{0}, needed / 2, needed - 1}) {
    a.workspace.bytes = bytes;
    expect_status(layer.forward(a), StatusCode::workspace_too_small, "workspace");
  }
  EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden);
}

TEST_F(Errors, WorkspaceNull) {
  Layer layer = make(Backend::cpu);
  ForwardArgs a = valid_args(layer);
  a.workspace.data = nullptr;
  expect_status(layer.forward(a), StatusCode::null_pointer, "workspace");
  EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden);
}

TEST_F(Errors, WorkspaceMisaligned) {
  // The CPU path carves f32 and int32 buffers out of the workspace: a workspace starting at an
  // odd address is "not aligned as a kernel needs" (CONTRACT.md) and must be refused, not used
  // through misaligned pointers.
  Layer layer = make(Backend::cpu);
  ForwardArgs a = valid_args(layer);
  a.workspace.data = workspace.data() + 1;  // valid_args left 64 spare bytes
  const Status s = layer.forward(a);
  expect_status(s, StatusCode::misaligned, "workspace");
  if (s.ok()) {
    EXPECT_EQ(test::count_poison(out.cref()), 0);
  } else {
    EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden);
  }
}

TEST_F(Errors, DescribeOnlyWhereForwardRuns) {
  // what forward runs, in words, wherever it has a workspace size; nothing for T = 0 or a T
  // that forward refuses (T · top_k >= 2^31)
  const Layer cpu = make(Backend::cpu);
  const std::string small = cpu.describe(kTokens);
  EXPECT_EQ(small.rfind("cpu ", 0), 0u) << small;
  EXPECT_NE(small.find("calling thread only"), std::string::npos) << small;
  EXPECT_NE(cpu.describe(1 << 20).find("threaded"), std::string::npos)
      << "a large T on every thread";
  const Layer reference = make(Backend::reference);
  EXPECT_EQ(reference.describe(kTokens).rfind("reference", 0), 0u) << reference.describe(kTokens);
  for (const Layer* layer : {&cpu, &reference}) {
    EXPECT_EQ(layer->describe(0), "");
    EXPECT_EQ(layer->describe(-1), "");
    EXPECT_EQ(layer->describe(std::int64_t{1} << 40), "");
  }
}

TEST_F(Errors, ReferenceNeedsNoWorkspace) {
  Layer layer = make(Backend::reference);
  EXPECT_EQ(layer.workspace_size(kTokens), 0u);
  ForwardArgs a = valid_args(layer);
  a.workspace = {};
  EXPECT_TRUE(layer.forward(a).ok());
}

// ---- T = 0
// ------------------------------------------------------------------------------------------

TEST_F(Errors, ZeroTokensIsOkAndWritesNothing) {
  for (Backend backend : {Backend::reference, Backend::cpu}) {
    SCOPED_TRACE(to_string(backend));
    Layer layer = make(backend);
    EXPECT_EQ(layer.workspace_size(0), 0u);
    // real pointers, zero rows; the guard row after each must survive
    GuardedOutput empty_out(config.dtype, 0, config.hidden);
    GuardedOutput empty_ids(DType::i32, 0, 2);
    GuardedOutput empty_w(DType::f32, 0, 2);
    ForwardArgs a;
    a.x = make_tensor(x.cref().data, config.dtype, {0, config.hidden});
    a.out = empty_out.ref();
    a.ids_out = empty_ids.ref();
    a.weights_out = empty_w.ref();
    const Status s = layer.forward(a);
    EXPECT_TRUE(s.ok()) << s.to_string();
    EXPECT_TRUE(empty_out.guard_intact());
    EXPECT_TRUE(empty_ids.guard_intact());
    EXPECT_TRUE(empty_w.guard_intact());
    // the convenience overload too
    EXPECT_TRUE(layer.forward(a.x, a.out).ok());
    EXPECT_TRUE(empty_out.guard_intact());
    EXPECT_EQ(layer.take_invalid_id_count(), 0);
  }
}

TEST_F(PrecomputedErrors, ZeroTokensWithEmptyIds) {
  Layer layer = make(Backend::cpu);
  GuardedOutput empty_out(config.dtype, 0, config.hidden);
  ForwardArgs a;
  a.x = make_tensor(x.cref().data, config.dtype, {0, config.hidden});
  a.out = empty_out.ref();
  a.topk_ids = make_tensor(ids.cref().data, DType::i32, {0, 2});
  a.topk_weights = make_tensor(route_weights.cref().data, DType::f32, {0, 2});
  EXPECT_TRUE(layer.forward(a).ok());
  EXPECT_TRUE(empty_out.guard_intact());
}

TEST_F(Errors, ZeroTokensStillChecksTheOtherArguments) {
  // T = 0 launches nothing but is not a way around validation
  Layer layer = make(Backend::cpu);
  GuardedOutput empty_out(config.dtype, 0, config.hidden);
  ForwardArgs a;
  a.x = make_tensor(x.cref().data, config.dtype, {0, config.hidden + 1});
  a.out = empty_out.ref();
  expect_status(layer.forward(a), StatusCode::invalid_shape, "x");
}

// ---- the CUDA backend: device memory
// ----------------------------------------------------------------
// Only with a GPU: each test starts from device copies of the fixture's x and out (poison and
// guards included) and a device workspace of exactly workspace_size(kTokens) bytes, all valid,
// then breaks one thing.

class CudaErrors : public Errors {
 protected:
  void SetUp() override {
    FUSEDMOE_TEST_REQUIRE_BACKEND(Backend::cuda);
    Errors::SetUp();
    Result<Layer> layer = test::make_layer(config, weights.view(), Backend::cuda);
    ASSERT_TRUE(layer.ok()) << layer.status().to_string();
    cuda_layer.emplace(std::move(layer).value());
    // x gets 64 spare bytes, for copies of it at an offset
    ASSERT_NO_FATAL_FAILURE(allocate(device_x, x.size_bytes() + 64));
    ASSERT_NO_FATAL_FAILURE(allocate(device_out, out.storage().size()));
    ASSERT_NO_FATAL_FAILURE(allocate(device_workspace, cuda_layer->workspace_size(kTokens)));
    ASSERT_TRUE(device_x.upload(x.bytes(), x.size_bytes()).ok());
    ASSERT_TRUE(device_out.upload(out.storage().data(), out.storage().size()).ok());
    Result<device::Stream> s = device::Stream::create();
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    stream = std::move(s).value();
  }

  static void allocate(device::Buffer& b, std::size_t bytes) {
    Result<device::Buffer> got = device::Buffer::allocate(bytes);
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    b = std::move(got).value();
  }

  // forward's arguments over the device copies, all valid.
  ForwardArgs device_args() const {
    ForwardArgs a;
    a.x = make_tensor(static_cast<const void*>(device_x.data()), config.dtype,
                      {kTokens, config.hidden}, Device::cuda(0));
    a.out = out.ref_at(device_out.data(), Device::cuda(0));
    a.workspace = {device_workspace.data(), device_workspace.bytes()};
    a.stream = stream.handle();
    return a;
  }

  // The device's out (guards included) after the stream's work.
  GuardedOutput downloaded_out() const {
    GuardedOutput back = out;
    EXPECT_TRUE(stream.synchronize().ok());
    EXPECT_TRUE(device_out.download(back.storage().data(), back.storage().size()).ok());
    return back;
  }

  // forward(a) on the CUDA layer fails with `code` naming `name`; the device x keeps its bytes
  // and the device out its poison and guards (and so do the host ones, for a host tensor).
  void expect_cuda_forward_error(const std::function<void(ForwardArgs&)>& edit, StatusCode code,
                                 std::string_view name) {
    ForwardArgs a = device_args();
    edit(a);
    expect_status(cuda_layer->forward(a), code, name);
    const GuardedOutput back = downloaded_out();
    EXPECT_EQ(test::count_poison(back.cref()), kTokens * config.hidden) << "out was written";
    EXPECT_TRUE(back.guard_intact());
    std::vector<std::byte> x_back(x.size_bytes());
    ASSERT_TRUE(device_x.download(x_back.data(), x_back.size()).ok());
    EXPECT_TRUE(std::vector<std::byte>(x.bytes(), x.bytes() + x.size_bytes()) == x_back);
    EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden) << "host out was written";
    EXPECT_EQ(cuda_layer->take_invalid_id_count(), 0);
  }

  // forward(a) with a device x holding the fixture's x at an alignment a kernel may not take:
  // the backend either refuses it as misaligned, leaving out untouched, or computes it right.
  void expect_misaligned_or_correct(const ForwardArgs& a) {
    const Status s = cuda_layer->forward(a);
    const GuardedOutput back = downloaded_out();
    if (!s.ok()) {
      expect_status(s, StatusCode::misaligned, "x");
      EXPECT_EQ(test::count_poison(back.cref()), kTokens * config.hidden);
      return;
    }
    Layer reference = make(Backend::reference);
    GuardedOutput want(DType::f32, kTokens, config.hidden);
    ForwardArgs r = valid_args(reference);
    r.out = want.ref();
    ASSERT_TRUE(reference.forward(r).ok());
    EXPECT_TRUE(back.guard_intact());
    Result<Comparison> cmp = compare(back.cref(), want.cref(), tolerance_for(config.dtype));
    ASSERT_TRUE(cmp.ok()) << cmp.status().to_string();
    EXPECT_TRUE(cmp.value().passed) << cmp.value().summary();
  }

  std::optional<Layer> cuda_layer;
  device::Buffer device_x, device_out, device_workspace;
  device::Stream stream;
};

TEST_F(CudaErrors, BaselineIsAccepted) {
  const Status s = cuda_layer->forward(device_args());
  ASSERT_TRUE(s.ok()) << s.to_string();
  const GuardedOutput back = downloaded_out();
  EXPECT_EQ(test::count_poison(back.cref()), 0);
  EXPECT_TRUE(back.guard_intact());
}

TEST_F(CudaErrors, DescribeNamesTheTiles) {
  const std::string d = cuda_layer->describe(kTokens);
  EXPECT_EQ(d.rfind("routed m", 0), 0u) << d;
  EXPECT_TRUE(d.find("(wgmma)") != std::string::npos || d.find("(mma.sync)") != std::string::npos)
      << d;
  EXPECT_EQ(cuda_layer->describe(0), "");
}

TEST_F(CudaErrors, HostXGivenToCuda) {
  expect_cuda_forward_error([this](ForwardArgs& a) { a.x = x.cref(); }, StatusCode::device_mismatch,
                            "x");
}

TEST_F(CudaErrors, HostOutGivenToCuda) {
  expect_cuda_forward_error([this](ForwardArgs& a) { a.out = out.ref(); },
                            StatusCode::device_mismatch, "out");
}

TEST_F(CudaErrors, HostWorkspaceGivenToCuda) {
  // a Workspace carries no device: the backend must look at the pointer itself
  workspace.assign(device_workspace.bytes() + 64, std::byte{0});
  expect_cuda_forward_error(
      [this](ForwardArgs& a) {
        a.workspace = {workspace.data(), device_workspace.bytes()};
      },
      StatusCode::device_mismatch, "workspace");
}

TEST_F(CudaErrors, DeviceTensorsGivenToTheCpuBackends) {
  for (Backend backend : {Backend::reference, Backend::cpu}) {
    SCOPED_TRACE(to_string(backend));
    Layer layer = make(backend);
    ForwardArgs a = valid_args(layer);
    a.x = device_args().x;
    expect_status(layer.forward(a), StatusCode::device_mismatch, "x");
    a = valid_args(layer);
    a.out = device_args().out;
    expect_status(layer.forward(a), StatusCode::device_mismatch, "out");
    EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden);
    EXPECT_EQ(test::count_poison(downloaded_out().cref()), kTokens * config.hidden);
  }
}

TEST_F(CudaErrors, DeviceXOrOutMisaligned) {
  // one byte off: not even aligned to the element size
  expect_cuda_forward_error(
      [](ForwardArgs& a) { a.x.data = static_cast<const std::byte*>(a.x.data) + 1; },
      StatusCode::misaligned, "x");
  expect_cuda_forward_error(
      [](ForwardArgs& a) { a.out.data = static_cast<std::byte*>(a.out.data) + 1; },
      StatusCode::misaligned, "out");
}

TEST_F(CudaErrors, DeviceXAlignedToItsElementOnly) {
  // x one element past a 16-byte boundary
  const std::size_t es = dtype_size(config.dtype);
  ASSERT_TRUE(device_x.upload(x.bytes(), x.size_bytes(), es).ok());
  ForwardArgs a = device_args();
  a.x.data = static_cast<const std::byte*>(a.x.data) + es;
  expect_misaligned_or_correct(a);
}

TEST_F(CudaErrors, DeviceXRowStrideOdd) {
  // rows H + 1 elements apart: every other row off a 16-byte boundary
  const std::size_t es = dtype_size(config.dtype);
  const std::int64_t stride = config.hidden + 1;
  ASSERT_LE(static_cast<std::size_t>(kTokens * stride) * es, device_x.bytes());
  const std::size_t row = static_cast<std::size_t>(config.hidden) * es;
  for (std::int64_t t = 0; t < kTokens; ++t) {
    ASSERT_TRUE(device_x
                    .upload(x.bytes() + static_cast<std::size_t>(t) * row, row,
                            static_cast<std::size_t>(t * stride) * es)
                    .ok());
  }
  ForwardArgs a = device_args();
  a.x = make_strided_rows(a.x.data, config.dtype, kTokens, config.hidden, stride, Device::cuda(0));
  expect_misaligned_or_correct(a);
}

TEST_F(CudaErrors, F32LayerIsUnsupported) {
  // test::unsupported_reason() skips f32 cases on CUDA: this is the refusal it stands for
  LayerConfig c = config;
  c.dtype = DType::f32;
  const HostWeights w = HostWeights::random(c, {test::case_seed(), Fill::gaussian, {}});
  Result<PackedWeights> packed = pack_weights(c, w.view(), Backend::cuda);
  ASSERT_FALSE(packed.ok());
  EXPECT_EQ(packed.status().code(), StatusCode::unsupported_config) << packed.status().to_string();
}

TEST_F(CudaErrors, DeviceWorkspaceTooSmallOrMisaligned) {
  const std::size_t needed = device_workspace.bytes();
  ASSERT_GT(needed, 0u);
  expect_cuda_forward_error([&](ForwardArgs& a) { a.workspace.bytes = needed - 1; },
                            StatusCode::workspace_too_small, "workspace");
  device::Buffer roomy;
  ASSERT_NO_FATAL_FAILURE(allocate(roomy, needed + 64));
  expect_cuda_forward_error(
      [&](ForwardArgs& a) {
        a.workspace = {static_cast<std::byte*>(roomy.data()) + 1, needed};
      },
      StatusCode::misaligned, "workspace");
}

TEST_F(CudaErrors, ZeroTokensIsOkAndWritesNothing) {
  // real device pointers, zero rows; the guard row after each output must survive
  GuardedOutput empty_out(config.dtype, 0, config.hidden);
  GuardedOutput empty_ids(DType::i32, 0, config.top_k);
  device::Buffer d_out, d_ids;
  ASSERT_NO_FATAL_FAILURE(allocate(d_out, empty_out.storage().size()));
  ASSERT_NO_FATAL_FAILURE(allocate(d_ids, empty_ids.storage().size()));
  ASSERT_TRUE(d_out.upload(empty_out.storage().data(), empty_out.storage().size()).ok());
  ASSERT_TRUE(d_ids.upload(empty_ids.storage().data(), empty_ids.storage().size()).ok());
  EXPECT_EQ(cuda_layer->workspace_size(0), 0u);
  ForwardArgs a;
  a.x = make_tensor(static_cast<const void*>(device_x.data()), config.dtype, {0, config.hidden},
                    Device::cuda(0));
  a.out = empty_out.ref_at(d_out.data(), Device::cuda(0));
  a.ids_out = empty_ids.ref_at(d_ids.data(), Device::cuda(0));
  a.stream = stream.handle();
  const Status s = cuda_layer->forward(a);
  EXPECT_TRUE(s.ok()) << s.to_string();
  ASSERT_TRUE(stream.synchronize().ok());
  ASSERT_TRUE(d_out.download(empty_out.storage().data(), empty_out.storage().size()).ok());
  ASSERT_TRUE(d_ids.download(empty_ids.storage().data(), empty_ids.storage().size()).ok());
  EXPECT_TRUE(empty_out.guard_intact());
  EXPECT_TRUE(empty_ids.guard_intact());
  EXPECT_EQ(cuda_layer->take_invalid_id_count(), 0);
  // T = 0 is not a way around the device check
  GuardedOutput host_empty(config.dtype, 0, config.hidden);
  a.out = host_empty.ref();
  expect_status(cuda_layer->forward(a), StatusCode::device_mismatch, "out");
}

TEST_F(CudaErrors, ConvenienceForwardNeedsADeviceWorkspace) {
  const ForwardArgs a = device_args();
  expect_status(cuda_layer->forward(a.x, a.out), StatusCode::invalid_argument, "workspace");
  EXPECT_EQ(test::count_poison(downloaded_out().cref()), kTokens * config.hidden);
}

// ---- convenience forward
// -------------------------------------------------------------------------

TEST_F(Errors, ConvenienceForwardChecksToo) {
  Layer layer = make(Backend::cpu);
  expect_status(layer.forward(reshaped(x.cref(), {5, 32}), out.ref()), StatusCode::invalid_shape,
                "x");
  TensorRef bad_out = out.ref();
  bad_out.dtype = DType::f16;
  expect_status(layer.forward(x.cref(), bad_out), StatusCode::invalid_dtype, "out");
  EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden);
  // and works when the arguments are right
  EXPECT_TRUE(layer.forward(x.cref(), out.ref()).ok());
  EXPECT_EQ(test::count_poison(out.cref()), 0);
}

// ---- the C ABI
// -------------------------------------------------------------------------------------

fusedmoe_tensor c_tensor(const ConstTensorRef& t) {
  fusedmoe_tensor c{};
  c.data = const_cast<void*>(t.data);
  c.dtype = static_cast<std::int32_t>(t.dtype);
  c.device_kind = static_cast<std::int32_t>(t.device.kind);
  c.device_index = t.device.index;
  c.rank = t.rank;
  for (int d = 0; d < t.rank; ++d) {
    c.shape[d] = t.shape[static_cast<std::size_t>(d)];
    c.strides[d] = t.strides[static_cast<std::size_t>(d)];
  }
  return c;
}

class CApiErrors : public Errors {
 protected:
  void SetUp() override {
    Errors::SetUp();
    fusedmoe_layer_config_init(&cc);
    cc.hidden = config.hidden;
    cc.intermediate = config.intermediate;
    cc.experts = config.experts;
    cc.top_k = config.top_k;
    fusedmoe_weights_init(&cw);
    cw.layout = FUSEDMOE_LAYOUT_GATE_UP_ROWS;
    cw.router = c_tensor(weights.router.cref());
    cw.gate_up = c_tensor(weights.gate_up.cref());
    cw.down = c_tensor(weights.down.cref());
  }
  // Arguments of a forward call that `layer` accepts, with `ws` sized for them.
  fusedmoe_forward_args valid_args(const fusedmoe_layer* layer, std::vector<std::byte>& ws) {
    fusedmoe_forward_args a;
    fusedmoe_forward_args_init(&a);
    ws.resize(fusedmoe_layer_workspace_size(layer, kTokens));
    a.x = c_tensor(x.cref());
    a.out = c_tensor(out.cref());
    a.workspace = ws.data();
    a.workspace_bytes = ws.size();
    return a;
  }
  fusedmoe_layer_config cc;
  fusedmoe_weights cw;
};

TEST_F(CApiErrors, ValidCallSucceedsAndClearsNothing) {
  fusedmoe_layer* layer = nullptr;
  ASSERT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer), FUSEDMOE_OK)
      << fusedmoe_last_error();
  ASSERT_NE(layer, nullptr);
  std::vector<std::byte> ws;
  fusedmoe_forward_args a = valid_args(layer, ws);
  EXPECT_EQ(fusedmoe_layer_forward(layer, &a), FUSEDMOE_OK) << fusedmoe_last_error();
  EXPECT_EQ(test::count_poison(out.cref()), 0);
  fusedmoe_layer_destroy(layer);
}

TEST_F(CApiErrors, NullArguments) {
  fusedmoe_layer* layer = reinterpret_cast<fusedmoe_layer*>(this);  // must be reset to NULL
  EXPECT_EQ(fusedmoe_layer_create(nullptr, &cw, FUSEDMOE_BACKEND_CPU, &layer),
            FUSEDMOE_NULL_POINTER);
  EXPECT_EQ(layer, nullptr);
  EXPECT_NE(std::string(fusedmoe_last_error()).find("fusedmoe_layer_config"), std::string::npos)
      << fusedmoe_last_error();
  EXPECT_EQ(fusedmoe_layer_create(&cc, nullptr, FUSEDMOE_BACKEND_CPU, &layer),
            FUSEDMOE_NULL_POINTER);
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, nullptr), FUSEDMOE_NULL_POINTER);
  EXPECT_EQ(fusedmoe_layer_forward(nullptr, nullptr), FUSEDMOE_NULL_POINTER);
  EXPECT_EQ(fusedmoe_preset_config(nullptr, &cc), FUSEDMOE_NULL_POINTER);
  EXPECT_EQ(fusedmoe_layer_workspace_size(nullptr, 5), 0u);
  EXPECT_EQ(fusedmoe_layer_take_invalid_id_count(nullptr), 0);
  fusedmoe_layer_destroy(nullptr);  // a no-op, like free(NULL)
}

TEST_F(CApiErrors, StructSizeZero) {
  cc.struct_size = 0;
  fusedmoe_layer* layer = nullptr;
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer),
            FUSEDMOE_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fusedmoe_last_error()).find("struct_size"), std::string::npos);
}

// Found by forward_fuzzer (RELIABILITY.md): a struct_size that is no header's cut a field in two,
// here ids_out's second stride, which kept its caller's low bytes and pointed far outside the
// buffer, and the CPU backend wrote there. Such a size is refused before anything is written; a
// newer caller's larger struct is read up to this library's fields.
TEST_F(CApiErrors, StructSizeOfNoRevisionIsRefused) {
  fusedmoe_layer* layer = nullptr;
  ASSERT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer), FUSEDMOE_OK);
  struct NewerArgs {
    fusedmoe_forward_args a;
    std::int64_t appended[2];  // fields of a later revision
  } newer{};
  std::vector<std::byte> ws;
  fusedmoe_forward_args& a = newer.a;
  a = valid_args(layer, ws);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(kTokens * config.top_k), -7);
  const std::int64_t ids_shape[2] = {kTokens, config.top_k};
  a.ids_out = fusedmoe_cpu_tensor(ids.data(), FUSEDMOE_I32, 2, ids_shape);
  a.ids_out.strides[1] = static_cast<std::int64_t>(0x9111111111111111ULL);  // bytes 11 .. 91
  a.struct_size = static_cast<std::uint32_t>(offsetof(fusedmoe_forward_args, ids_out) +
                                             offsetof(fusedmoe_tensor, strides) + 8 + 3);
  EXPECT_EQ(fusedmoe_layer_forward(layer, &a), FUSEDMOE_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fusedmoe_last_error()).find("struct_size"), std::string::npos)
      << fusedmoe_last_error();
  a.struct_size = static_cast<std::uint32_t>(offsetof(fusedmoe_forward_args, workspace) + 4);
  EXPECT_EQ(fusedmoe_layer_forward(layer, &a), FUSEDMOE_INVALID_ARGUMENT);  // half a pointer
  EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), -7), kTokens * config.top_k);

  a.ids_out.strides[1] = 1;
  a.struct_size = sizeof(newer);
  newer.appended[0] = newer.appended[1] = -1;
  EXPECT_EQ(fusedmoe_layer_forward(layer, &a), FUSEDMOE_OK) << fusedmoe_last_error();
  EXPECT_EQ(test::count_poison(out.cref()), 0);
  EXPECT_EQ(std::count_if(ids.begin(), ids.end(),
                          [&](std::int32_t e) { return e >= 0 && e < config.experts; }),
            kTokens * config.top_k);
  fusedmoe_layer_destroy(layer);

  cc.struct_size = sizeof(cc) - 2;  // inside dtype, the last field
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer),
            FUSEDMOE_INVALID_ARGUMENT);
  EXPECT_EQ(layer, nullptr);
}

TEST_F(CApiErrors, BadEnums) {
  fusedmoe_layer* layer = nullptr;
  // (a backend or status value outside its enum is checked in c_api_test.c: only C may pass one)
  cw.layout = 9;
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer),
            FUSEDMOE_INVALID_ARGUMENT);
  cw.layout = FUSEDMOE_LAYOUT_GATE_UP_ROWS;
  cc.dtype = 42;
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer), FUSEDMOE_INVALID_DTYPE);
  cc.dtype = FUSEDMOE_BF16;
  cc.routing_kind = -1;
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer),
            FUSEDMOE_INVALID_ARGUMENT);
  cc.routing_kind = FUSEDMOE_ROUTING_SOFTMAX_TOPK;
  cw.gate_up.dtype = 99;
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer), FUSEDMOE_INVALID_DTYPE);
  cw.gate_up.dtype = FUSEDMOE_BF16;
  cw.gate_up.rank = 5;
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer), FUSEDMOE_INVALID_SHAPE);
  EXPECT_EQ(layer, nullptr);
}

TEST_F(CApiErrors, ConfigErrorsMapToTheirCodes) {
  fusedmoe_layer* layer = nullptr;
  cc.top_k = 9;
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer),
            FUSEDMOE_UNSUPPORTED_CONFIG);
  EXPECT_NE(std::string(fusedmoe_last_error()).find("top_k"), std::string::npos);
  cc.top_k = 2;
  cc.hidden = 32;  // not what the weights say
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer), FUSEDMOE_INVALID_SHAPE);
  EXPECT_NE(std::string(fusedmoe_last_error()).find("experts.gate_up"), std::string::npos);
}

TEST_F(CApiErrors, DeviceMismatchAndUnsupportedArch) {
  fusedmoe_layer* layer = nullptr;
  cw.down.device_kind = FUSEDMOE_DEVICE_CUDA;
  EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer),
            FUSEDMOE_DEVICE_MISMATCH);
  cw.down.device_kind = FUSEDMOE_DEVICE_CPU;
  if (!fusedmoe_backend_available(FUSEDMOE_BACKEND_CUDA)) {
    EXPECT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CUDA, &layer),
              FUSEDMOE_UNSUPPORTED_ARCH);
  }
  EXPECT_EQ(layer, nullptr);
}

TEST_F(CApiErrors, ForwardErrorsLeaveOutUntouched) {
  fusedmoe_layer* layer = nullptr;
  ASSERT_EQ(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer), FUSEDMOE_OK);
  std::vector<std::byte> ws;
  fusedmoe_forward_args a = valid_args(layer, ws);
  a.workspace_bytes = ws.size() - 1;
  EXPECT_EQ(fusedmoe_layer_forward(layer, &a), FUSEDMOE_WORKSPACE_TOO_SMALL);
  EXPECT_NE(std::string(fusedmoe_last_error()).find("workspace"), std::string::npos);
  a.workspace_bytes = ws.size();
  a.x.shape[1] = 32;
  EXPECT_EQ(fusedmoe_layer_forward(layer, &a), FUSEDMOE_INVALID_SHAPE);
  EXPECT_NE(std::string(fusedmoe_last_error()).find("x must be"), std::string::npos)
      << fusedmoe_last_error();
  a.x.shape[1] = config.hidden;
  a.x.device_kind = 5;
  EXPECT_EQ(fusedmoe_layer_forward(layer, &a), FUSEDMOE_INVALID_ARGUMENT);
  a.x.device_kind = FUSEDMOE_DEVICE_CPU;
  a.struct_size = 0;
  EXPECT_EQ(fusedmoe_layer_forward(layer, &a), FUSEDMOE_INVALID_ARGUMENT);
  EXPECT_EQ(test::count_poison(out.cref()), kTokens * config.hidden);
  EXPECT_TRUE(out.guard_intact());
  fusedmoe_layer_destroy(layer);
}

TEST_F(CApiErrors, StatusStringsAndUnknownPreset) {
  EXPECT_STREQ(fusedmoe_status_string(FUSEDMOE_INVALID_SHAPE), "invalid_shape");
  EXPECT_STREQ(fusedmoe_status_string(FUSEDMOE_WORKSPACE_TOO_SMALL), "workspace_too_small");
  EXPECT_STREQ(fusedmoe_status_string(FUSEDMOE_OK), "ok");
  EXPECT_EQ(fusedmoe_preset_config("no-such-model", &cc), FUSEDMOE_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fusedmoe_last_error()).find("no-such-model"), std::string::npos);
  EXPECT_EQ(fusedmoe_preset_name(-1), nullptr);
  EXPECT_EQ(fusedmoe_preset_name(fusedmoe_preset_count()), nullptr);
  EXPECT_EQ(fusedmoe_abi_version(), static_cast<std::uint32_t>(FUSEDMOE_ABI_VERSION));
}

TEST_F(CApiErrors, LastErrorIsPerThread) {
  fusedmoe_layer* layer = nullptr;
  cc.top_k = 0;
  ASSERT_NE(fusedmoe_layer_create(&cc, &cw, FUSEDMOE_BACKEND_CPU, &layer), FUSEDMOE_OK);
  const std::string mine = fusedmoe_last_error();
  EXPECT_FALSE(mine.empty());
  std::string theirs = "unset";
  std::thread([&] { theirs = fusedmoe_last_error(); }).join();
  EXPECT_EQ(theirs, "");
  EXPECT_EQ(std::string(fusedmoe_last_error()), mine);
}

}  // namespace
}  // namespace fusedmoe
