// The CUDA backend: weights packed on the host and copied to the GPU once; forward enqueues the
// stages on the caller's stream and never synchronises (graph-capturable):
//   router_logits -> route_tokens -> align_slots -> [stage_rows] -> gated GEMM -> weighted GEMM
//   -> [shared expert: gated GEMM -> weighted GEMM] -> combine_slots
// Packed layout (plan.hpp pads): per expert, gate/up rows interleaved 8 by 8 [2·I_pad, H_pad],
// down [H_pad, I_pad], zero-padded; biases f32 in the same orders; router rows f32 [L, H].
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/launch.hpp"
#include "cuda/plan.hpp"
#include "cuda/tensor_map.hpp"

namespace fusedmoe::cuda {
namespace {

constexpr std::int64_t kPairRows = 8;  // gate/up rows interleaved in groups of this

// cudaMalloc'd memory owned by the packed weights.
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(DeviceArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(o.bytes_) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceArray() {
    if (p_ != nullptr) static_cast<void>(cudaFree(p_));
  }
  Status allocate(std::size_t bytes) {
    bytes_ = bytes;
    if (bytes == 0) return {};
    FUSEDMOE_CUDA_CHECK(cudaMalloc(&p_, bytes));
    return {};
  }
  Status upload(const void* host, std::size_t bytes, std::size_t offset = 0) {
    FUSEDMOE_CUDA_CHECK(
        cudaMemcpy(static_cast<std::byte*>(p_) + offset, host, bytes, cudaMemcpyHostToDevice));
    return {};
  }
  Status upload(const std::vector<float>& v) {
    FUSEDMOE_RETURN_IF_ERROR(allocate(v.size() * sizeof(float)));
    return v.empty() ? Status{} : upload(v.data(), v.size() * sizeof(float));
  }
  template <class T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

// One set of expert MLPs (the routed experts, or the shared expert as a set of one).
struct ExpertSet {
  std::int64_t count = 0, inter_pad = 0;
  DeviceArray gate_up, down, gate_up_bias, down_bias;
  std::int64_t gate_up_stride() const { return 2 * inter_pad * hidden_pad; }  // elements
  std::int64_t down_stride() const { return hidden_pad * inter_pad; }
  std::int64_t hidden_pad = 0;
  // gate_up and down as tensor maps, when the GEMM mainloop loads weights by TMA
  bool mapped = false;
  CUtensorMap gate_up_map{}, down_map{};
};

struct CudaWeights final : PackedWeights::Impl {
  using Impl::Impl;
  std::size_t bytes() const override {
    std::size_t b = router.bytes() + router_bias.bytes() + correction_bias.bytes();
    for (const ExpertSet* s : {&experts, &shared}) {
      b += s->gate_up.bytes() + s->down.bytes() + s->gate_up_bias.bytes() + s->down_bias.bytes();
    }
    return b;
  }
  std::int64_t take_invalid_ids() const override {
    // Forwards on any stream may still be counting: wait for them, then read and reset.
    unsigned long long count = 0;
    if (cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpy(&count, invalid.get(), sizeof count, cudaMemcpyDeviceToHost) != cudaSuccess ||
        cudaMemset(invalid.get(), 0, sizeof count) != cudaSuccess) {
      return -1;
    }
    return static_cast<std::int64_t>(count);
  }
  int device = 0;
  ExpertSet experts, shared;
  DeviceArray router;  // f32 [L, H]
  std::int64_t router_rows = 0;
  DeviceArray router_bias, correction_bias;
  DeviceArray invalid;  // unsigned long long
};

// Packs `count` expert MLPs given by the view accessors into `set` (host staging, then copies).
template <class Gate, class Up, class Down, class GateBias, class UpBias, class DownBias>
Status pack_set(const LayerConfig& c, std::int64_t count, std::int64_t inter, ExpertSet& set,
                Gate gate, Up up, Down down, GateBias gate_bias, UpBias up_bias,
                DownBias down_bias) {
  const std::size_t es = dtype_size(c.dtype);
  set.count = count;
  set.hidden_pad = round_up(c.hidden, kKAlign);
  set.inter_pad = round_up(inter, kIAlign);
  const std::int64_t hp = set.hidden_pad, ip = set.inter_pad;
  const std::size_t gu_bytes = static_cast<std::size_t>(2 * ip * hp) * es;
  const std::size_t dn_bytes = static_cast<std::size_t>(hp * ip) * es;
  FUSEDMOE_RETURN_IF_ERROR(set.gate_up.allocate(gu_bytes * static_cast<std::size_t>(count)));
  FUSEDMOE_RETURN_IF_ERROR(set.down.allocate(dn_bytes * static_cast<std::size_t>(count)));
  const bool bias = gate_bias(0).present();
  std::vector<float> gu_bias, dn_bias;
  if (bias) {
    gu_bias.assign(static_cast<std::size_t>(count * 2 * ip), 0.0f);
    dn_bias.assign(static_cast<std::size_t>(count * hp), 0.0f);
  }
  // A batch of experts at a time: host memory stays bounded for the largest layers.
  const std::int64_t batch = 16;
  std::vector<std::byte> gu_host, dn_host;
  for (std::int64_t e0 = 0; e0 < count; e0 += batch) {
    const std::int64_t n = std::min(batch, count - e0);
    gu_host.assign(gu_bytes * static_cast<std::size_t>(n), std::byte{0});
    dn_host.assign(dn_bytes * static_cast<std::size_t>(n), std::byte{0});
    // Packs expert e into slot j of the host batch.
    const auto pack_one = [&](std::int64_t e, std::int64_t j) {
      std::byte* gu = gu_host.data() + gu_bytes * static_cast<std::size_t>(j);
      const core::MatrixView g = gate(e), u = up(e), d = down(e);
      for (std::int64_t i = 0; i < inter; ++i) {
        const std::int64_t gate_row = i / kPairRows * 2 * kPairRows + i % kPairRows;
        const std::int64_t up_row = gate_row + kPairRows;
        g.copy_row(i, gu + static_cast<std::size_t>(gate_row * hp) * es);
        u.copy_row(i, gu + static_cast<std::size_t>(up_row * hp) * es);
        if (bias) {
          float* b = gu_bias.data() + e * 2 * ip;
          b[gate_row] = gate_bias(e).at(0, i);
          b[up_row] = up_bias(e).at(0, i);
        }
      }
      std::byte* dn = dn_host.data() + dn_bytes * static_cast<std::size_t>(j);
      for (std::int64_t h = 0; h < c.hidden; ++h) {
        d.copy_row(h, dn + static_cast<std::size_t>(h * ip) * es);
      }
      if (bias) {
        for (std::int64_t h = 0; h < c.hidden; ++h) dn_bias[e * hp + h] = down_bias(e).at(0, h);
      }
    };
    // An exception must not leave an OpenMP region (that terminates the process): a failed
    // allocation is noted and rethrown after it, for pack_weights to report.
    std::atomic<bool> out_of_memory{false};
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t j = 0; j < n; ++j) {
      if (out_of_memory.load(std::memory_order_relaxed)) continue;
      try {
        pack_one(e0 + j, j);
      } catch (const std::bad_alloc&) {
        out_of_memory = true;
      }
    }
    if (out_of_memory) throw std::bad_alloc();
    FUSEDMOE_RETURN_IF_ERROR(set.gate_up.upload(gu_host.data(), gu_host.size(),
                                                gu_bytes * static_cast<std::size_t>(e0)));
    FUSEDMOE_RETURN_IF_ERROR(
        set.down.upload(dn_host.data(), dn_host.size(), dn_bytes * static_cast<std::size_t>(e0)));
  }
  FUSEDMOE_RETURN_IF_ERROR(set.gate_up_bias.upload(gu_bias));
  FUSEDMOE_RETURN_IF_ERROR(set.down_bias.upload(dn_bias));
  if (gemm_maps_weights()) {
    FUSEDMOE_RETURN_IF_ERROR(encode_rows_map(set.gate_up_map, c.dtype, set.gate_up.get(),
                                             count * 2 * ip, hp, kWeightMapBoxCols,
                                             kWeightMapBoxRows));
    FUSEDMOE_RETURN_IF_ERROR(encode_rows_map(set.down_map, c.dtype, set.down.get(), count * hp, ip,
                                             kWeightMapBoxCols, kWeightMapBoxRows));
    set.mapped = true;
  }
  return {};
}

template <class T>
T* at(void* base, std::size_t offset) {
  return offset == WorkspaceLayout::none
             ? nullptr
             : reinterpret_cast<T*>(static_cast<std::byte*>(base) + offset);
}

class CudaBackend final : public core::BackendOps {
 public:
  Backend kind() const override { return Backend::cuda; }
  Device device() const override { return Device::cuda(0); }
  Device weights_device() const override { return Device::cpu(); }

