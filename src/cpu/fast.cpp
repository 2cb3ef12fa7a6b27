// The fast CPU backend: every core, SIMD chosen at run time (cpu/kernels/dot_tile.hpp).
//
// Stages, each a parallel loop over independent outputs (never over a reduction, so the result
// does not depend on the thread count or on which tokens share the batch):
//   router   logits[T, E(+1)] = x · Wrᵀ (f32; the extra column is the shared expert's gate)
//   top-k    per token, core/routing.hpp
//   align    per-expert counts and offsets, tokens placed in (expert, token, slot) order
//   GEMM1    per (expert, block of packed rows): gate and up rows of a block are interleaved in
//            groups of 4, so one dot_tile call yields both, and the activation is applied on the
//            spot; act [T·k, I] stays f32
//   GEMM2    per (expert, block of H): y = w · (act · W2ᵀ + b2), f32
//   combine  per token: out = Σ_j y[slot j] (in slot order) + gate · shared, rounded once
#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "core/activation.hpp"
#include "core/backend.hpp"
#include "core/half.hpp"
#include "core/routing.hpp"
#include "cpu/kernels/dot_tile.hpp"

namespace fusedmoe::cpu {
namespace {

constexpr std::int64_t kPairRows = 4;                  // gate/up rows interleaved in groups of this
constexpr std::int64_t kTokenChunk = 32;               // activation rows per dot_tile call
constexpr std::int64_t kWeightBlockBytes = 256 << 10;  // weight rows per work item: about L2/4
constexpr std::int64_t kMaxBlockRows = 256;
// Waking the other threads costs microseconds (far more when the machine is oversubscribed and
// OpenMP spins); a layer with less arithmetic than this runs on the calling thread alone.
constexpr double kThreadedFlops = 4e6;

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

// Whether a forward of `tokens` rows runs on every OpenMP thread (kThreadedFlops).
bool runs_threaded(const LayerConfig& c, std::int64_t tokens) {
  const double flops = 2.0 * static_cast<double>(tokens) *
                       static_cast<double>(c.hidden * (3 * c.top_k * c.intermediate +
                                                       3 * c.shared.intermediate + c.experts));
  return flops >= kThreadedFlops;
}

// Weight rows per work item: a block of about kWeightBlockBytes, a multiple of `multiple`.
std::int64_t block_rows(std::int64_t row_bytes, std::int64_t multiple, std::int64_t total) {
  const std::int64_t rows =
      std::clamp<std::int64_t>(kWeightBlockBytes / row_bytes, 1, kMaxBlockRows);
  return std::min(round_up(total, multiple), std::max(multiple, rows / multiple * multiple));
}

// One expert MLP's weights in this backend's layout.
struct ExpertMatrices {
  std::int64_t inter = 0;      // I (or Is)
  std::int64_t inter_pad = 0;  // I rounded up to kPairRows
  // [2 · inter_pad, H] rows: for each group g of kPairRows, gate rows then up rows of that group;
  // rows past I are zero.
  std::vector<std::byte> gate_up;
  std::vector<std::byte> down;      // [H, I]
  std::vector<float> gate_up_bias;  // [2 · inter_pad], same order; empty without biases
  std::vector<float> down_bias;     // [H]
};

struct CpuWeights final : PackedWeights::Impl {
  using Impl::Impl;
  std::size_t bytes() const override {
    std::size_t b = (router.size() + router_bias.size() + correction_bias.size()) * sizeof(float);
    for (const ExpertMatrices* m : all()) {
      b += m->gate_up.size() + m->down.size() +
           (m->gate_up_bias.size() + m->down_bias.size()) * sizeof(float);
    }
    return b;
  }
  std::vector<const ExpertMatrices*> all() const {
    std::vector<const ExpertMatrices*> v;
    for (const auto& e : experts) v.push_back(&e);
    if (shared.inter > 0) v.push_back(&shared);
    return v;
  }
  std::vector<ExpertMatrices> experts;
  ExpertMatrices shared;
  // [R, H]: the router's E rows (none when routing is precomputed), then the shared expert's
  // gate row when it is gated. Their dot products land in the last R columns of logits [T, L].
  std::vector<float> router;
  std::vector<float> router_bias, correction_bias;  // [E] or empty
};

ExpertMatrices pack_expert(const LayerConfig& c, const core::MatrixView& gate,
                           const core::MatrixView& up, const core::MatrixView& down,
                           const core::MatrixView& gate_bias, const core::MatrixView& up_bias,
                           const core::MatrixView& down_bias) {
  ExpertMatrices m;
  const std::int64_t h = c.hidden;
  const std::size_t es = dtype_size(c.dtype);
  const std::size_t row_bytes = static_cast<std::size_t>(h) * es;
  m.inter = gate.rows;
  m.inter_pad = round_up(m.inter, kPairRows);
  m.gate_up.assign(static_cast<std::size_t>(2 * m.inter_pad) * row_bytes, std::byte{0});
  const bool bias = gate_bias.present();
  if (bias) m.gate_up_bias.assign(static_cast<std::size_t>(2 * m.inter_pad), 0.0f);
  for (std::int64_t i = 0; i < m.inter; ++i) {
    const std::int64_t group = i / kPairRows, lane = i % kPairRows;
    const std::int64_t gate_row = group * 2 * kPairRows + lane;
    const std::int64_t up_row = gate_row + kPairRows;
    gate.copy_row(i, m.gate_up.data() + static_cast<std::size_t>(gate_row) * row_bytes);
    up.copy_row(i, m.gate_up.data() + static_cast<std::size_t>(up_row) * row_bytes);
    if (bias) {
      m.gate_up_bias[static_cast<std::size_t>(gate_row)] = gate_bias.at(0, i);
      m.gate_up_bias[static_cast<std::size_t>(up_row)] = up_bias.at(0, i);
    }
  }
  m.down.resize(static_cast<std::size_t>(down.rows * down.cols) * es);
  down.copy_to(m.down.data());
  m.down_bias = down_bias.to_f32();
  return m;
}

// Carves the workspace into the stage buffers; the same arithmetic sizes it.
struct Buffers {
  float* logits = nullptr;          // [T, L]
  std::int32_t* ids = nullptr;      // [T · k]
  float* weights = nullptr;         // [T · k]
  std::int32_t* offsets = nullptr;  // [E + 1]
  std::int32_t* cursor = nullptr;   // [E]
  std::int32_t* perm = nullptr;     // [T · k] sorted position -> t · k + j
  std::int32_t* pos = nullptr;      // [T · k] t · k + j -> sorted position, -1 for a dropped slot
  float* act = nullptr;             // [T · k, I]
  float* y = nullptr;               // [T · k, H]
  float* shared_act = nullptr;      // [T, Is]
  float* shared_y = nullptr;        // [T, H]
  std::size_t bytes = 0;

