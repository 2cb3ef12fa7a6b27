#include "fusedmoe/workload.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>

#include "core/half.hpp"

namespace fusedmoe {
namespace {

std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A counter-based generator: the i-th value of stream `stream` under `seed`.
struct Generator {
  std::uint64_t key;
  Generator(std::uint64_t seed, std::uint64_t stream) : key(mix(mix(seed) ^ mix(stream + 1))) {}
  std::uint64_t bits(std::uint64_t i) const { return mix(key ^ (i * 0xd1b54a32d192ed03ull)); }
  // uniform in (0, 1)
  double uniform(std::uint64_t i) const {
    return (static_cast<double>(bits(i) >> 11) + 0.5) * 0x1p-53;
  }
  float value(Fill fill, std::uint64_t i, float scale) const {
    const std::uint64_t b = bits(i);
    if (fill == Fill::integer) return static_cast<float>(static_cast<int>(b % 9) - 4);
    return static_cast<float>(inverse_normal_cdf((static_cast<double>(b >> 11) + 0.5) * 0x1p-53)) *
           scale;
  }

  // The standard normal quantile by Acklam's rational approximation (relative error < 1.2e-9):
  // one division in the central 95%, a log and a square root only in the tails, which makes
  // gigabytes of Gaussian weights several times faster to draw than Box-Muller.
  static double inverse_normal_cdf(double p) {
    constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                            1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                            6.680131188771972e+01, -1.328068155288572e+01};
    constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                            -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                            3.754408661907416e+00};
    constexpr double kLow = 0.02425;
    if (p < kLow || p > 1 - kLow) {
      const double q = std::sqrt(-2 * std::log(p < kLow ? p : 1 - p));
      const double x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                       ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
      return p < kLow ? x : -x;
    }
    const double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
};

// Streams of the logical weights: a weight's values do not depend on the layout it is stored in.
enum Stream : std::uint64_t {
  kRouter = 1,
  kRouterBias,
  kCorrectionBias,
  kGate,
  kUp,
  kDown,
  kGateBias,
  kUpBias,
  kDownBias,
  kSharedGate,
  kSharedUp,
  kSharedDown,
  kSharedGateWeight,
};

// Fills `t` (any rank, contiguous) element by element from value(flat index) in parallel over
// the first dimension.
template <class ValueFn>
void fill_tensor(HostTensor& tensor, ValueFn value) {
  TensorRef t = tensor.ref();
  const std::int64_t n = t.numel();
  const std::int64_t outer = t.rank > 0 ? t.size(0) : 1;
  const std::int64_t inner = outer > 0 ? n / outer : 0;
#pragma omp parallel for schedule(static)
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t i = o * inner; i < (o + 1) * inner; ++i) {
      core::store_f32(t.dtype, t.data, i, value(i));
    }
  }
}

}  // namespace

HostTensor::HostTensor(DType dtype, std::initializer_list<std::int64_t> shape) {
  std::int64_t n = 1;
  for (std::int64_t s : shape) n *= s;
  storage_.resize(static_cast<std::size_t>(n) * dtype_size(dtype));
  view_ = make_tensor(static_cast<void*>(storage_.data()), dtype, shape);
}

void HostTensor::randomize(Fill fill, std::uint64_t seed, std::uint64_t stream, float scale) {
  const Generator g(seed, stream);
  if (view_.dtype == DType::i32) {
    auto* p = reinterpret_cast<std::int32_t*>(storage_.data());
    for (std::int64_t i = 0; i < view_.numel(); ++i) {
      p[i] = static_cast<std::int32_t>(g.value(Fill::integer, static_cast<std::uint64_t>(i), 1));
    }
    return;
  }
  fill_tensor(*this,
              [&](std::int64_t i) { return g.value(fill, static_cast<std::uint64_t>(i), scale); });
}

HostTensor::HostTensor(HostTensor&& other) noexcept
    : storage_(std::move(other.storage_)), view_(std::exchange(other.view_, {})) {}

HostTensor& HostTensor::operator=(HostTensor&& other) noexcept {
  storage_ = std::move(other.storage_);
  view_ = std::exchange(other.view_, {});
  return *this;
}

void HostTensor::poison() {
  if (!storage_.empty()) std::memset(storage_.data(), 0xff, storage_.size());
}