  Result<std::unique_ptr<PackedWeights::Impl>> pack(const LayerConfig& c,
                                                    const core::WeightSource& src) const override {
    if (c.dtype != DType::bf16 && c.dtype != DType::f16) {
      return Status{
          StatusCode::unsupported_config,
          "the CUDA backend computes in bf16 or f16, not " + std::string(to_string(c.dtype))};
    }
    if (c.experts > kMaxCudaExperts) {
      return Status{StatusCode::unsupported_config,
                    "the CUDA backend routes at most " + std::to_string(kMaxCudaExperts) +
                        " experts, got " + std::to_string(c.experts)};
    }
    FUSEDMOE_CUDA_CHECK(cudaSetDevice(0));
    FUSEDMOE_RETURN_IF_ERROR(prepare_kernels());
    auto w = std::make_unique<CudaWeights>(Backend::cuda, c);
    FUSEDMOE_RETURN_IF_ERROR(pack_set(
        c, c.experts, c.intermediate, w->experts, [&](std::int64_t e) { return src.gate(e); },
        [&](std::int64_t e) { return src.up(e); }, [&](std::int64_t e) { return src.down(e); },
        [&](std::int64_t e) { return src.gate_bias(e); },
        [&](std::int64_t e) { return src.up_bias(e); },
        [&](std::int64_t e) { return src.down_bias(e); }));
    if (c.shared.intermediate > 0) {
      const auto none = [](std::int64_t) { return core::MatrixView{}; };
      FUSEDMOE_RETURN_IF_ERROR(pack_set(
          c, 1, c.shared.intermediate, w->shared, [&](std::int64_t) { return src.shared_gate(); },
          [&](std::int64_t) { return src.shared_up(); },
          [&](std::int64_t) { return src.shared_down(); }, none, none, none));
    }
    std::vector<float> router = src.router().to_f32();
    if (c.shared.gated) {
      const std::vector<float> g = src.shared_gate_weight().to_f32();
      router.insert(router.end(), g.begin(), g.end());
    }
    w->router_rows = static_cast<std::int64_t>(router.size()) / c.hidden;
    FUSEDMOE_RETURN_IF_ERROR(w->router.upload(router));
    FUSEDMOE_RETURN_IF_ERROR(w->router_bias.upload(src.router_bias().to_f32()));
    FUSEDMOE_RETURN_IF_ERROR(w->correction_bias.upload(src.correction_bias().to_f32()));
    FUSEDMOE_RETURN_IF_ERROR(w->invalid.allocate(sizeof(unsigned long long)));
    FUSEDMOE_CUDA_CHECK(cudaMemset(w->invalid.get(), 0, sizeof(unsigned long long)));
    return std::unique_ptr<PackedWeights::Impl>(std::move(w));
  }