  Buffers(const LayerConfig& c, std::int64_t t, std::byte* base) {
    const std::int64_t tk = t * c.top_k;
    const std::int64_t l = c.experts + (c.shared.gated ? 1 : 0);
    logits = take<float>(base, t * l);
    ids = take<std::int32_t>(base, tk);
    weights = take<float>(base, tk);
    offsets = take<std::int32_t>(base, c.experts + 1);
    cursor = take<std::int32_t>(base, c.experts);
    perm = take<std::int32_t>(base, tk);
    pos = take<std::int32_t>(base, tk);
    act = take<float>(base, tk * c.intermediate);
    y = take<float>(base, tk * c.hidden);
    if (c.shared.intermediate > 0) {
      shared_act = take<float>(base, t * c.shared.intermediate);
      shared_y = take<float>(base, t * c.hidden);
    }
  }

 private:
  template <class T>
  T* take(std::byte* base, std::int64_t count) {
    constexpr std::size_t kAlign = 64;
    T* p = base == nullptr ? nullptr : reinterpret_cast<T*>(base + bytes);
    bytes += (static_cast<std::size_t>(count) * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    return p;
  }
};

template <class T>
T& at2(const TensorRef& t, std::int64_t r, std::int64_t c) {
  return static_cast<T*>(t.data)[r * t.stride(0) + c * t.stride(1)];
}
template <class T>
T at2(const ConstTensorRef& t, std::int64_t r, std::int64_t c) {
  return static_cast<const T*>(t.data)[r * t.stride(0) + c * t.stride(1)];
}

const void* x_row(const ForwardArgs& a, std::int64_t t, std::size_t es) {
  return static_cast<const std::byte*>(a.x.data) + static_cast<std::size_t>(t * a.x.stride(0)) * es;
}

// GEMM1 of one expert MLP for m activation rows: act[r, i] = act(gate, up) for r < m, i < I.
// rows(r) gives activation row r (layer dtype); act rows are `act_ld` apart.
template <class RowFn>
void gemm1_block(const Kernels& kern, const LayerConfig& c, const ExpertMatrices& w, std::int64_t m,
                 RowFn rows, std::int64_t row0, std::int64_t nrows, float* act,
                 std::int64_t act_ld) {
  const std::size_t es = dtype_size(c.dtype);
  const std::byte* b = w.gate_up.data() + static_cast<std::size_t>(row0 * c.hidden) * es;
  const void* a_rows[kTokenChunk];
  float tile[kTokenChunk * kMaxBlockRows];
  for (std::int64_t r0 = 0; r0 < m; r0 += kTokenChunk) {
    const std::int64_t mm = std::min(kTokenChunk, m - r0);
    for (std::int64_t r = 0; r < mm; ++r) a_rows[r] = rows(r0 + r);
    kern.dot_tile(c.dtype, a_rows, static_cast<int>(mm), c.dtype, b, c.hidden,
                  static_cast<int>(nrows), c.hidden, tile, nrows);
    for (std::int64_t r = 0; r < mm; ++r) {
      const float* trow = tile + r * nrows;
      float* arow = act + (r0 + r) * act_ld;
      for (std::int64_t g = 0; g < nrows; g += 2 * kPairRows) {
        for (std::int64_t lane = 0; lane < kPairRows; ++lane) {
          const std::int64_t i = (row0 + g) / 2 + lane;
          if (i >= w.inter) break;
          float gate = trow[g + lane], up = trow[g + kPairRows + lane];
          if (!w.gate_up_bias.empty()) {
            gate += w.gate_up_bias[static_cast<std::size_t>(row0 + g + lane)];
            up += w.gate_up_bias[static_cast<std::size_t>(row0 + g + kPairRows + lane)];
          }
          arow[i] = core::apply_activation(c, gate, up);
        }
      }
    }
  }
}

// GEMM2 of one expert MLP for m rows: y[r, h] = act[r] · down[h] for h in [h0, h0 + nh); the
// epilogue (bias, routing weight) is the caller's.
void gemm2_block(const Kernels& kern, const LayerConfig& c, const ExpertMatrices& w, std::int64_t m,
                 const float* act, std::int64_t h0, std::int64_t nh, float* y) {
  const std::size_t es = dtype_size(c.dtype);
  const std::byte* b = w.down.data() + static_cast<std::size_t>(h0 * w.inter) * es;
  const void* a_rows[kTokenChunk];
  for (std::int64_t r0 = 0; r0 < m; r0 += kTokenChunk) {
    const std::int64_t mm = std::min(kTokenChunk, m - r0);
    for (std::int64_t r = 0; r < mm; ++r) a_rows[r] = act + (r0 + r) * w.inter;
    kern.dot_tile(DType::f32, a_rows, static_cast<int>(mm), c.dtype, b, w.inter,
                  static_cast<int>(nh), w.inter, y + r0 * c.hidden + h0, c.hidden);
  }
}

class CpuBackend final : public core::BackendOps {
 public:
  Backend kind() const override { return Backend::cpu; }
  Device device() const override { return Device::cpu(); }

