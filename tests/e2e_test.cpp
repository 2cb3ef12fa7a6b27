// The backend under test (Backend::cpu, or Backend::cuda with FUSEDMOE_TEST_BACKEND=cuda) against
// the fp64 reference over CONTRACT.md's sweeps: token counts, expert counts, k, every routing
// kind, activation, shared expert, dtype and weight layout, precomputed routing of every shape
// (uniform, Zipf, one hot expert, idle experts, duplicate and invalid ids), strided rows, and
// integer-valued data where routing must match exactly.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace fusedmoe {
namespace {

struct E2ECase {
  std::string name;
  LayerConfig config;
  std::int64_t tokens = 1;
  test::Options options;
};

void PrintTo(const E2ECase& c, std::ostream* os) { *os << c.name; }

const char* layout_tag(WeightLayout l) {
  switch (l) {
    case WeightLayout::gate_up_rows:
      return "";
    case WeightLayout::up_gate_rows:
      return "_upgate";
    case WeightLayout::interleaved_cols:
      return "_interleaved";
    case WeightLayout::separate:
      return "_separate";
  }
  return "_unknown";
}

E2ECase make_case(const std::string& group, const LayerConfig& c, std::int64_t tokens,
                  test::Options o = {}, const std::string& tag = "") {
  E2ECase e{group + "_T" + std::to_string(tokens) + "_H" + std::to_string(c.hidden) + "_I" +
                std::to_string(c.intermediate) + "_E" + std::to_string(c.experts) + "_k" +
                std::to_string(c.top_k) + "_" + std::string(to_string(c.dtype)) +
                layout_tag(o.layout) + (tag.empty() ? "" : "_" + tag),
            c, tokens, o};
  return e;
}

LayerConfig with_shared(LayerConfig c, std::int64_t inter, bool gated) {
  c.shared = {inter, gated};
  return c;
}

LayerConfig softmax_norenorm(LayerConfig c) {
  c.routing.renormalize = false;
  return c;
}

LayerConfig seed_sigmoid(LayerConfig c) {
  c.routing.kind = RoutingKind::sigmoid_topk;
  return c;
}

LayerConfig precomputed(LayerConfig c) {
  c.routing.kind = RoutingKind::precomputed;
  return c;
}

LayerConfig with_activation(LayerConfig c, Activation a, bool bias = false) {
  c.activation = a;
  c.expert_bias = bias;
  return c;
}

test::Options opts(WeightLayout layout = WeightLayout::gate_up_rows, Fill fill = Fill::gaussian) {
  test::Options o;
  o.layout = layout;
  o.fill = fill;
  return o;
}

test::Options ids(test::Ids kind, double s = 0.0) {
  test::Options o;
  o.ids = kind;
  o.zipf_s = s;
  return o;
}

std::vector<E2ECase> all_cases() {
  using test::make_config;
  std::vector<E2ECase> v;

  // Token counts on small, non-power-of-two sizes: Mixtral-like (E 8, k 2, bf16) and
  // Qwen-like (E 60, k 4, gated shared expert, f16, not renormalised).
  const std::int64_t hs[] = {200, 733, 96, 256};
  const std::int64_t is[] = {88, 136};
  int n = 0;
  for (std::int64_t t : {0, 1, 2, 3, 7, 16, 17, 33, 127, 128, 129, 1000}) {
    const std::int64_t h = hs[n % 4], i = is[(n / 2) % 2];
    ++n;
    v.push_back(make_case("Tokens", make_config(h, i, 8, 2), t));
    v.push_back(make_case(
        "TokensQwen",
        with_shared(softmax_norenorm(make_config(i + 40, i / 2, 60, 4, DType::f16)), 72, true), t));
  }
  // Large T on tiny dims (many GEMM tiles, long expert groups).
  for (std::int64_t t : {4095, 4096, 4097}) {
    v.push_back(make_case("LargeT", make_config(32, 16, 8, 2), t));
  }
  v.push_back(
      make_case("LargeTGrouped", test::deepseek_like(24, 12, 64, 8, 8, 4, DType::f32), 4097));

  // Expert counts, softmax top-k (E 257 is fine: no groups).
  for (std::int64_t e : {1, 8, 60, 64, 128, 256, 257}) {
    v.push_back(make_case("Experts", make_config(128, 40, e, std::min<std::int64_t>(e, 8)), 70));
  }
  // Expert counts with DeepSeek-V3's grouped routing (n_group | E).
  v.push_back(make_case("ExpertsGrouped", test::deepseek_like(128, 40, 8, 2, 4, 2), 70));
  v.push_back(make_case("ExpertsGrouped", test::deepseek_like(128, 40, 64, 8, 8, 4), 70));
  v.push_back(make_case("ExpertsGrouped", test::deepseek_like(128, 40, 128, 8, 8, 4), 70));
  v.push_back(make_case("ExpertsGrouped", test::deepseek_like(96, 24, 256, 8, 8, 4), 70));
  v.push_back(make_case("ExpertsGptOss", test::gpt_oss_like(128, 40, 60, 4), 70));
  v.push_back(make_case("ExpertsGptOss", test::gpt_oss_like(128, 40, 128, 4), 70));

  // k, including k = E for every routing kind.
  for (std::int64_t k : {1, 2, 4, 8}) {
    v.push_back(make_case("TopK", make_config(96, 48, 16, k), 50));
  }
  v.push_back(make_case("TopKEqualsE", make_config(96, 48, 8, 8), 50));
  v.push_back(
      make_case("TopKEqualsE", softmax_norenorm(make_config(64, 24, 16, 16, DType::f32)), 50));
  v.push_back(make_case("TopKEqualsESigmoid", seed_sigmoid(make_config(96, 48, 4, 4)), 50));
  v.push_back(make_case("TopKEqualsEGptOss", test::gpt_oss_like(96, 48, 6, 6), 50));
  v.push_back(make_case("TopKEqualsEPrecomputed", precomputed(make_config(96, 48, 5, 5)), 50));

  // Every routing kind, bf16 and f32.
  for (DType dt : {DType::bf16, DType::f32}) {
    v.push_back(make_case("RoutingSoftmaxRenorm", make_config(160, 72, 16, 2, dt), 65));
    v.push_back(
        make_case("RoutingSoftmaxNoRenorm", softmax_norenorm(make_config(160, 72, 16, 4, dt)), 65));
    v.push_back(make_case("RoutingSigmoidSeed", seed_sigmoid(make_config(160, 72, 32, 8, dt)), 65));
    LayerConfig scaled = seed_sigmoid(make_config(160, 72, 32, 4, dt));
    scaled.routing.renormalize = false;
    scaled.routing.scaling = 2.5f;
    v.push_back(make_case("RoutingSigmoidScaled", scaled, 65));
    v.push_back(make_case("RoutingDeepSeek",
                          with_shared(test::deepseek_like(160, 72, 32, 8, 8, 4, dt), 72, false),
                          65));
    v.push_back(make_case("RoutingGptOss", test::gpt_oss_like(160, 72, 16, 4, dt), 65));
    v.push_back(make_case("RoutingPrecomputed", precomputed(make_config(160, 72, 16, 4, dt)), 65));
  }

  // Every activation (with and without expert biases), bf16 and f16.
  for (DType dt : {DType::bf16, DType::f16}) {
    const LayerConfig base = make_config(144, 56, 8, 2, dt);
    v.push_back(make_case("ActivationSwiGLU", with_activation(base, Activation::swiglu, true), 45,
                          {}, "bias"));
    v.push_back(make_case("ActivationGeGLU", with_activation(base, Activation::geglu), 45));
    v.push_back(make_case("ActivationGeGLU", with_activation(base, Activation::geglu, true), 45, {},
                          "bias"));
    v.push_back(
        make_case("ActivationSwiGLUOss", with_activation(base, Activation::swiglu_oss), 45));
    // x scaled up so that many gate/up values cross the clamp at 7
    test::Options big;
    big.x_scale = 6.0f;
    v.push_back(make_case("ActivationSwiGLUOss",
                          with_activation(base, Activation::swiglu_oss, true), 45, big, "clamped"));
  }

  // Shared expert off, ungated, gated; odd and large shared sizes.
  for (DType dt : {DType::bf16, DType::f32}) {
    const LayerConfig base = make_config(128, 44, 16, 4, dt);
    v.push_back(make_case("SharedOff", base, 40));
    v.push_back(make_case("SharedUngated", with_shared(base, 50, false), 40));
    v.push_back(make_case("SharedGated", with_shared(base, 300, true), 40));
  }
  v.push_back(make_case("SharedGatedPrecomputed",
                        with_shared(precomputed(make_config(128, 44, 16, 4)), 36, true), 40));
  v.push_back(make_case(
      "SharedGeGLU",
      with_shared(with_activation(make_config(128, 44, 16, 4), Activation::geglu), 36, true), 40));

  // Every dtype x every layout, on a layer with a gated shared expert and expert biases.
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    for (WeightLayout l : {WeightLayout::gate_up_rows, WeightLayout::up_gate_rows,
                           WeightLayout::interleaved_cols, WeightLayout::separate}) {
      LayerConfig c = with_shared(make_config(120, 60, 12, 3, dt), 30, true);
      c.expert_bias = true;
      v.push_back(make_case("DtypeLayout", c, 57, opts(l)));
    }
  }

