// pack_weights for every WeightLayout on every CPU backend. HostWeights::random draws the same
// logical weights whatever the layout, so a layer's output must not depend on the layout at all
// (bit for bit); strided and transposed weight views must give the same bits as contiguous ones;
// biases follow their layout's gate/up order; and packed weights own their memory.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.hpp"

namespace fusedmoe {
namespace {

using test::Problem;
using test::RunResult;

constexpr WeightLayout kLayouts[] = {WeightLayout::gate_up_rows, WeightLayout::up_gate_rows,
                                     WeightLayout::interleaved_cols, WeightLayout::separate};

// I = 42 is not a multiple of the CPU path's gate/up pairing (4), E = 6, T = 37: odd sizes.
LayerConfig pack_config(DType dtype, bool expert_bias) {
  LayerConfig c = test::make_config(96, 42, 6, 2, dtype);
  c.expert_bias = expert_bias;
  c.shared = {20, true};
  return c;
}

test::Options with_layout(WeightLayout layout, std::uint64_t seed, Fill fill = Fill::gaussian) {
  test::Options o;
  o.layout = layout;
  o.seed = seed;
  o.fill = fill;
  return o;
}

std::string backend_dtype_name(
    const ::testing::TestParamInfo<std::tuple<Backend, DType, bool>>& info) {
  return std::string(to_string(std::get<0>(info.param))) + "_" +
         std::string(to_string(std::get<1>(info.param))) +
         (std::get<2>(info.param) ? "_bias" : "_nobias");
}

// ---- (a) + (d): the same logical weights give the same bits in every layout ---------------------

class LayoutInvariance : public ::testing::TestWithParam<std::tuple<Backend, DType, bool>> {};

TEST_P(LayoutInvariance, OutputIsBitIdenticalAcrossLayouts) {
  const auto [backend, dtype, bias] = GetParam();
  const LayerConfig c = pack_config(dtype, bias);
  const std::uint64_t seed = test::case_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " " << test::describe_config(c));
  const Problem base(c, 37, with_layout(WeightLayout::gate_up_rows, seed));
  const RunResult want = test::run_backend(base, backend);
  ASSERT_TRUE(want.status.ok()) << want.status.to_string();
  EXPECT_EQ(test::count_poison(want.out.cref()), 0);
  for (WeightLayout layout : kLayouts) {
    SCOPED_TRACE(to_string(layout));
    const Problem p(c, 37, with_layout(layout, seed));
    const RunResult got = test::run_backend(p, backend);
    ASSERT_TRUE(got.status.ok()) << got.status.to_string();
    EXPECT_TRUE(test::output_bytes(got) == test::output_bytes(want))
        << "output differs from the gate_up_rows layout's";
    EXPECT_TRUE(got.ids_out.element_bytes() == want.ids_out.element_bytes());
  }
}

INSTANTIATE_TEST_SUITE_P(Pack, LayoutInvariance,
                         ::testing::Combine(::testing::Values(Backend::reference, Backend::cpu),
                                            ::testing::Values(DType::bf16, DType::f16, DType::f32),
                                            ::testing::Bool()),
                         backend_dtype_name);

// ---- (b) integer-valued data: cpu vs reference per layout, routing exact
// -------------------------

class IntegerLayouts : public ::testing::TestWithParam<std::tuple<WeightLayout, DType>> {};

TEST_P(IntegerLayouts, CpuMatchesReferenceExactRouting) {
  const auto [layout, dtype] = GetParam();
  const LayerConfig c = pack_config(dtype, true);
  const Problem p(c, 29, with_layout(layout, test::case_seed(), Fill::integer));
  const test::Verdict v = test::expect_matches_reference(p);
  EXPECT_EQ(v.excluded_tokens, 0);
}

INSTANTIATE_TEST_SUITE_P(Pack, IntegerLayouts,
                         ::testing::Combine(::testing::ValuesIn(kLayouts),
                                            ::testing::Values(DType::f32, DType::bf16)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

// ---- (c) strided and transposed weight views
// ------------------------------------------------------

// A copy of a contiguous tensor in a bigger buffer: every dimension but the outermost padded by
// `pad` elements, the last two dimensions optionally stored transposed (column stride != 1), the
// padding NaN. The view has the original shape.
struct StridedCopy {
  std::vector<std::byte> storage;
  ConstTensorRef view;
};

StridedCopy strided_copy(const ConstTensorRef& src, std::int64_t pad, bool transpose) {
  StridedCopy out;
  if (!src.present()) return out;
  const int r = src.rank;
  std::vector<int> order(
      static_cast<std::size_t>(r));  // physical dimension i holds logical order[i]
  for (int i = 0; i < r; ++i) order[static_cast<std::size_t>(i)] = i;
  if (transpose && r >= 2)
    std::swap(order[static_cast<std::size_t>(r - 2)], order[static_cast<std::size_t>(r - 1)]);
  std::vector<std::int64_t> phys_size(static_cast<std::size_t>(r)),
      phys_stride(static_cast<std::size_t>(r));
  for (int i = 0; i < r; ++i) {
    phys_size[static_cast<std::size_t>(i)] =
        src.size(order[static_cast<std::size_t>(i)]) + (i > 0 ? pad : 0);
  }
  std::int64_t stride = 1;
  for (int i = r - 1; i >= 0; --i) {
    phys_stride[static_cast<std::size_t>(i)] = stride;
    stride *= phys_size[static_cast<std::size_t>(i)];
  }
  const std::size_t es = dtype_size(src.dtype);
  out.storage.assign(static_cast<std::size_t>(stride) * es, test::kPoisonByte);
  out.view = src;
  out.view.data = out.storage.data();
  for (int i = 0; i < r; ++i) {
    out.view.strides[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] =
        phys_stride[static_cast<std::size_t>(i)];
  }
  // copy element by element through a multi-index
  std::vector<std::int64_t> idx(static_cast<std::size_t>(r), 0);
  for (std::int64_t n = 0; n < src.numel(); ++n) {
    std::int64_t s_off = 0, d_off = 0;
    for (int d = 0; d < r; ++d) {
      s_off += idx[static_cast<std::size_t>(d)] * src.stride(d);
      d_off += idx[static_cast<std::size_t>(d)] * out.view.stride(d);
    }
    std::memcpy(out.storage.data() + static_cast<std::size_t>(d_off) * es,
                static_cast<const std::byte*>(src.data) + static_cast<std::size_t>(s_off) * es, es);
    for (int d = r - 1; d >= 0; --d) {
      if (++idx[static_cast<std::size_t>(d)] < src.size(d)) break;
      idx[static_cast<std::size_t>(d)] = 0;
    }
  }
  return out;
}

// Every tensor of a weight set copied into strided storage.
struct StridedWeights {
  std::vector<std::unique_ptr<StridedCopy>> copies;
  std::vector<ConstTensorRef> w1, w3, w2;
  WeightSet set;

  StridedWeights(const WeightSet& src, std::int64_t pad, bool transpose) {
    set = src;
    const auto copy = [&](const ConstTensorRef& t) {
      copies.push_back(std::make_unique<StridedCopy>(strided_copy(t, pad, transpose)));
      return copies.back()->view;
    };
    set.router.weight = copy(src.router.weight);
    set.router.bias = copy(src.router.bias);
    set.router.correction_bias = copy(src.router.correction_bias);
    set.experts.gate_up = copy(src.experts.gate_up);
    set.experts.down = copy(src.experts.down);
    set.experts.gate_up_bias = copy(src.experts.gate_up_bias);
    set.experts.down_bias = copy(src.experts.down_bias);
    for (const ConstTensorRef& t : src.experts.w1) w1.push_back(copy(t));
    for (const ConstTensorRef& t : src.experts.w3) w3.push_back(copy(t));
    for (const ConstTensorRef& t : src.experts.w2) w2.push_back(copy(t));
    set.experts.w1 = w1;
    set.experts.w3 = w3;
    set.experts.w2 = w2;
    set.shared.gate = copy(src.shared.gate);
    set.shared.up = copy(src.shared.up);
    set.shared.down = copy(src.shared.down);
    set.shared.gate_weight = copy(src.shared.gate_weight);
  }
};

class StridedWeightViews : public ::testing::TestWithParam<std::tuple<WeightLayout, bool>> {};

TEST_P(StridedWeightViews, SameBitsAsContiguous) {
  const auto [layout, transpose] = GetParam();
  LayerConfig c = pack_config(DType::bf16, true);
  c.routing = {RoutingKind::sigmoid_topk, true, 2, 1, 2.5f, false, true};
  const Problem p(c, 23, with_layout(layout, test::case_seed()));
  SCOPED_TRACE(p.describe());
  const StridedWeights strided(p.weights().view(), 3, transpose);
  for (Backend backend : {Backend::reference, Backend::cpu}) {
    SCOPED_TRACE(to_string(backend));
    const RunResult want = test::run_backend(p, backend);
    Result<Layer> layer = test::make_layer(c, strided.set, backend);
    ASSERT_TRUE(layer.ok()) << layer.status().to_string();
    const RunResult got = test::run_layer(layer.value(), p, want.out.dtype());
    ASSERT_TRUE(want.status.ok() && got.status.ok()) << got.status.to_string();
    EXPECT_EQ(test::count_poison(got.out.cref()), 0);
    EXPECT_TRUE(test::output_bytes(got) == test::output_bytes(want))
        << "strided weights gave different output";
  }
}

INSTANTIATE_TEST_SUITE_P(Pack, StridedWeightViews,
                         ::testing::Combine(::testing::ValuesIn(kLayouts), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_transposed" : "_padded");
                         });

// ---- (d) biases per layout: cpu vs reference ----------------------------------------------------

class BiasLayouts : public ::testing::TestWithParam<WeightLayout> {};

TEST_P(BiasLayouts, GptOssStyleLayerMatchesReference) {
  // gpt-oss: clamped SwiGLU, expert biases, router bias, top-k then softmax.
  const LayerConfig c = test::gpt_oss_like(128, 44, 8, 4);
  const Problem p(c, 41, with_layout(GetParam(), test::case_seed()));
  test::expect_matches_reference(p);
}

// The layouts built here, by the test, from one set of logical matrices (MODELS.md's
// definitions), independently of HostWeights::random's own layout code, and checked against a
// naive computation written in the test: a layout decoded wrongly by the shared weight reader
// would otherwise fool both backends alike.
struct LogicalExperts {
  std::int64_t e, i, h;
  std::vector<float> gate, up, down, gate_bias, up_bias, down_bias;  // [E,I,H] x2, [E,H,I], ...
  float g(std::int64_t x, std::int64_t r, std::int64_t c) const {
    return gate[static_cast<std::size_t>((x * i + r) * h + c)];
  }
  float u(std::int64_t x, std::int64_t r, std::int64_t c) const {
    return up[static_cast<std::size_t>((x * i + r) * h + c)];
  }
  float d(std::int64_t x, std::int64_t r, std::int64_t c) const {
    return down[static_cast<std::size_t>((x * h + r) * i + c)];
  }
};

struct BuiltLayout {
  HostTensor gate_up, down, gate_up_bias, down_bias;
  std::vector<HostTensor> w1, w3, w2;
  std::vector<ConstTensorRef> r1, r3, r2;
  WeightSet set;
};

void put(HostTensor& t, std::int64_t flat, float v) {
  core::store_f32(t.ref().dtype, t.bytes(), flat, v);
}

void build_layout(const LogicalExperts& l, WeightLayout layout, BuiltLayout& b) {
  const std::int64_t e = l.e, in = l.i, h = l.h;
  b.gate_up_bias = HostTensor(DType::f32, {e, 2 * in});
  b.down_bias = HostTensor(DType::f32, {e, h});
  for (std::int64_t x = 0; x < e; ++x) {
    for (std::int64_t c = 0; c < h; ++c)
      put(b.down_bias, x * h + c, l.down_bias[static_cast<std::size_t>(x * h + c)]);
    for (std::int64_t r = 0; r < in; ++r) {
      const float bg = l.gate_bias[static_cast<std::size_t>(x * in + r)];
      const float bu = l.up_bias[static_cast<std::size_t>(x * in + r)];
      const std::int64_t row = x * 2 * in;
      switch (layout) {
        case WeightLayout::up_gate_rows:
          put(b.gate_up_bias, row + in + r, bg);
          put(b.gate_up_bias, row + r, bu);
          break;
        case WeightLayout::interleaved_cols:
          put(b.gate_up_bias, row + 2 * r, bg);
          put(b.gate_up_bias, row + 2 * r + 1, bu);
          break;
        default:
          put(b.gate_up_bias, row + r, bg);
          put(b.gate_up_bias, row + in + r, bu);
          break;
      }
    }
  }
  switch (layout) {
    case WeightLayout::gate_up_rows:
    case WeightLayout::up_gate_rows: {
      const bool gate_first = layout == WeightLayout::gate_up_rows;
      b.gate_up = HostTensor(DType::f32, {e, 2 * in, h});
      b.down = HostTensor(DType::f32, {e, h, in});
      for (std::int64_t x = 0; x < e; ++x) {
        for (std::int64_t r = 0; r < in; ++r) {
          for (std::int64_t c = 0; c < h; ++c) {
            const std::int64_t gate_row = gate_first ? r : in + r, up_row = gate_first ? in + r : r;
            put(b.gate_up, (x * 2 * in + gate_row) * h + c, l.g(x, r, c));
            put(b.gate_up, (x * 2 * in + up_row) * h + c, l.u(x, r, c));
            put(b.down, (x * h + c) * in + r, l.d(x, c, r));
          }
        }
      }
      break;
    }
    case WeightLayout::interleaved_cols:
      b.gate_up = HostTensor(DType::f32, {e, h, 2 * in});
      b.down = HostTensor(DType::f32, {e, in, h});
      for (std::int64_t x = 0; x < e; ++x) {
        for (std::int64_t r = 0; r < in; ++r) {
          for (std::int64_t c = 0; c < h; ++c) {
            put(b.gate_up, (x * h + c) * 2 * in + 2 * r, l.g(x, r, c));
            put(b.gate_up, (x * h + c) * 2 * in + 2 * r + 1, l.u(x, r, c));
            put(b.down, (x * in + r) * h + c, l.d(x, c, r));
          }
        }
      }
      break;
    case WeightLayout::separate:
      for (std::int64_t x = 0; x < e; ++x) {
        b.w1.emplace_back(DType::f32, std::initializer_list<std::int64_t>{in, h});
        b.w3.emplace_back(DType::f32, std::initializer_list<std::int64_t>{in, h});
        b.w2.emplace_back(DType::f32, std::initializer_list<std::int64_t>{h, in});
        for (std::int64_t r = 0; r < in; ++r) {
          for (std::int64_t c = 0; c < h; ++c) {
            put(b.w1.back(), r * h + c, l.g(x, r, c));
            put(b.w3.back(), r * h + c, l.u(x, r, c));
            put(b.w2.back(), c * in + r, l.d(x, c, r));
          }
        }
      }
      for (std::size_t x = 0; x < b.w1.size(); ++x) {
        b.r1.push_back(b.w1[x].cref());
        b.r3.push_back(b.w3[x].cref());
        b.r2.push_back(b.w2[x].cref());
      }
      break;
  }
  b.set.experts.layout = layout;
  b.set.experts.gate_up = b.gate_up.cref();
  b.set.experts.down = b.down.cref();
  b.set.experts.w1 = b.r1;
  b.set.experts.w3 = b.r3;
  b.set.experts.w2 = b.r2;
  b.set.experts.gate_up_bias = b.gate_up_bias.cref();
  b.set.experts.down_bias = b.down_bias.cref();
}

TEST_P(BiasLayouts, HandBuiltLayoutMatchesNaiveMath) {
  // f32, precomputed routing, SwiGLU (asymmetric in gate and up) with biases: a gate/up or
  // bias swap anywhere changes the result far beyond fp32 rounding.
  LayerConfig c = test::make_config(40, 12, 3, 2, DType::f32);
  c.routing.kind = RoutingKind::precomputed;
  c.expert_bias = true;
  const std::uint64_t seed = test::case_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " layout " << to_string(GetParam()));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 0.3f);
  LogicalExperts l{c.experts, c.intermediate, c.hidden, {}, {}, {}, {}, {}, {}};
  for (auto* v : {&l.gate, &l.up, &l.down}) {
    v->resize(static_cast<std::size_t>(l.e * l.i * l.h));
    for (float& f : *v) f = gauss(rng);
  }
  for (auto* v : {&l.gate_bias, &l.up_bias}) {
    v->resize(static_cast<std::size_t>(l.e * l.i));
    for (float& f : *v) f = gauss(rng);
  }
  l.down_bias.resize(static_cast<std::size_t>(l.e * l.h));
  for (float& f : l.down_bias) f = gauss(rng);
  BuiltLayout built;
  build_layout(l, GetParam(), built);

  const std::int64_t t_count = 6, k = c.top_k;
  HostTensor x(DType::f32, {t_count, c.hidden});
  x.randomize(Fill::gaussian, seed, 7);
  HostTensor ids(DType::i32, {t_count, k}), w(DType::f32, {t_count, k});
  zipf_routing(t_count, c.experts, k, 0.0, seed, ids.ref(), w.ref());
  const auto* xp = static_cast<const float*>(x.cref().data);
  const auto* idp = static_cast<const std::int32_t*>(ids.cref().data);
  const auto* wp = static_cast<const float*>(w.cref().data);

  // naive: out[t] = sum_j w_j (down_e silu-glu(gate_e x + bg, up_e x + bu) + bd)
  HostTensor naive(DType::f32, {t_count, c.hidden});
  auto* np = static_cast<float*>(naive.ref().data);
  for (std::int64_t t = 0; t < t_count; ++t) {
    std::vector<double> acc(static_cast<std::size_t>(c.hidden), 0.0);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = idp[t * k + j];
      std::vector<double> a(static_cast<std::size_t>(c.intermediate));
      for (std::int64_t r = 0; r < c.intermediate; ++r) {
        double g = l.gate_bias[static_cast<std::size_t>(e * l.i + r)];
        double u = l.up_bias[static_cast<std::size_t>(e * l.i + r)];
        for (std::int64_t hh = 0; hh < c.hidden; ++hh) {
          g += double{l.g(e, r, hh)} * xp[t * c.hidden + hh];
          u += double{l.u(e, r, hh)} * xp[t * c.hidden + hh];
        }
        a[static_cast<std::size_t>(r)] = g / (1.0 + std::exp(-g)) * u;
      }
      for (std::int64_t hh = 0; hh < c.hidden; ++hh) {
        double y = l.down_bias[static_cast<std::size_t>(e * l.h + hh)];
        for (std::int64_t r = 0; r < c.intermediate; ++r)
          y += double{l.d(e, hh, r)} * a[static_cast<std::size_t>(r)];
        acc[static_cast<std::size_t>(hh)] += double{wp[t * k + j]} * y;
      }
    }
    for (std::int64_t hh = 0; hh < c.hidden; ++hh)
      np[t * c.hidden + hh] = static_cast<float>(acc[static_cast<std::size_t>(hh)]);
  }