  Result<std::unique_ptr<PackedWeights::Impl>> pack(const LayerConfig& c,
                                                    const core::WeightSource& src) const override {
    auto w = std::make_unique<CpuWeights>(Backend::cpu, c);
    w->experts.resize(static_cast<std::size_t>(c.experts));
    // An exception must not leave an OpenMP region (that terminates the process): a failed
    // allocation is noted and rethrown after it, for pack_weights to report.
    std::atomic<bool> out_of_memory{false};
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t e = 0; e < c.experts; ++e) {
      if (out_of_memory.load(std::memory_order_relaxed)) continue;
      try {
        w->experts[static_cast<std::size_t>(e)] =
            pack_expert(c, src.gate(e), src.up(e), src.down(e), src.gate_bias(e), src.up_bias(e),
                        src.down_bias(e));
      } catch (const std::bad_alloc&) {
        out_of_memory = true;
      }
    }
    if (out_of_memory) throw std::bad_alloc();
    if (c.shared.intermediate > 0) {
      w->shared = pack_expert(c, src.shared_gate(), src.shared_up(), src.shared_down(), {}, {}, {});
    }
    w->router = src.router().to_f32();
    if (c.shared.gated) {
      const std::vector<float> g = src.shared_gate_weight().to_f32();
      w->router.insert(w->router.end(), g.begin(), g.end());
    }
    w->router_bias = src.router_bias().to_f32();
    w->correction_bias = src.correction_bias().to_f32();
    return std::unique_ptr<PackedWeights::Impl>(std::move(w));
  }