  // Precomputed routing of every shape.
  const LayerConfig pre = precomputed(make_config(128, 48, 32, 4));
  v.push_back(make_case("PrecomputedUniform", pre, 200, ids(test::Ids::zipf, 0.0)));
  v.push_back(make_case("PrecomputedZipf1", pre, 200, ids(test::Ids::zipf, 1.0)));
  v.push_back(make_case("PrecomputedZipf2", pre, 200, ids(test::Ids::zipf, 2.0)));
  v.push_back(make_case("PrecomputedZipf2", precomputed(make_config(64, 24, 256, 8)), 300,
                        ids(test::Ids::zipf, 2.0)));
  v.push_back(make_case("PrecomputedOneExpert", pre, 200, ids(test::Ids::one_expert, 1.0)));
  v.push_back(make_case("PrecomputedIdleExperts", pre, 200, ids(test::Ids::half_experts, 1.0)));
  v.push_back(make_case("PrecomputedDuplicateIds", pre, 200, ids(test::Ids::duplicate, 0.0)));
  v.push_back(make_case("PrecomputedInvalidIds", pre, 200, ids(test::Ids::invalid, 1.0)));
  v.push_back(make_case("PrecomputedInvalidIds", precomputed(make_config(96, 40, 8, 1, DType::f32)),
                        129, ids(test::Ids::invalid, 0.0)));
  v.push_back(make_case("PrecomputedInvalidIdsShared",
                        with_shared(precomputed(make_config(96, 40, 8, 2, DType::f16)), 20, true),
                        64, ids(test::Ids::invalid, 0.0)));