  std::size_t workspace_size(const LayerConfig& c, std::int64_t tokens) const override {
    return make_plan(c, tokens, gemm_maps_weights()).workspace.bytes;
  }

  std::string describe(const LayerConfig& c, std::int64_t tokens) const override {
    const bool wgmma = gemm_maps_weights();
    return cuda::describe(make_plan(c, tokens, wgmma), wgmma);
  }

  Status forward(const PackedWeights::Impl& packed, const ForwardArgs& a) const override {
    const auto& w = static_cast<const CudaWeights&>(packed);
    const LayerConfig& c = w.config;
    const Plan plan = make_plan(c, a.x.size(0), gemm_maps_weights());
    const WorkspaceLayout& l = plan.workspace;
    auto* stream = static_cast<cudaStream_t>(a.stream);
    void* ws = a.workspace.data;
    const int t = static_cast<int>(plan.tokens), k = static_cast<int>(c.top_k);
    const int e_count = static_cast<int>(c.experts), h = static_cast<int>(c.hidden);

    // A Workspace carries no device: ask the driver where it lives.
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, ws) != cudaSuccess ||
        (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)) {
      static_cast<void>(cudaGetLastError());
      return {StatusCode::device_mismatch,
              "workspace.data must be CUDA device memory on the CUDA backend"};
    }
    // GEMM1 reads x with 16-byte copies: rows must allow them, or x is staged (H % 8 != 0).
    const bool x_aligned =
        reinterpret_cast<std::uintptr_t>(a.x.data) % 16 == 0 && a.x.stride(0) % 8 == 0;
    if (!plan.stage_x && !x_aligned) {
      return {StatusCode::misaligned,
              "x must start at a 16-byte boundary with a row stride that is a multiple of 8 "
              "elements on the CUDA backend"};
    }