  std::size_t workspace_size(const LayerConfig& c, std::int64_t tokens) const override {
    return Buffers(c, tokens, nullptr).bytes;
  }

  std::string describe(const LayerConfig& c, std::int64_t tokens) const override {
    return "cpu " + std::string(to_string(kernels().isa)) +
           (runs_threaded(c, tokens) ? ", threaded" : ", calling thread only");
  }

  Status forward(const PackedWeights::Impl& packed, const ForwardArgs& a) const override {
    const auto& w = static_cast<const CpuWeights&>(packed);
    const LayerConfig& c = w.config;
    const Kernels& kern = kernels();
    const std::int64_t t_count = a.x.size(0), k = c.top_k, e_count = c.experts, h = c.hidden;
    const std::size_t es = dtype_size(c.dtype);
    Buffers buf(c, t_count, static_cast<std::byte*>(a.workspace.data));
    const bool threaded = runs_threaded(c, t_count);

    // The only stage that allocates (per-thread scratch), and it does so before writing anything
    // the caller owns.
    if (!route(kern, w, a, buf, threaded)) {
      return {StatusCode::out_of_memory, "forward: allocating the routing scratch failed"};
    }
    const std::int64_t invalid = align(c, t_count, buf);
    packed.invalid_ids += invalid;

    // GEMM1, routed experts: work items (expert, block of packed rows).
    const std::int64_t rows1 = 2 * w.experts[0].inter_pad;
    const std::int64_t block1 = block_rows(h * static_cast<std::int64_t>(es), 2 * kPairRows, rows1);
    const std::int64_t items1 = (rows1 + block1 - 1) / block1;
#pragma omp parallel for schedule(dynamic, 1) if (threaded)
    for (std::int64_t item = 0; item < e_count * items1; ++item) {
      const std::int64_t e = item / items1, row0 = (item % items1) * block1;
      const std::int64_t off = buf.offsets[e], m = buf.offsets[e + 1] - off;
      if (m == 0) continue;
      gemm1_block(
          kern, c, w.experts[static_cast<std::size_t>(e)], m,
          [&](std::int64_t r) { return x_row(a, buf.perm[off + r] / k, es); }, row0,
          std::min(block1, rows1 - row0), buf.act + off * c.intermediate, c.intermediate);
    }
    // GEMM2, routed experts: work items (expert, block of H).
    const std::int64_t block2 = block_rows(c.intermediate * static_cast<std::int64_t>(es), 8, h);
    const std::int64_t items2 = (h + block2 - 1) / block2;
#pragma omp parallel for schedule(dynamic, 1) if (threaded)
    for (std::int64_t item = 0; item < e_count * items2; ++item) {
      const std::int64_t e = item / items2, h0 = (item % items2) * block2;
      const std::int64_t nh = std::min(block2, h - h0);
      const std::int64_t off = buf.offsets[e], m = buf.offsets[e + 1] - off;
      if (m == 0) continue;
      const ExpertMatrices& ew = w.experts[static_cast<std::size_t>(e)];
      float* y = buf.y + off * h;
      gemm2_block(kern, c, ew, m, buf.act + off * c.intermediate, h0, nh, y);
      for (std::int64_t r = 0; r < m; ++r) {
        const float weight = buf.weights[buf.perm[off + r]];
        float* yr = y + r * h;
        for (std::int64_t j = h0; j < h0 + nh; ++j) {
          yr[j] = weight * (ew.down_bias.empty() ? yr[j] : yr[j] + ew.down_bias[j]);
        }
      }
    }
    if (c.shared.intermediate > 0) shared_expert(kern, w, a, buf, threaded);
    combine(c, t_count, a, buf, threaded);
    return {};
  }