  // Strided rows: x (padding is NaN, so reading it shows) and out (padding is guarded).
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    test::Options o;
    o.x_row_stride = 133;
    v.push_back(make_case("StridedX", make_config(128, 40, 8, 2, dt), 77, o));
  }
  {
    test::Options o;
    o.x_row_stride = 128 + 64;
    o.out_row_stride = 128 + 3;
    v.push_back(make_case("StridedXOut", with_shared(make_config(128, 40, 8, 2), 24, true), 77, o));
    o.ids = test::Ids::zipf;
    o.zipf_s = 1.0;
    v.push_back(
        make_case("StridedXOutPrecomputed", precomputed(make_config(128, 40, 8, 2)), 77, o));
    test::Options out_only;
    out_only.out_row_stride = 200;
    v.push_back(make_case("StridedOut", make_config(128, 40, 8, 2, DType::f32), 33, out_only));
  }

  // Integer-valued f32 data: routing must match exactly (no near-tie exclusions).
  const test::Options integer = opts(WeightLayout::gate_up_rows, Fill::integer);
  v.push_back(make_case("Integer", make_config(96, 40, 8, 2, DType::f32), 100, integer));
  v.push_back(make_case("Integer", make_config(96, 40, 64, 8, DType::f32), 100, integer));
  v.push_back(make_case("IntegerNoRenorm", softmax_norenorm(make_config(96, 40, 60, 4, DType::f32)),
                        100, integer));
  v.push_back(
      make_case("IntegerGptOss", test::gpt_oss_like(96, 40, 16, 4, DType::f32), 100, integer));
  v.push_back(make_case("IntegerShared",
                        with_shared(make_config(96, 40, 16, 4, DType::f32), 24, true), 100,
                        integer));
  {
    test::Options o = integer;
    o.ids = test::Ids::zipf;
    o.zipf_s = 1.0;
    v.push_back(make_case("IntegerPrecomputed", precomputed(make_config(96, 40, 16, 4, DType::f32)),
                          100, o));
  }
  for (WeightLayout l :
       {WeightLayout::up_gate_rows, WeightLayout::interleaved_cols, WeightLayout::separate}) {
    v.push_back(make_case("IntegerLayout", make_config(96, 40, 8, 2, DType::f32), 60,
                          opts(l, Fill::integer)));
  }
  return v;
}