    if (w.router_rows > 0) {
      FUSEDMOE_RETURN_IF_ERROR(launch_router_logits(
          c.dtype, a.x.data, a.x.stride(0), w.router.get<float>(), t,
          static_cast<int>(w.router_rows), h, static_cast<int>(plan.router_slices),
          at<float>(ws, l.partial), stream));
    }
    RouteArgs r;
    r.kind = static_cast<int>(c.routing.kind);
    r.renormalize = c.routing.renormalize;
    r.n_group = c.routing.n_group;
    r.topk_group = c.routing.topk_group;
    r.scaling = c.routing.scaling;
    r.tokens = t;
    r.experts = e_count;
    r.top_k = k;
    r.partial = at<float>(ws, l.partial);
    r.slices = static_cast<int>(plan.router_slices);
    r.logits = static_cast<int>(w.router_rows);
    r.router_bias = w.router_bias.get<float>();
    r.correction_bias = w.correction_bias.get<float>();
    if (c.routing.kind == RoutingKind::precomputed) {
      r.topk_ids = static_cast<const std::int32_t*>(a.topk_ids.data);
      r.topk_ids_row = a.topk_ids.stride(0);
      r.topk_ids_col = a.topk_ids.stride(1);
      r.topk_weights = static_cast<const float*>(a.topk_weights.data);
      r.topk_weights_row = a.topk_weights.stride(0);
      r.topk_weights_col = a.topk_weights.stride(1);
    }
    r.ids = at<std::int32_t>(ws, l.ids);
    r.weights = at<float>(ws, l.weights);
    r.shared_gate = at<float>(ws, l.shared_gate);
    if (a.ids_out.present()) {
      r.ids_out = static_cast<std::int32_t*>(a.ids_out.data);
      r.ids_out_row = a.ids_out.stride(0);
      r.ids_out_col = a.ids_out.stride(1);
    }
    if (a.weights_out.present()) {
      r.weights_out = static_cast<float*>(a.weights_out.data);
      r.weights_out_row = a.weights_out.stride(0);
      r.weights_out_col = a.weights_out.stride(1);
    }
    FUSEDMOE_RETURN_IF_ERROR(launch_route(r, stream));

    int* offsets = at<int>(ws, l.offsets);
    AlignArgs al;
    al.ids = r.ids;
    al.slots = static_cast<int>(plan.slots);
    al.experts = e_count;
    al.block_m = tile_rows(plan.routed_tile);
    al.narrow_rows = plan.narrow_rows;
    al.offsets = offsets;
    al.tile_count = offsets + e_count + 1;
    al.narrow_count = offsets + e_count + 2;
    al.perm = at<int>(ws, l.perm);
    al.pos = at<int>(ws, l.pos);
    al.tiles = at<void>(ws, l.tiles);
    al.narrow = at<char>(ws, l.tiles) + plan.tile_capacity * 8;  // int2 entries after the row tiles
    al.invalid_ids = w.invalid.get<unsigned long long>();
    FUSEDMOE_RETURN_IF_ERROR(launch_align(al, stream));

    const void* x = a.x.data;
    std::int64_t x_ld = a.x.stride(0);
    int x_cols = h;
    if (plan.stage_x) {
      void* staged = at<void>(ws, l.x_stage);
      FUSEDMOE_RETURN_IF_ERROR(launch_stage_rows(c.dtype, x, x_ld, t, h, staged,
                                                 static_cast<int>(plan.hidden_pad), stream));
      x = staged;
      x_ld = plan.hidden_pad;
      x_cols = static_cast<int>(plan.hidden_pad);
    }