 private:
  // False when a thread could not allocate its scratch; then nothing the caller owns is written.
  static bool route(const Kernels& kern, const CpuWeights& w, const ForwardArgs& a,
                    const Buffers& buf, bool threaded) {
    const LayerConfig& c = w.config;
    const std::int64_t t_count = a.x.size(0), k = c.top_k, e_count = c.experts, h = c.hidden;
    const std::int64_t l = e_count + (c.shared.gated ? 1 : 0);
    const std::size_t es = dtype_size(c.dtype);
    const bool precomputed = c.routing.kind == RoutingKind::precomputed;
    const auto router_rows = static_cast<std::int64_t>(w.router.size()) / h;
    if (router_rows > 0) {
#pragma omp parallel for schedule(dynamic, 1) if (threaded)
      for (std::int64_t t0 = 0; t0 < t_count; t0 += kTokenChunk) {
        const std::int64_t mm = std::min(kTokenChunk, t_count - t0);
        const void* a_rows[kTokenChunk];
        for (std::int64_t r = 0; r < mm; ++r) a_rows[r] = x_row(a, t0 + r, es);
        kern.dot_tile(c.dtype, a_rows, static_cast<int>(mm), DType::f32, w.router.data(), h,
                      static_cast<int>(router_rows), h, buf.logits + t0 * l + (l - router_rows), l);
      }
    }
    std::atomic<bool> out_of_memory{false};
#pragma omp parallel if (threaded)
    {
      thread_local std::vector<float> real_scratch;
      thread_local std::vector<std::int32_t> index_scratch;
      try {
        real_scratch.resize(static_cast<std::size_t>(core::kRouteRealScratch * e_count));
        index_scratch.resize(static_cast<std::size_t>(core::kRouteIndexScratch * e_count));
      } catch (const std::bad_alloc&) {
        out_of_memory = true;  // an exception must not leave the region
      }
#pragma omp barrier
      if (!out_of_memory) {
#pragma omp for schedule(static)
        for (std::int64_t t = 0; t < t_count; ++t) {
          std::int32_t* ids = buf.ids + t * k;
          float* weights = buf.weights + t * k;
          if (precomputed) {
            for (std::int64_t j = 0; j < k; ++j) {
              ids[j] = at2<std::int32_t>(a.topk_ids, t, j);
              weights[j] = at2<float>(a.topk_weights, t, j);
            }
          } else {
            float* logits = buf.logits + t * l;
            if (!w.router_bias.empty()) {
              for (std::int64_t e = 0; e < e_count; ++e) logits[e] += w.router_bias[e];
            }
            core::route_token<float>(c.routing, e_count, k, logits,
                                     w.correction_bias.empty() ? nullptr : w.correction_bias.data(),
                                     real_scratch.data(), index_scratch.data(), ids, weights);
          }
          for (std::int64_t j = 0; j < k; ++j) {
            if (a.ids_out.present()) at2<std::int32_t>(a.ids_out, t, j) = ids[j];
            if (a.weights_out.present()) at2<float>(a.weights_out, t, j) = weights[j];
          }
        }
      }
    }
    return !out_of_memory;
  }

  // Counts tokens per expert and places each (token, slot) in expert order, token order inside
  // an expert. Returns the number of ids outside [0, E) (their slots are dropped).
  static std::int64_t align(const LayerConfig& c, std::int64_t t_count, const Buffers& buf) {
    const std::int64_t e_count = c.experts, tk = t_count * c.top_k;
    std::fill(buf.offsets, buf.offsets + e_count + 1, 0);
    std::int64_t invalid = 0;
    for (std::int64_t s = 0; s < tk; ++s) {
      const std::int32_t e = buf.ids[s];
      if (e < 0 || e >= e_count) {
        ++invalid;
        continue;
      }
      ++buf.offsets[e + 1];
    }
    for (std::int64_t e = 0; e < e_count; ++e) buf.offsets[e + 1] += buf.offsets[e];
    std::copy(buf.offsets, buf.offsets + e_count, buf.cursor);
    for (std::int64_t s = 0; s < tk; ++s) {
      const std::int32_t e = buf.ids[s];
      if (e < 0 || e >= e_count) {
        buf.pos[s] = -1;
        continue;
      }
      const std::int32_t p = buf.cursor[e]++;
      buf.perm[p] = static_cast<std::int32_t>(s);
      buf.pos[s] = p;
    }
    return invalid;
  }