class BackendVsReference : public ::testing::TestWithParam<E2ECase> {
 protected:
  void SetUp() override { FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test()); }
};

TEST_P(BackendVsReference, Matches) {
  const E2ECase& c = GetParam();
  FUSEDMOE_TEST_REQUIRE_SUPPORT(test::backend_under_test(), c.config, c.options);
  const test::Problem p(c.config, c.tokens, c.options);
  const test::Verdict v = test::expect_matches_reference(p, test::backend_under_test());
  if (c.options.fill == Fill::integer) {
    EXPECT_EQ(v.excluded_tokens, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(E2E, BackendVsReference, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) { return info.param.name; });

// ---- cases that need more than one run
// --------------------------------------------------------------

TEST(E2E, InvalidIdsContributeExactlyZero) {
  FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test());
  // Replacing a slot's id by an invalid one must give the same output as giving that slot
  // weight 0 with a valid id: the invalid slot adds exactly nothing.
  for (DType dt : {DType::f32, DType::bf16}) {
    const LayerConfig c = precomputed(test::make_config(96, 40, 8, 3, dt));
    test::Problem bad(c, 40, ids(test::Ids::zipf, 0.0));
    test::Problem zero(c, 40, bad.options);
    std::int64_t n_bad = 0;
    for (std::int64_t t = 0; t < 40; t += 2) {
      bad.id(t, 1) = t % 4 == 0 ? -1 : static_cast<std::int32_t>(c.experts + t);
      zero.route_weight(t, 1) = 0.0f;
      ++n_bad;
    }
    SCOPED_TRACE(bad.describe());
    for (Backend backend : {Backend::reference, test::backend_under_test()}) {
      if (!test::unsupported_reason(backend, c).empty()) continue;
      SCOPED_TRACE(to_string(backend));
      const test::RunResult a = test::run_backend(bad, backend);
      const test::RunResult b = test::run_backend(zero, backend);
      ASSERT_TRUE(a.status.ok() && b.status.ok());
      EXPECT_EQ(a.invalid_ids, n_bad);
      EXPECT_EQ(b.invalid_ids, 0);
      EXPECT_EQ(test::count_poison(a.out.cref()), 0);
      EXPECT_TRUE(test::output_bytes(a) == test::output_bytes(b));
    }
  }
}

TEST(E2E, InvalidIdCountResetsWhenTaken) {
  FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test());
  const LayerConfig c = precomputed(test::make_config(64, 24, 8, 2));
  test::Problem p(c, 30, ids(test::Ids::invalid, 0.0));
  Result<Layer> layer = test::make_layer(c, p.weights().view(), test::backend_under_test());
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const std::int64_t want = p.invalid_id_count();
  ASSERT_GT(want, 0);
  // two forwards accumulate; taking the count resets it
  const test::RunResult r1 = test::run_layer(layer.value(), p, c.dtype);  // takes the count
  ASSERT_TRUE(r1.status.ok()) << r1.status.to_string();
  EXPECT_EQ(r1.invalid_ids, want);
  const test::RunResult r2 = test::run_layer(layer.value(), p, c.dtype, 2);
  ASSERT_TRUE(r2.status.ok()) << r2.status.to_string();
  EXPECT_EQ(r2.invalid_ids, 2 * want);
  EXPECT_EQ(layer->take_invalid_id_count(), 0);
}

TEST(E2E, StridedXGivesTheSameBitsAsContiguous) {
  FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test());
  const LayerConfig c = with_shared(test::make_config(128, 40, 8, 2), 24, true);
  test::Options o;
  o.seed = test::case_seed();
  const test::Problem contiguous(c, 50, o);
  // an odd stride, and one that keeps rows 16-byte aligned
  for (std::int64_t stride : {128 + 17, 128 + 24}) {
    o.x_row_stride = stride;
    test::Problem strided(c, 50, o);
    // same x values in the strided buffer
    for (std::int64_t t = 0; t < 50; ++t) {
      for (std::int64_t h = 0; h < 128; ++h) {
        strided.set_x(t, h, static_cast<float>(contiguous.x_at(t, h)));
      }
    }
    for (Backend backend : {Backend::reference, test::backend_under_test()}) {
      if (!test::unsupported_reason(backend, c, o).empty()) continue;
      const test::RunResult a = test::run_backend(contiguous, backend);
      const test::RunResult b = test::run_backend(strided, backend);
      ASSERT_TRUE(a.status.ok() && b.status.ok()) << b.status.to_string();
      EXPECT_TRUE(test::output_bytes(a) == test::output_bytes(b))
          << to_string(backend) << " x_row_stride " << stride;
    }
  }
}