HostWeights HostWeights::random(const LayerConfig& c, const WorkloadOptions& o) {
  HostWeights w;
  w.layout_ = o.layout;
  const std::int64_t e = c.experts, h = c.hidden, in = c.intermediate, is = c.shared.intermediate;
  const DType dt = c.dtype;
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(h));
  const float down_scale = 1.0f / std::sqrt(static_cast<float>(in));
  const auto gen = [&](Stream s) { return Generator(o.seed, s); };
  const Generator gate = gen(kGate), up = gen(kUp), down = gen(kDown);
  const auto u64 = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  // Logical values: gate(e, i, h), up(e, i, h), down(e, h, i), biases (e, i) / (e, h).
  const auto gate_v = [&](std::int64_t x, std::int64_t i, std::int64_t y) {
    return gate.value(o.fill, u64((x * in + i) * h + y), in_scale);
  };
  const auto up_v = [&](std::int64_t x, std::int64_t i, std::int64_t y) {
    return up.value(o.fill, u64((x * in + i) * h + y), in_scale);
  };
  const auto down_v = [&](std::int64_t x, std::int64_t y, std::int64_t i) {
    return down.value(o.fill, u64((x * h + y) * in + i), down_scale);
  };

  if (c.routing.kind != RoutingKind::precomputed) {
    w.router = HostTensor(dt, {e, h});
    w.router.randomize(o.fill, o.seed, kRouter, in_scale);
  }
  if (c.routing.router_bias) {
    w.router_bias = HostTensor(DType::f32, {e});
    w.router_bias.randomize(o.fill, o.seed, kRouterBias, 0.5f);
  }
  if (c.routing.correction_bias) {
    w.correction_bias = HostTensor(DType::f32, {e});
    w.correction_bias.randomize(o.fill, o.seed, kCorrectionBias, 0.1f);
  }

  switch (o.layout) {
    case WeightLayout::gate_up_rows:
    case WeightLayout::up_gate_rows: {
      const bool gate_first = o.layout == WeightLayout::gate_up_rows;
      w.gate_up = HostTensor(dt, {e, 2 * in, h});
      fill_tensor(w.gate_up, [&](std::int64_t f) {
        const std::int64_t y = f % h, r = (f / h) % (2 * in), x = f / (h * 2 * in);
        const bool is_gate = (r < in) == gate_first;
        return is_gate ? gate_v(x, r % in, y) : up_v(x, r % in, y);
      });
      w.down = HostTensor(dt, {e, h, in});
      fill_tensor(w.down,
                  [&](std::int64_t f) { return down_v(f / (h * in), (f / in) % h, f % in); });
      break;
    }
    case WeightLayout::interleaved_cols:
      w.gate_up = HostTensor(dt, {e, h, 2 * in});
      fill_tensor(w.gate_up, [&](std::int64_t f) {
        const std::int64_t col = f % (2 * in), y = (f / (2 * in)) % h, x = f / (2 * in * h);
        return col % 2 == 0 ? gate_v(x, col / 2, y) : up_v(x, col / 2, y);
      });
      w.down = HostTensor(dt, {e, in, h});
      fill_tensor(w.down,
                  [&](std::int64_t f) { return down_v(f / (in * h), f % h, (f / h) % in); });
      break;
    case WeightLayout::separate:
      for (std::int64_t x = 0; x < e; ++x) {
        w.w1.emplace_back(dt, std::initializer_list<std::int64_t>{in, h});
        fill_tensor(w.w1.back(), [&](std::int64_t f) { return gate_v(x, f / h, f % h); });
        w.w3.emplace_back(dt, std::initializer_list<std::int64_t>{in, h});
        fill_tensor(w.w3.back(), [&](std::int64_t f) { return up_v(x, f / h, f % h); });
        w.w2.emplace_back(dt, std::initializer_list<std::int64_t>{h, in});
        fill_tensor(w.w2.back(), [&](std::int64_t f) { return down_v(x, f / in, f % in); });
      }
      break;
  }

  if (c.expert_bias) {
    const Generator gb = gen(kGateBias), ub = gen(kUpBias);
    w.gate_up_bias = HostTensor(DType::f32, {e, 2 * in});
    fill_tensor(w.gate_up_bias, [&](std::int64_t f) {
      const std::int64_t x = f / (2 * in), col = f % (2 * in);
      std::int64_t i = 0;
      bool is_gate = false;
      switch (o.layout) {
        case WeightLayout::interleaved_cols:
          is_gate = col % 2 == 0;
          i = col / 2;
          break;
        case WeightLayout::up_gate_rows:
          is_gate = col >= in;
          i = col % in;
          break;
        default:
          is_gate = col < in;
          i = col % in;
          break;
      }
      return (is_gate ? gb : ub).value(o.fill, u64(x * in + i), 0.5f);
    });
    w.down_bias = HostTensor(DType::f32, {e, h});
    w.down_bias.randomize(o.fill, o.seed, kDownBias, 0.5f);
  }

  if (is > 0) {
    w.shared_gate = HostTensor(dt, {is, h});
    w.shared_gate.randomize(o.fill, o.seed, kSharedGate, in_scale);
    w.shared_up = HostTensor(dt, {is, h});
    w.shared_up.randomize(o.fill, o.seed, kSharedUp, in_scale);
    w.shared_down = HostTensor(dt, {h, is});
    w.shared_down.randomize(o.fill, o.seed, kSharedDown, 1.0f / std::sqrt(static_cast<float>(is)));
    if (c.shared.gated) {
      w.shared_gate_weight = HostTensor(dt, {1, h});
      w.shared_gate_weight.randomize(o.fill, o.seed, kSharedGateWeight, in_scale);
    }
  }
  for (const HostTensor& t : w.w1) w.w1_refs_.push_back(t.cref());
  for (const HostTensor& t : w.w3) w.w3_refs_.push_back(t.cref());
  for (const HostTensor& t : w.w2) w.w2_refs_.push_back(t.cref());
  return w;
}