  static void shared_expert(const Kernels& kern, const CpuWeights& w, const ForwardArgs& a,
                            const Buffers& buf, bool threaded) {
    const LayerConfig& c = w.config;
    const ExpertMatrices& s = w.shared;
    const std::int64_t t_count = a.x.size(0), h = c.hidden, l = c.experts + 1;
    const std::size_t es = dtype_size(c.dtype);
    const std::int64_t rows1 = 2 * s.inter_pad;
    const std::int64_t block1 = block_rows(h * static_cast<std::int64_t>(es), 2 * kPairRows, rows1);
    const std::int64_t items1 = (rows1 + block1 - 1) / block1;
    const std::int64_t chunks = (t_count + kTokenChunk - 1) / kTokenChunk;
#pragma omp parallel for schedule(dynamic, 1) if (threaded)
    for (std::int64_t item = 0; item < chunks * items1; ++item) {
      const std::int64_t t0 = (item / items1) * kTokenChunk, row0 = (item % items1) * block1;
      gemm1_block(
          kern, c, s, std::min(kTokenChunk, t_count - t0),
          [&](std::int64_t r) { return x_row(a, t0 + r, es); }, row0,
          std::min(block1, rows1 - row0), buf.shared_act + t0 * s.inter, s.inter);
    }
    const std::int64_t block2 = block_rows(s.inter * static_cast<std::int64_t>(es), 8, h);
    const std::int64_t items2 = (h + block2 - 1) / block2;
#pragma omp parallel for schedule(dynamic, 1) if (threaded)
    for (std::int64_t item = 0; item < chunks * items2; ++item) {
      const std::int64_t t0 = (item / items2) * kTokenChunk, h0 = (item % items2) * block2;
      const std::int64_t m = std::min(kTokenChunk, t_count - t0), nh = std::min(block2, h - h0);
      float* y = buf.shared_y + t0 * h;
      gemm2_block(kern, c, s, m, buf.shared_act + t0 * s.inter, h0, nh, y);
      if (!c.shared.gated) continue;
      for (std::int64_t r = 0; r < m; ++r) {
        const float gate = core::sigmoid(buf.logits[(t0 + r) * l + c.experts]);
        for (std::int64_t j = h0; j < h0 + nh; ++j) y[r * h + j] *= gate;
      }
    }
  }

  static void combine(const LayerConfig& c, std::int64_t t_count, const ForwardArgs& a,
                      const Buffers& buf, bool threaded) {
    const std::int64_t h = c.hidden, k = c.top_k;
    // Columns per pass: the accumulator lives on the stack, so combine cannot fail. Each element
    // is summed in the same order whatever the chunking.
    constexpr std::int64_t kChunk = 512;
#pragma omp parallel for schedule(static) if (threaded)
    for (std::int64_t t = 0; t < t_count; ++t) {
      float acc[kChunk];
      for (std::int64_t h0 = 0; h0 < h; h0 += kChunk) {
        const std::int64_t n = std::min(kChunk, h - h0);
        std::fill(acc, acc + n, 0.0f);
        for (std::int64_t j = 0; j < k; ++j) {
          const std::int32_t p = buf.pos[t * k + j];
          if (p < 0) continue;
          const float* y = buf.y + static_cast<std::int64_t>(p) * h + h0;
          for (std::int64_t i = 0; i < n; ++i) acc[i] += y[i];
        }
        if (buf.shared_y != nullptr) {
          const float* y = buf.shared_y + t * h + h0;
          for (std::int64_t i = 0; i < n; ++i) acc[i] += y[i];
        }
        const std::int64_t row = t * a.out.stride(0) + h0;
        for (std::int64_t i = 0; i < n; ++i) core::store_f32(c.dtype, a.out.data, row + i, acc[i]);
      }
    }
  }
};

}  // namespace
}  // namespace fusedmoe::cpu

namespace fusedmoe::core {

const BackendOps& cpu_backend() {
  static const cpu::CpuBackend backend;
  return backend;
}

}  // namespace fusedmoe::core