TEST(E2E, ReferenceOutputInLayerDtypeIsItsF32OutputRounded) {
  // The reference may write f32 or the layer dtype; the latter is the former rounded once.
  const LayerConfig c = test::make_config(96, 40, 8, 2, DType::bf16);
  const test::Problem p(c, 20);
  Result<Layer> layer = test::make_layer(c, p.weights().view(), Backend::reference);
  ASSERT_TRUE(layer.ok());
  const test::RunResult f32 = test::run_layer(layer.value(), p, DType::f32);
  const test::RunResult bf16 = test::run_layer(layer.value(), p, DType::bf16);
  ASSERT_TRUE(f32.status.ok() && bf16.status.ok());
  for (std::int64_t t = 0; t < 20; ++t) {
    for (std::int64_t h = 0; h < 96; ++h) {
      const float rounded = core::bf16_to_f32(core::f32_to_bf16(f32.out.at(t, h)));
      ASSERT_EQ(bf16.out.at(t, h), rounded) << t << ", " << h;
    }
  }
}

TEST(E2E, ReferenceMagnitudeIsTheSumOfTheTermsAbsoluteValues) {
  // One token, one expert (weight -2), H = I = 2, SwiGLU, by hand: act = (silu(1) * 3,
  // silu(2) * -1); down = [[1, 1], [1, -1]] gives out = -2 (act0 + act1, act0 - act1), whose
  // first element cancels, and the magnitude 2 (|act0| + |act1|) for both elements.
  LayerConfig c = test::make_config(2, 2, 1, 1, DType::f32);
  c.routing.kind = RoutingKind::precomputed;
  HostWeights w = HostWeights::random(c, {.seed = 1, .fill = Fill::gaussian});
  const float gate_up[8] = {1, 0, 0, 1, 1, 1, 1, -1};  // gate rows, then up rows: [2I, H]
  const float down[4] = {1, 1, 1, -1};                 // [H, I]
  ASSERT_EQ(w.gate_up.size_bytes(), sizeof gate_up);
  ASSERT_EQ(w.down.size_bytes(), sizeof down);
  std::memcpy(w.gate_up.bytes(), gate_up, sizeof gate_up);
  std::memcpy(w.down.bytes(), down, sizeof down);
  Result<Layer> layer = test::make_layer(c, w.view(), Backend::reference);
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();

  const float x[2] = {1, 2}, weight = -2;
  const std::int32_t id = 0;
  float out[2] = {}, magnitude[2] = {};
  ForwardArgs a;
  a.x = make_tensor(static_cast<const void*>(x), DType::f32, {1, 2});
  a.out = make_tensor(static_cast<void*>(out), DType::f32, {1, 2});
  a.topk_ids = make_tensor(static_cast<const void*>(&id), DType::i32, {1, 1});
  a.topk_weights = make_tensor(static_cast<const void*>(&weight), DType::f32, {1, 1});
  a.magnitude_out = make_tensor(static_cast<void*>(magnitude), DType::f32, {1, 2});
  ASSERT_TRUE(layer->forward(a).ok());
  const auto silu = [](double z) { return z / (1.0 + std::exp(-z)); };
  const double act0 = silu(1.0) * 3.0, act1 = silu(2.0) * -1.0;
  EXPECT_NEAR(out[0], -2.0 * (act0 + act1), 1e-6);
  EXPECT_NEAR(out[1], -2.0 * (act0 - act1), 1e-6);
  EXPECT_NEAR(magnitude[0], 2.0 * (std::abs(act0) + std::abs(act1)), 1e-6);
  EXPECT_NEAR(magnitude[1], 2.0 * (std::abs(act0) + std::abs(act1)), 1e-6);
}