  for (Backend backend : {Backend::reference, Backend::cpu}) {
    SCOPED_TRACE(to_string(backend));
    Result<Layer> layer = test::make_layer(c, built.set, backend);
    ASSERT_TRUE(layer.ok()) << layer.status().to_string();
    test::GuardedOutput out(DType::f32, t_count, c.hidden);
    std::vector<std::byte> ws(layer->workspace_size(t_count));
    ForwardArgs a;
    a.x = x.cref();
    a.out = out.ref();
    a.topk_ids = ids.cref();
    a.topk_weights = w.cref();
    a.workspace = {ws.data(), ws.size()};
    ASSERT_TRUE(layer->forward(a).ok());
    Result<Comparison> cmp = compare(out.cref(), naive.cref(), tolerance_for(DType::f32));
    ASSERT_TRUE(cmp.ok());
    EXPECT_TRUE(cmp->passed) << cmp->summary();
  }
}

INSTANTIATE_TEST_SUITE_P(Pack, BiasLayouts, ::testing::ValuesIn(kLayouts),
                         [](const auto& info) { return std::string(to_string(info.param)); });

// ---- (e) packed weights outlive the caller's buffers
// ----------------------------------------------

class PackedOwnsMemory : public ::testing::TestWithParam<std::tuple<Backend, WeightLayout>> {};