WeightSet HostWeights::view() const {
  WeightSet s;
  s.router = {router.cref(), router_bias.cref(), correction_bias.cref()};
  s.experts.layout = layout_;
  s.experts.gate_up = gate_up.cref();
  s.experts.down = down.cref();
  s.experts.w1 = w1_refs_;
  s.experts.w3 = w3_refs_;
  s.experts.w2 = w2_refs_;
  s.experts.gate_up_bias = gate_up_bias.cref();
  s.experts.down_bias = down_bias.cref();
  s.shared = {shared_gate.cref(), shared_up.cref(), shared_down.cref(), shared_gate_weight.cref()};
  return s;
}

std::size_t HostWeights::bytes() const {
  std::size_t b = 0;
  for (const HostTensor* t :
       {&router, &router_bias, &correction_bias, &gate_up, &down, &gate_up_bias, &down_bias,
        &shared_gate, &shared_up, &shared_down, &shared_gate_weight}) {
    b += t->size_bytes();
  }
  for (const auto* v : {&w1, &w3, &w2}) {
    for (const HostTensor& t : *v) b += t.size_bytes();
  }
  return b;
}

void zipf_routing(std::int64_t tokens, std::int64_t experts, std::int64_t k, double s,
                  std::uint64_t seed, TensorRef ids, TensorRef weights) {
  const Generator g(seed, 0x21f);
  // rank[e]: expert e's popularity rank, from a seeded shuffle
  std::vector<std::int64_t> order(static_cast<std::size_t>(experts));
  std::iota(order.begin(), order.end(), 0);
  for (std::int64_t i = experts - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(g.bits(static_cast<std::uint64_t>(i)) %
                                             static_cast<std::uint64_t>(i + 1));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  std::vector<double> p(static_cast<std::size_t>(experts));
  for (std::int64_t r = 0; r < experts; ++r) {
    p[static_cast<std::size_t>(order[static_cast<std::size_t>(r)])] =
        1.0 / std::pow(static_cast<double>(r + 1), s);
  }
  auto* id = static_cast<std::int32_t*>(ids.data);
  auto* wt = static_cast<float*>(weights.data);
#pragma omp parallel
  {
    std::vector<double> left;
#pragma omp for schedule(static)
    for (std::int64_t t = 0; t < tokens; ++t) {
      const Generator tg(seed, 0x1000 + static_cast<std::uint64_t>(t));
      left = p;
      double total = std::accumulate(left.begin(), left.end(), 0.0);
      double wsum = 0;
      for (std::int64_t j = 0; j < k; ++j) {
        // draw an expert among those left, proportionally to its share
        double u = tg.uniform(static_cast<std::uint64_t>(2 * j)) * total;
        std::int64_t e = 0;
        while (e < experts - 1 &&
               (left[static_cast<std::size_t>(e)] == 0 || u >= left[static_cast<std::size_t>(e)])) {
          u -= left[static_cast<std::size_t>(e)];
          ++e;
        }
        while (left[static_cast<std::size_t>(e)] == 0) --e;  // rounding ran past the last one
        total -= left[static_cast<std::size_t>(e)];
        left[static_cast<std::size_t>(e)] = 0;
        id[t * ids.stride(0) + j * ids.stride(1)] = static_cast<std::int32_t>(e);
        const double w = 0.1 + tg.uniform(static_cast<std::uint64_t>(2 * j + 1));
        wt[t * weights.stride(0) + j * weights.stride(1)] = static_cast<float>(w);
        wsum += w;
      }
      for (std::int64_t j = 0; j < k; ++j) {
        float& w = wt[t * weights.stride(0) + j * weights.stride(1)];
        w = static_cast<float>(w / wsum);
      }
    }
  }
}

}  // namespace fusedmoe