TEST(E2E, ReferenceMagnitudeCountsBiasesTheSharedExpertAndNotInvalidSlots) {
  // The layer above (as expert 0 of two) with expert biases, a gated shared expert (I = 1) and a
  // second slot whose id is out of range (it contributes nothing, to the output or to the
  // magnitude). The gate and up biases move the activation: act = (silu(1 + 0.5) * (3 - 1),
  // silu(2) * (-1 + 0)).
  LayerConfig c = test::make_config(2, 2, 2, 2, DType::f32);
  c.routing.kind = RoutingKind::precomputed;
  c.expert_bias = true;
  c.shared.intermediate = 1;
  c.shared.gated = true;
  HostWeights w = HostWeights::random(c, {.seed = 1, .fill = Fill::gaussian});
  const float gate_up[8] = {1, 0, 0, 1, 1, 1, 1, -1};
  const float gate_up_bias[4] = {0.5f, 0, -1, 0};  // gate biases, then up biases
  const float down[4] = {1, 1, 1, -1}, down_bias[2] = {0.5f, -0.25f};
  const float shared_gate[2] = {1, 0}, shared_up[2] = {0, 1}, shared_down[2] = {1, -1};
  const float shared_gate_weight[2] = {1, 1};
  // expert 0's values (the first rows of the expert tensors), or the whole shared tensor
  const auto put = [](HostTensor& t, const float* v, std::size_t bytes) {
    ASSERT_GE(t.size_bytes(), bytes);
    ASSERT_EQ(t.cref().dtype, DType::f32);
    std::memcpy(t.bytes(), v, bytes);
  };
  put(w.gate_up, gate_up, sizeof gate_up);
  put(w.gate_up_bias, gate_up_bias, sizeof gate_up_bias);
  put(w.down, down, sizeof down);
  put(w.down_bias, down_bias, sizeof down_bias);
  put(w.shared_gate, shared_gate, sizeof shared_gate);
  put(w.shared_up, shared_up, sizeof shared_up);
  put(w.shared_down, shared_down, sizeof shared_down);
  put(w.shared_gate_weight, shared_gate_weight, sizeof shared_gate_weight);
  Result<Layer> layer = test::make_layer(c, w.view(), Backend::reference);
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();

  const float x[2] = {1, 2}, weights[2] = {-2, 5};
  const std::int32_t ids[2] = {0, 7};
  float out[2] = {}, magnitude[2] = {};
  ForwardArgs a;
  a.x = make_tensor(static_cast<const void*>(x), DType::f32, {1, 2});
  a.out = make_tensor(static_cast<void*>(out), DType::f32, {1, 2});
  a.topk_ids = make_tensor(static_cast<const void*>(ids), DType::i32, {1, 2});
  a.topk_weights = make_tensor(static_cast<const void*>(weights), DType::f32, {1, 2});
  a.magnitude_out = make_tensor(static_cast<void*>(magnitude), DType::f32, {1, 2});
  ASSERT_TRUE(layer->forward(a).ok());
  EXPECT_EQ(layer->take_invalid_id_count(), 1);
  const auto silu = [](double z) { return z / (1.0 + std::exp(-z)); };
  const double act0 = silu(1.5) * 2.0, act1 = silu(2.0) * -1.0;
  const double shared_act = silu(1.0) * 2.0, gate = 1.0 / (1.0 + std::exp(-3.0));
  const double y[2] = {act0 + act1 + 0.5, act0 - act1 - 0.25};
  const double shared_y[2] = {shared_act, -shared_act};
  const double bias_abs[2] = {0.5, 0.25};
  for (int h = 0; h < 2; ++h) {
    EXPECT_NEAR(out[h], -2.0 * y[h] + gate * shared_y[h], 1e-6) << h;
    EXPECT_NEAR(magnitude[h],
                2.0 * (std::abs(act0) + std::abs(act1) + bias_abs[h]) + gate * std::abs(shared_act),
                1e-6)
        << h;
  }
}

TEST(E2E, MagnitudeOutIsTheReferencesAlone) {
  const LayerConfig c = test::make_config(64, 32, 4, 2, DType::bf16);
  const test::Problem p(c, 3);
  Result<Layer> layer = test::make_layer(c, p.weights().view(), Backend::cpu);
  ASSERT_TRUE(layer.ok());
  test::GuardedOutput out(DType::bf16, 3, 64), magnitude(DType::f32, 3, 64);
  std::vector<std::byte> ws(layer->workspace_size(3));
  ForwardArgs a;
  a.x = p.x;
  a.out = out.ref();
  a.workspace = {ws.data(), ws.size()};
  a.magnitude_out = magnitude.ref();
  const Status s = layer->forward(a);
  EXPECT_EQ(s.code(), StatusCode::unsupported_config) << s.to_string();
  EXPECT_NE(s.message().find("magnitude_out"), std::string::npos) << s.to_string();
  EXPECT_EQ(test::count_poison(out.cref()), 3 * 64) << "a refused call wrote out";
}