TEST_P(PackedOwnsMemory, LayerRunsAfterSourcesAreOverwrittenAndFreed) {
  const auto [backend, layout] = GetParam();
  const LayerConfig c = pack_config(DType::bf16, true);
  const Problem p(c, 19, with_layout(layout, test::case_seed()));
  SCOPED_TRACE(p.describe());
  const RunResult want = test::run_backend(p, backend);
  ASSERT_TRUE(want.status.ok());

  WorkloadOptions wo;
  wo.seed = p.options.seed;
  wo.layout = layout;
  auto source = std::make_unique<HostWeights>(HostWeights::random(c, wo));
  Result<Layer> layer = test::make_layer(c, source->view(), backend);
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  // Scribble over the sources before freeing them: a layer still reading them would see NaN
  // (and AddressSanitizer would see the use after free).
  for (HostTensor* t : {&source->router, &source->gate_up, &source->down, &source->gate_up_bias,
                        &source->down_bias, &source->shared_gate, &source->shared_up,
                        &source->shared_down, &source->shared_gate_weight}) {
    if (t->size_bytes() > 0) t->poison();  // (poison() on an empty tensor: see Workload below)
  }
  for (auto* v : {&source->w1, &source->w3, &source->w2}) {
    for (HostTensor& t : *v) t.poison();
  }
  source.reset();
  const RunResult got = test::run_layer(layer.value(), p, want.out.dtype());
  ASSERT_TRUE(got.status.ok()) << got.status.to_string();
  EXPECT_TRUE(test::output_bytes(got) == test::output_bytes(want));
}

