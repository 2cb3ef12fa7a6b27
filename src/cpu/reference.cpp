// The reference backend: the oracle every other backend is checked against. Naive loops over
// tokens, experts and output elements with float64 accumulation, no blocking, no reordering, no
// SIMD; obviously right rather than fast. It shares only the routing and activation formulas with
// the fast paths (core/routing.hpp, core/activation.hpp), which have hand-computed tests of their
// own.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <new>
#include <vector>

#include "core/activation.hpp"
#include "core/backend.hpp"
#include "core/half.hpp"
#include "core/routing.hpp"

namespace fusedmoe::cpu {
namespace {

using core::load_f32;

struct ReferenceWeights final : PackedWeights::Impl {
  using Impl::Impl;
  std::size_t bytes() const override {
    std::size_t b = gate.size() + up.size() + down.size() + shared_gate.size() + shared_up.size() +
                    shared_down.size();
    for (const auto* v : {&gate_bias, &up_bias, &down_bias, &router, &router_bias, &correction_bias,
                          &shared_gate_weight}) {
      b += v->size() * sizeof(float);
    }
    return b;
  }
  std::vector<std::byte> gate, up, down;             // [E, I, H], [E, I, H], [E, H, I], layer dtype
  std::vector<float> gate_bias, up_bias, down_bias;  // [E, I], [E, I], [E, H]
  std::vector<float> router, router_bias, correction_bias;     // [E, H], [E], [E]
  std::vector<std::byte> shared_gate, shared_up, shared_down;  // [Is, H], [Is, H], [H, Is]
  std::vector<float> shared_gate_weight;                       // [H]
};

std::vector<std::byte> copy_experts(const core::WeightSource& src, std::int64_t experts,
                                    core::MatrixView (core::WeightSource::*part)(std::int64_t)
                                        const) {
  const core::MatrixView first = (src.*part)(0);
  const std::size_t per_expert =
      static_cast<std::size_t>(first.rows * first.cols) * dtype_size(first.dtype);
  std::vector<std::byte> out(per_expert * static_cast<std::size_t>(experts));
  for (std::int64_t e = 0; e < experts; ++e) {
    (src.*part)(e).copy_to(out.data() + per_expert * static_cast<std::size_t>(e));
  }
  return out;
}

std::vector<float> copy_bias(const core::WeightSource& src, std::int64_t experts,
                             core::MatrixView (core::WeightSource::*part)(std::int64_t) const) {
  std::vector<float> out;
  for (std::int64_t e = 0; e < experts; ++e) {
    const std::vector<float> row = (src.*part)(e).to_f32();
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

std::vector<std::byte> copy_matrix(const core::MatrixView& m) {
  std::vector<std::byte> out(static_cast<std::size_t>(m.rows * m.cols) * dtype_size(m.dtype));
  m.copy_to(out.data());
  return out;
}

// Σ_h a[h] · b[h] in double; b is `n` elements of `dtype` at `b`.
double dot(const double* a, DType dtype, const void* b, std::int64_t n) {
  double acc = 0;
  for (std::int64_t h = 0; h < n; ++h) acc += a[h] * double{load_f32(dtype, b, h)};
  return acc;
}

// Σ_h |a[h] · b[h]|: the magnitude of the terms dot() adds.
double abs_dot(const double* a, DType dtype, const void* b, std::int64_t n) {
  double acc = 0;
  for (std::int64_t h = 0; h < n; ++h) acc += std::abs(a[h] * double{load_f32(dtype, b, h)});
  return acc;
}

const std::byte* row_ptr(const std::vector<std::byte>& m, DType dtype, std::int64_t row,
                         std::int64_t cols) {
  return m.data() + static_cast<std::size_t>(row * cols) * dtype_size(dtype);
}

// One expert MLP on one token: y[h] = Σ_i act(x·gate_i + bg_i, x·up_i + bu_i) · down[h, i] + bd_h,
// and, when `y_mag` is not null, y_mag[h] = Σ_i |act_i · down[h, i]| + |bd_h|.
void expert_mlp(const LayerConfig& c, const double* x, std::int64_t inter, const std::byte* gate,
                const std::byte* up, const std::byte* down, const float* gate_bias,
                const float* up_bias, const float* down_bias, double* act, double* y,
                double* y_mag) {
  const std::int64_t h_dim = c.hidden;
  const std::size_t es = dtype_size(c.dtype);
  for (std::int64_t i = 0; i < inter; ++i) {
    double g = dot(x, c.dtype, gate + static_cast<std::size_t>(i * h_dim) * es, h_dim);
    double u = dot(x, c.dtype, up + static_cast<std::size_t>(i * h_dim) * es, h_dim);
    if (gate_bias != nullptr) {
      g += gate_bias[i];
      u += up_bias[i];
    }
    act[i] = core::apply_activation(c, g, u);
  }
  for (std::int64_t h = 0; h < h_dim; ++h) {
    const std::byte* row = down + static_cast<std::size_t>(h * inter) * es;
    const double bias = down_bias != nullptr ? double{down_bias[h]} : 0.0;
    y[h] = dot(act, c.dtype, row, inter) + bias;
    if (y_mag != nullptr) y_mag[h] = abs_dot(act, c.dtype, row, inter) + std::abs(bias);
  }
}

class ReferenceBackend final : public core::BackendOps {
 public:
  Backend kind() const override { return Backend::reference; }
  Device device() const override { return Device::cpu(); }
  bool writes_f32_out() const override { return true; }

  Result<std::unique_ptr<PackedWeights::Impl>> pack(const LayerConfig& c,
                                                    const core::WeightSource& src) const override {
    auto w = std::make_unique<ReferenceWeights>(Backend::reference, c);
    const std::int64_t e = c.experts;
    w->gate = copy_experts(src, e, &core::WeightSource::gate);
    w->up = copy_experts(src, e, &core::WeightSource::up);
    w->down = copy_experts(src, e, &core::WeightSource::down);
    if (c.expert_bias) {
      w->gate_bias = copy_bias(src, e, &core::WeightSource::gate_bias);
      w->up_bias = copy_bias(src, e, &core::WeightSource::up_bias);
      w->down_bias = copy_bias(src, e, &core::WeightSource::down_bias);
    }
    w->router = src.router().to_f32();
    w->router_bias = src.router_bias().to_f32();
    w->correction_bias = src.correction_bias().to_f32();
    if (c.shared.intermediate > 0) {
      w->shared_gate = copy_matrix(src.shared_gate());
      w->shared_up = copy_matrix(src.shared_up());
      w->shared_down = copy_matrix(src.shared_down());
      w->shared_gate_weight = src.shared_gate_weight().to_f32();
    }
    return std::unique_ptr<PackedWeights::Impl>(std::move(w));
  }

  std::size_t workspace_size(const LayerConfig&, std::int64_t) const override { return 0; }
  std::string describe(const LayerConfig&, std::int64_t) const override {
    return "reference: fp64 accumulation";
  }

  Status forward(const PackedWeights::Impl& packed, const ForwardArgs& a) const override {
    const auto& w = static_cast<const ReferenceWeights&>(packed);
    const LayerConfig& c = w.config;
    const std::int64_t tokens = a.x.size(0), h_dim = c.hidden, k = c.top_k, e_count = c.experts;
    const std::int64_t inter = c.intermediate, shared_inter = c.shared.intermediate;
    const bool magnitude = a.magnitude_out.present();
    std::int64_t invalid = 0;

    // Per-thread scratch, allocated before anything is written: an exception must not leave an
    // OpenMP region (that terminates the process), and a failed call writes nothing.
    std::atomic<bool> out_of_memory{false};
#pragma omp parallel reduction(+ : invalid)
    {
      std::vector<double> x, acc, y, act, logits, real_scratch, mag, y_mag;
      std::vector<std::int32_t> index_scratch, ids;
      std::vector<float> weights;
      try {
        x.resize(static_cast<std::size_t>(h_dim));
        acc.resize(x.size());
        y.resize(x.size());
        if (magnitude) {
          mag.resize(x.size());
          y_mag.resize(x.size());
        }
        act.resize(static_cast<std::size_t>(std::max(inter, shared_inter)));
        logits.resize(static_cast<std::size_t>(e_count));
        real_scratch.resize(static_cast<std::size_t>(core::kRouteRealScratch * e_count));
        index_scratch.resize(static_cast<std::size_t>(core::kRouteIndexScratch * e_count));
        ids.resize(static_cast<std::size_t>(k));
        weights.resize(static_cast<std::size_t>(k));
      } catch (const std::bad_alloc&) {
        out_of_memory = true;
      }
#pragma omp barrier
      if (!out_of_memory) {
#pragma omp for schedule(dynamic, 1)
        for (std::int64_t t = 0; t < tokens; ++t) {
          for (std::int64_t h = 0; h < h_dim; ++h) {
            x[h] = load_f32(c.dtype, a.x.data, t * a.x.stride(0) + h);
          }
          if (c.routing.kind == RoutingKind::precomputed) {
            for (std::int64_t j = 0; j < k; ++j) {
              ids[j] = static_cast<const std::int32_t*>(
                  a.topk_ids.data)[t * a.topk_ids.stride(0) + j * a.topk_ids.stride(1)];
              weights[j] = static_cast<const float*>(
                  a.topk_weights.data)[t * a.topk_weights.stride(0) + j * a.topk_weights.stride(1)];
            }
          } else {
            for (std::int64_t e = 0; e < e_count; ++e) {
              double l = 0;
              for (std::int64_t h = 0; h < h_dim; ++h) l += x[h] * double{w.router[e * h_dim + h]};
              logits[e] = l + (w.router_bias.empty() ? 0.0 : double{w.router_bias[e]});
            }
            core::route_token<double>(
                c.routing, e_count, k, logits.data(),
                w.correction_bias.empty() ? nullptr : w.correction_bias.data(), real_scratch.data(),
                index_scratch.data(), ids.data(), weights.data());
          }

          std::fill(acc.begin(), acc.end(), 0.0);
          std::fill(mag.begin(), mag.end(), 0.0);
          double* const y_mag_or_null = magnitude ? y_mag.data() : nullptr;
          for (std::int64_t j = 0; j < k; ++j) {
            const std::int64_t e = ids[j];
            if (e < 0 || e >= e_count) {
              ++invalid;  // only precomputed ids can be out of range
              continue;
            }
            const bool bias = c.expert_bias;
            expert_mlp(
                c, x.data(), inter, row_ptr(w.gate, c.dtype, e * inter, h_dim),
                row_ptr(w.up, c.dtype, e * inter, h_dim),
                row_ptr(w.down, c.dtype, e * h_dim, inter),
                bias ? &w.gate_bias[e * inter] : nullptr, bias ? &w.up_bias[e * inter] : nullptr,
                bias ? &w.down_bias[e * h_dim] : nullptr, act.data(), y.data(), y_mag_or_null);
            for (std::int64_t h = 0; h < h_dim; ++h) acc[h] += double{weights[j]} * y[h];
            if (magnitude) {
              for (std::int64_t h = 0; h < h_dim; ++h) {
                mag[h] += std::abs(double{weights[j]}) * y_mag[h];
              }
            }
          }
          if (shared_inter > 0) {
            expert_mlp(c, x.data(), shared_inter, w.shared_gate.data(), w.shared_up.data(),
                       w.shared_down.data(), nullptr, nullptr, nullptr, act.data(), y.data(),
                       y_mag_or_null);
            double gate = 1.0;
            if (c.shared.gated) {
              double g = 0;
              for (std::int64_t h = 0; h < h_dim; ++h) g += x[h] * double{w.shared_gate_weight[h]};
              gate = core::sigmoid(g);
            }
            for (std::int64_t h = 0; h < h_dim; ++h) acc[h] += gate * y[h];
            if (magnitude) {
              for (std::int64_t h = 0; h < h_dim; ++h) mag[h] += std::abs(gate) * y_mag[h];
            }
          }

          for (std::int64_t h = 0; h < h_dim; ++h) {
            core::store_f32(a.out.dtype, a.out.data, t * a.out.stride(0) + h,
                            static_cast<float>(acc[h]));
          }
          if (magnitude) {
            auto* m = static_cast<float*>(a.magnitude_out.data);
            for (std::int64_t h = 0; h < h_dim; ++h) {
              m[t * a.magnitude_out.stride(0) + h * a.magnitude_out.stride(1)] =
                  static_cast<float>(mag[h]);
            }
          }
          for (std::int64_t j = 0; j < k; ++j) {
            if (a.ids_out.present()) {
              static_cast<std::int32_t*>(
                  a.ids_out.data)[t * a.ids_out.stride(0) + j * a.ids_out.stride(1)] = ids[j];
            }
            if (a.weights_out.present()) {
              static_cast<float*>(
                  a.weights_out.data)[t * a.weights_out.stride(0) + j * a.weights_out.stride(1)] =
                  weights[j];
            }
          }
        }
      }
    }
    if (out_of_memory) return {StatusCode::out_of_memory, "reference forward ran out of memory"};
    packed.invalid_ids += invalid;
    return {};
  }
};

}  // namespace
}  // namespace fusedmoe::cpu

namespace fusedmoe::core {

const BackendOps& reference_backend() {
  static const cpu::ReferenceBackend backend;
  return backend;
}

}  // namespace fusedmoe::core