TEST(E2E, CompareScalesAtolByTheTermMagnitude) {
  // ref [0, 1]: RMS 0.71, so the base atol is 1e-5. An error of 5e-5 where the reference cancels
  // to 0 fails on its own, passes when the element's terms add up to 10 in magnitude (atol 1e-4),
  // and fails again at magnitude 1 (the base wins); the global bound is left out (loose).
  const float ref[2] = {0.0f, 1.0f}, out[2] = {5e-5f, 1.0f};
  const Tolerance tol{1e-5, 1e-3, 1.0};
  const auto run = [&](const float* magnitude) {
    Result<Comparison> c = compare(
        make_tensor(static_cast<const void*>(out), DType::f32, {2}),
        make_tensor(static_cast<const void*>(ref), DType::f32, {2}), tol, nullptr,
        magnitude != nullptr ? make_tensor(static_cast<const void*>(magnitude), DType::f32, {2})
                             : ConstTensorRef{});
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    return c.ok() ? c->failures : -1;
  };
  const float big[2] = {10.0f, 10.0f}, small[2] = {1.0f, 1.0f};
  EXPECT_EQ(run(nullptr), 1);
  EXPECT_EQ(run(big), 0);
  EXPECT_EQ(run(small), 1);
  const float wrong_shape[3] = {1, 1, 1};
  EXPECT_FALSE(compare(make_tensor(static_cast<const void*>(out), DType::f32, {2}),
                       make_tensor(static_cast<const void*>(ref), DType::f32, {2}), tol, nullptr,
                       make_tensor(static_cast<const void*>(wrong_shape), DType::f32, {3}))
                   .ok());
}