    TileArgs routed_tiles;
    routed_tiles.tiles = al.tiles;
    routed_tiles.count = al.tile_count;
    routed_tiles.offsets = offsets;
    routed_tiles.capacity = plan.tile_capacity;
    routed_tiles.narrow = al.narrow;
    routed_tiles.narrow_count = al.narrow_count;
    routed_tiles.narrow_capacity = plan.narrow_capacity;
    FUSEDMOE_RETURN_IF_ERROR(run_set(c, w.experts, plan.routed_tile, routed_tiles, x, x_ld, x_cols,
                                     al.perm, k, plan.slots, r.weights, at<void>(ws, l.act),
                                     at<float>(ws, l.y), plan.hidden_pad, stream));
    if (c.shared.intermediate > 0) {
      TileArgs all_tokens;
      all_tokens.rows = t;
      all_tokens.capacity = plan.shared_capacity;
      all_tokens.narrow_capacity = plan.shared_narrow_capacity;
      FUSEDMOE_RETURN_IF_ERROR(run_set(c, w.shared, plan.shared_tile, all_tokens, x, x_ld, x_cols,
                                       nullptr, 1, t, r.shared_gate, at<void>(ws, l.shared_act),
                                       at<float>(ws, l.shared_y), plan.hidden_pad, stream));
    }

    CombineArgs cb;
    cb.y = at<float>(ws, l.y);
    cb.pos = al.pos;
    cb.shared_y = at<float>(ws, l.shared_y);
    cb.y_ld = static_cast<int>(plan.hidden_pad);
    cb.tokens = t;
    cb.top_k = k;
    cb.hidden = h;
    cb.out = a.out.data;
    cb.out_ld = a.out.stride(0);
    return launch_combine(c.dtype, cb, stream);
  }

 private:
  // GEMM1 then GEMM2 of one expert set over the rows `tiles` names.
  static Status run_set(const LayerConfig& c, const ExpertSet& set, GemmTile tile,
                        const TileArgs& tiles, const void* x, std::int64_t x_ld, int x_cols,
                        const int* perm, int top_k, std::int64_t rows, const float* row_weights,
                        void* act, float* y, std::int64_t y_ld, cudaStream_t stream) {
    GatedGemmArgs g;
    g.x = x;
    g.x_ld = x_ld;
    g.x_cols = x_cols;
    g.perm = perm;
    g.top_k = top_k;
    g.tiles = tiles;
    g.w = set.gate_up.get();
    g.w_expert_stride = set.gate_up_stride();
    g.w_map = set.mapped ? &set.gate_up_map : nullptr;
    g.n_rows = static_cast<int>(2 * set.inter_pad);
    g.k_pad = static_cast<int>(set.hidden_pad);
    g.bias = set.gate_up_bias.get<float>();
    g.bias_expert_stride = 2 * set.inter_pad;
    g.act = act;
    g.act_plane_stride = rows * set.inter_pad;
    g.act_ld = static_cast<int>(set.inter_pad);
    g.activation = static_cast<int>(c.activation);
    g.limit = c.swiglu_limit;
    g.alpha = c.swiglu_alpha;
    FUSEDMOE_RETURN_IF_ERROR(launch_gated_gemm(c.dtype, tile, g, stream));

    WeightedGemmArgs d;
    d.act = act;
    d.act_plane_stride = g.act_plane_stride;
    d.act_ld = g.act_ld;
    d.tiles = tiles;
    d.perm = perm;
    d.weights = row_weights;
    d.w = set.down.get();
    d.w_expert_stride = set.down_stride();
    d.w_map = set.mapped ? &set.down_map : nullptr;
    d.n_rows = static_cast<int>(set.hidden_pad);
    d.bias = set.down_bias.get<float>();
    d.bias_expert_stride = set.hidden_pad;
    d.y = y;
    d.y_ld = static_cast<int>(y_ld);
    return launch_weighted_gemm(c.dtype, tile, d, stream);
  }
};

}  // namespace
}  // namespace fusedmoe::cuda

namespace fusedmoe::core {

const BackendOps* cuda_backend() {
  // Available when a GPU of compute capability 8.0 or newer is present.
  static const bool usable = [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return false;
    cudaDeviceProp prop{};
    return cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major >= 8;
  }();
  static const cuda::CudaBackend backend;
  return usable ? &backend : nullptr;
}

}  // namespace fusedmoe::core