INSTANTIATE_TEST_SUITE_P(Pack, PackedOwnsMemory,
                         ::testing::Combine(::testing::Values(Backend::reference, Backend::cpu),
                                            ::testing::Values(WeightLayout::gate_up_rows,
                                                              WeightLayout::separate)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

TEST(Pack, PackedWeightsReportTheirBackendAndSize) {
  const LayerConfig c = pack_config(DType::bf16, false);
  const Problem p(c, 1);
  for (Backend backend : {Backend::reference, Backend::cpu}) {
    Result<PackedWeights> packed = pack_weights(c, p.weights().view(), backend);
    ASSERT_TRUE(packed.ok()) << packed.status().to_string();
    EXPECT_EQ(packed->backend(), backend);
    // at least the routed experts' gate, up and down in the layer dtype
    EXPECT_GE(packed->bytes(),
              static_cast<std::size_t>(c.experts * 3 * c.hidden * c.intermediate * 2));
  }
}

// ---- the data generator every test relies on ----------------------------------------------------

TEST(Workload, RandomizeIsDeterministicAndIndependentOfThreads) {
  // counter-based: the same (seed, stream) gives the same bytes, other streams differ
  HostTensor a(DType::bf16, {300, 77}), b(DType::bf16, {300, 77}), c(DType::bf16, {300, 77});
  a.randomize(Fill::gaussian, 42, 5);
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
#endif
  b.randomize(Fill::gaussian, 42, 5);
#ifdef _OPENMP
  omp_set_num_threads(saved);
#endif
  c.randomize(Fill::gaussian, 42, 6);
  EXPECT_EQ(std::memcmp(a.bytes(), b.bytes(), a.size_bytes()), 0);
  EXPECT_NE(std::memcmp(a.bytes(), c.bytes(), a.size_bytes()), 0);
}

TEST(Workload, FillsHaveTheDocumentedValues) {
  HostTensor ints(DType::f32, {5000});
  ints.randomize(Fill::integer, 7, 1);
  HostTensor gauss(DType::f32, {20000});
  gauss.randomize(Fill::gaussian, 7, 1, 2.0f);
  const auto* i = static_cast<const float*>(ints.cref().data);
  std::set<float> seen;
  for (std::int64_t n = 0; n < 5000; ++n) {
    ASSERT_EQ(i[n], std::round(i[n]));
    ASSERT_GE(i[n], -4.0f);
    ASSERT_LE(i[n], 4.0f);
    seen.insert(i[n]);
  }
  EXPECT_EQ(seen.size(), 9u) << "every integer in [-4, 4] occurs";
  const auto* g = static_cast<const float*>(gauss.cref().data);
  double sum = 0, sum2 = 0;
  for (std::int64_t n = 0; n < 20000; ++n) {
    sum += g[n];
    sum2 += double{g[n]} * g[n];
  }
  EXPECT_NEAR(sum / 20000, 0.0, 0.05);
  EXPECT_NEAR(std::sqrt(sum2 / 20000), 2.0, 0.05) << "N(0, scale^2)";
}

TEST(Workload, PoisonIsNaNInEveryFloatFormat) {
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    HostTensor t(dt, {3, 5});
    t.randomize(Fill::gaussian, 1, 1);
    t.poison();
    for (std::int64_t n = 0; n < 15; ++n) {
      EXPECT_TRUE(std::isnan(core::load_f32(dt, t.cref().data, n))) << to_string(dt);
    }
    EXPECT_EQ(test::count_poison(t.cref()), 3 * 5);
  }
}

TEST(Workload, PoisonOnAnEmptyTensorIsSafe) {
  // HostWeights leaves the tensors a layout does not use empty (gate_up for `separate`); poisoning
  // "everything" must not be undefined behaviour (memset on a null pointer).
  HostTensor empty;
  empty.poison();
  HostTensor zero_rows(DType::f32, {0, 8});
  zero_rows.poison();
  EXPECT_EQ(empty.size_bytes(), 0u);
  EXPECT_EQ(zero_rows.size_bytes(), 0u);
}

TEST(Workload, HostTensorsAndWeightsAreMoveOnly) {
  // A copy's view would point at the original's storage, which may be freed first: copying is
  // deleted, moving keeps the view (next test).
  static_assert(!std::is_copy_constructible_v<HostTensor>);
  static_assert(!std::is_copy_assignable_v<HostTensor>);
  static_assert(!std::is_copy_constructible_v<HostWeights>);
  EXPECT_TRUE(std::is_nothrow_move_constructible_v<HostTensor>);
  EXPECT_TRUE(std::is_nothrow_move_constructible_v<HostWeights>);
}

TEST(Workload, MovingAHostTensorKeepsItsView) {
  HostTensor a(DType::bf16, {6, 10});
  a.randomize(Fill::gaussian, 4, 4);
  const std::vector<std::byte> bytes(a.bytes(), a.bytes() + a.size_bytes());
  HostTensor b = std::move(a);
  ASSERT_EQ(b.cref().data, static_cast<const void*>(b.bytes()));
  EXPECT_EQ(std::memcmp(b.cref().data, bytes.data(), bytes.size()), 0);
  EXPECT_EQ(b.cref().shape[0], 6);
  EXPECT_EQ(b.cref().shape[1], 10);
}

}  // namespace
}  // namespace fusedmoe