TEST(E2E, ZipfRoutingIsSkewedAsAsked) {
  // The precomputed sweeps rely on zipf_routing: distinct ids per token, weights summing to 1,
  // and s = 2 concentrating most slots on few experts while s = 0 spreads them.
  const std::int64_t t = 2000, e = 64, k = 4;
  for (double s : {0.0, 1.0, 2.0}) {
    HostTensor id(DType::i32, {t, k}), w(DType::f32, {t, k});
    zipf_routing(t, e, k, s, test::case_seed(), id.ref(), w.ref());
    const auto* ip = static_cast<const std::int32_t*>(id.cref().data);
    const auto* wp = static_cast<const float*>(w.cref().data);
    std::vector<std::int64_t> count(static_cast<std::size_t>(e), 0);
    for (std::int64_t r = 0; r < t; ++r) {
      std::set<std::int32_t> seen;
      double sum = 0;
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int32_t x = ip[r * k + j];
        ASSERT_GE(x, 0);
        ASSERT_LT(x, e);
        EXPECT_TRUE(seen.insert(x).second);
        EXPECT_GT(wp[r * k + j], 0.0f);
        sum += wp[r * k + j];
        ++count[static_cast<std::size_t>(x)];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
    std::sort(count.rbegin(), count.rend());
    const double top4 = static_cast<double>(count[0] + count[1] + count[2] + count[3]) / (t * k);
    if (s == 0.0) {
      EXPECT_LT(top4, 0.15) << "uniform";
    }
    if (s == 2.0) {
      EXPECT_GT(top4, 0.6) << "zipf 2";
    }
  }
}

TEST(E2E, RoutingTensorsMayBeStrided) {
  // topk_ids/topk_weights and ids_out/weights_out are plain [T, k] references: column-major
  // views (strides {1, T}) must read and write the same values as contiguous ones.
  const LayerConfig c = precomputed(test::make_config(96, 40, 8, 3));
  const test::Problem p(c, 21, ids(test::Ids::zipf, 1.0));
  const std::int64_t t = p.tokens, k = c.top_k;
  HostTensor ids_cm(DType::i32, {k, t}), w_cm(DType::f32, {k, t});
  auto* ip = reinterpret_cast<std::int32_t*>(ids_cm.bytes());
  auto* wp = reinterpret_cast<float*>(w_cm.bytes());
  for (std::int64_t r = 0; r < t; ++r) {
    for (std::int64_t j = 0; j < k; ++j) {
      ip[j * t + r] = p.id_at(r, j);
      wp[j * t + r] = p.route_weight_at(r, j);
    }
  }
  const auto column_major = [&](auto* data, DType dt) {
    auto ref = make_tensor(data, dt, {t, k});
    ref.strides = {1, t, 0, 0};
    return ref;
  };
  for (Backend backend : {Backend::reference, Backend::cpu}) {
    SCOPED_TRACE(to_string(backend));
    Result<Layer> layer = test::make_layer(c, p.weights().view(), backend);
    ASSERT_TRUE(layer.ok());
    const DType out_dtype = backend == Backend::reference ? DType::f32 : c.dtype;
    const test::RunResult want = test::run_layer(layer.value(), p, out_dtype);
    test::GuardedOutput out(out_dtype, t, c.hidden);
    HostTensor ids_out(DType::i32, {k, t}), w_out(DType::f32, {k, t});
    ids_out.poison();
    w_out.poison();
    ForwardArgs a;
    a.x = p.x;
    a.out = out.ref();
    a.topk_ids = column_major(static_cast<const void*>(ids_cm.bytes()), DType::i32);
    a.topk_weights = column_major(static_cast<const void*>(w_cm.bytes()), DType::f32);
    a.ids_out = column_major(static_cast<void*>(ids_out.bytes()), DType::i32);
    a.weights_out = column_major(static_cast<void*>(w_out.bytes()), DType::f32);
    std::vector<std::byte> ws(layer->workspace_size(t));
    a.workspace = {ws.data(), ws.size()};
    const Status s = layer->forward(a);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_TRUE(want.status.ok());
    EXPECT_TRUE(out.element_bytes() == test::output_bytes(want));
    const auto* io = reinterpret_cast<const std::int32_t*>(ids_out.bytes());
    const auto* wo = reinterpret_cast<const float*>(w_out.bytes());
    for (std::int64_t r = 0; r < t; ++r) {
      for (std::int64_t j = 0; j < k; ++j) {
        EXPECT_EQ(io[j * t + r], p.id_at(r, j));
        EXPECT_EQ(wo[j * t + r], p.route_weight_at(r, j));
      }
    }
  }
}

TEST(E2E, NearTieDetectorAcceptsOnlyTies) {
  // check_against may leave out a token only when the reference's boundary ties; its detector
  // must say yes for an exact tie and no for a clear decision. Router rows 0 and 1 are both
  // 10 x[0], so token 0 has two equal, clearly best logits; k = 1 makes them a boundary.
  const LayerConfig c = test::make_config(64, 16, 8, 1, DType::f32);
  test::Problem p(c, 3);
  auto* r = reinterpret_cast<float*>(p.edit_weights().router.bytes());
  for (std::int64_t h = 0; h < c.hidden; ++h) {
    r[h] = r[c.hidden + h] = 10.0f * static_cast<float>(p.x_at(0, h));
  }
  const std::vector<double> l = p.logits(0);
  ASSERT_EQ(l[0], l[1]);
  std::int32_t worst = 0;
  for (std::int32_t e = 0; e < 8; ++e) {
    ASSERT_LE(l[static_cast<std::size_t>(e)], l[0]);
    if (l[static_cast<std::size_t>(e)] < l[static_cast<std::size_t>(worst)]) worst = e;
  }
  EXPECT_TRUE(test::is_near_tie(p, 0, {0}, {1}));
  EXPECT_FALSE(test::is_near_tie(p, 0, {0}, {worst}));
  // and through the whole check: the reference picks 0 (lower index); a backend picking 1 is
  // excused and counted, one picking the worst expert is not
  const test::RunResult ref = test::run_backend(p, Backend::reference);
  ASSERT_TRUE(ref.status.ok());
  ASSERT_EQ(ref.ids(0, 1)[0], 0);
  test::RunResult other = ref;
  *static_cast<std::int32_t*>(other.ids_out.ref().data) = 1;
  EXPECT_EQ(test::check_against(p, ref, other).excluded_tokens, 1);
  *static_cast<std::int32_t*>(other.ids_out.ref().data) = worst;
  EXPECT_NONFATAL_FAILURE(test::check_against(p, ref, other), "ids differ from the reference");
}

}  // namespace
}  // namespace fusedmoe
