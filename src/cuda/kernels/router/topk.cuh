// Routing of each token (MODELS.md), one warp per token, the same rules as the CPU backends
// (core/routing.hpp):
//   - a larger score wins; equal scores go to the lower expert index;
//   - NaN scores rank with -inf (then by index), so ids are always in range and distinct;
//   - grouped routing keeps the experts of the topk_group best groups (score: sum of a group's two
//     best selection values) and masks the rest, as if with -inf.
// Each candidate is one 32-bit key (an orderable score; index order breaks ties), a selection
// round is two warp-wide reductions, and key 0 marks "taken or masked". Scores and keys live in
// shared memory (4·E words per warp). The logits arrive as fixed H-slices of partial sums
// (router_logits.cuh), added here in slice order. Precomputed routing copies the caller's ids and
// weights instead.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/kernels/ptx/grid_dependency.cuh"

namespace fusedmoe::cuda {

enum class RoutingKindId : int {
  softmax_topk = 0,
  sigmoid_topk = 1,
  topk_softmax = 2,
  precomputed = 3
};

inline constexpr int kTopkMaxWarps = 4;

// Shared memory per block of `warps` warps: 4 x E words each.
inline std::size_t topk_smem_bytes(int experts, int warps) {
  return static_cast<std::size_t>(warps) * 4 * static_cast<std::size_t>(experts) * 4;
}

struct StridedI32 {
  const std::int32_t* data = nullptr;
  std::int64_t row = 0, col = 0;
};
struct StridedF32 {
  const float* data = nullptr;
  std::int64_t row = 0, col = 0;
};
struct StridedOutI32 {
  std::int32_t* data = nullptr;
  std::int64_t row = 0, col = 0;
};
struct StridedOutF32 {
  float* data = nullptr;
  std::int64_t row = 0, col = 0;
};

struct RouteParams {
  RoutingKindId kind = RoutingKindId::softmax_topk;
  bool renormalize = false;
  int n_group = 1, topk_group = 1;
  float scaling = 1.0f;
  int tokens = 0, experts = 0, top_k = 0;
  const float* partial = nullptr;          // [slices, T, logits]
  int slices = 0, logits = 0;              // logits = E (+1: the shared expert's gate column)
  const float* router_bias = nullptr;      // [E] or nullptr
  const float* correction_bias = nullptr;  // [E] or nullptr
  StridedI32 topk_ids;                     // precomputed only
  StridedF32 topk_weights;
  std::int32_t* ids = nullptr;   // [T, k]
  float* weights = nullptr;      // [T, k]
  float* shared_gate = nullptr;  // [T]: sigmoid of the gate column, or nullptr
  StridedOutI32 ids_out;         // optional
  StridedOutF32 weights_out;
};

__device__ __forceinline__ std::uint32_t orderable(float v) {
  if (v != v) v = -INFINITY;  // NaN ranks with -inf
  v += 0.0f;                  // -0 ties with +0
  const std::uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // never 0: 0 is "taken"
}

__device__ __forceinline__ float sigmoidf_(float v) { return 1.0f / (1.0f + expf(-v)); }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Selection over keys[0, n) by rounds: every lane keeps the best of its own keys (indices
// lane, lane + 32, ..., scanned upward, so the lower index wins a tie inside a lane); a round takes
// the warp's largest key and, among lanes that hold it, the lowest index (two warp reductions).
// Only the winner's lane marks its key taken and rescans its own keys.
class Selector {
 public:
  __device__ __forceinline__ Selector(std::uint32_t* keys, int n, int lane)
      : keys_(keys), n_(n), lane_(lane) {
    rescan();
  }
  // The best remaining candidate; takes it.
  __device__ __forceinline__ int take() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();  // warp reductions need sm_80; the CUDA backend runs on sm_80 and newer only
#endif
    const std::uint32_t top = __reduce_max_sync(0xffffffffu, key_);
    const int chosen = static_cast<int>(
        __reduce_min_sync(0xffffffffu, key_ == top ? static_cast<std::uint32_t>(index_) : ~0u));
    if (top != 0 && chosen == index_) {  // this lane's best: mark it taken
      keys_[chosen] = 0;
      rescan();
    }
    return chosen;
  }

 private:
  __device__ __forceinline__ void rescan() {
    key_ = 0;
    index_ = -1;
#pragma unroll 4
    for (int e = lane_; e < n_; e += 32) {
      const std::uint32_t k = keys_[e];
      if (k > key_) {
        key_ = k;
        index_ = e;
      }
    }
  }
  std::uint32_t* keys_;
  int n_, lane_;
  std::uint32_t key_ = 0;  // 0: this lane has nothing left
  int index_ = -1;
};

__global__ void __launch_bounds__(kTopkMaxWarps * 32) route_tokens(const RouteParams p) {
  ptx::enter_dependent_grid();
  extern __shared__ float route_smem[];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int t = static_cast<int>(blockIdx.x * (blockDim.x / 32)) + warp;
  if (t >= p.tokens) return;
  const int e_count = p.experts, k = p.top_k;
  float* lg = route_smem + static_cast<std::size_t>(warp) * 4 * e_count;  // [E] logits (+bias)
  auto* keys = reinterpret_cast<std::uint32_t*>(lg + e_count);            // [E] selection keys
  auto* chosen = reinterpret_cast<int*>(lg + 2 * e_count);                // [k] ids; group flags
  float* aux = lg + 3 * e_count;                                          // [n_group] scores
  std::int32_t* ids = p.ids + static_cast<std::int64_t>(t) * k;
  float* weights = p.weights + static_cast<std::int64_t>(t) * k;

  // a logit: its H-slices added in slice order
  const float* __restrict__ partial = p.partial + static_cast<std::int64_t>(t) * p.logits;
  const std::int64_t slice_stride = static_cast<std::int64_t>(p.tokens) * p.logits;
  const auto logit = [&](int l) {
    float s = 0.0f;
#pragma unroll 4
    for (int i = 0; i < p.slices; ++i) s += __ldg(partial + i * slice_stride + l);
    return s;
  };
  // the shared expert's gate is the last logit column
  if (p.shared_gate != nullptr && lane == 0) p.shared_gate[t] = sigmoidf_(logit(p.logits - 1));

  if (p.kind == RoutingKindId::precomputed) {
    for (int j = lane; j < k; j += 32) {
      ids[j] = p.topk_ids.data[t * p.topk_ids.row + j * p.topk_ids.col];
      weights[j] = p.topk_weights.data[t * p.topk_weights.row + j * p.topk_weights.col];
    }
  } else {
    // kChunk logits per lane at a time, their slice loads independent of one another (a logit's
    // slices are dependent adds: with one logit at a time each would wait for the last).
    constexpr int kChunk = 8;
    for (int e0 = 0; e0 < e_count; e0 += 32 * kChunk) {
      float sum[kChunk];
#pragma unroll
      for (int j = 0; j < kChunk; ++j) sum[j] = 0.0f;
        // unrolled over slices too, so that several slices' loads are in flight at once
#pragma unroll 4
      for (int i = 0; i < p.slices; ++i) {
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
          const int e = e0 + lane + 32 * j;
          if (e < e_count) sum[j] += __ldg(partial + i * slice_stride + e);
        }
      }
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        const int e = e0 + lane + 32 * j;
        if (e < e_count) lg[e] = sum[j];
      }
    }
    __syncwarp();
    for (int e = lane; e < e_count; e += 32) {
      const float v = lg[e] + (p.router_bias != nullptr ? p.router_bias[e] : 0.0f);
      lg[e] = v;
      float sel = v;
      if (p.kind == RoutingKindId::sigmoid_topk) {
        sel = sigmoidf_(v) + (p.correction_bias != nullptr ? p.correction_bias[e] : 0.0f);
      }
      keys[e] = orderable(sel);
    }
    __syncwarp();

    if (p.kind == RoutingKindId::sigmoid_topk && p.n_group > 1) {
      const int size = e_count / p.n_group;
      for (int g = lane; g < p.n_group; g += 32) {
        float v1 = -INFINITY, v2 = -INFINITY;  // the group's two best values, NaN as -inf
        for (int e = g * size; e < (g + 1) * size; ++e) {
          float v = sigmoidf_(lg[e]) + (p.correction_bias != nullptr ? p.correction_bias[e] : 0.0f);
          if (v != v) v = -INFINITY;
          if (v > v1) {
            v2 = v1;
            v1 = v;
          } else if (v > v2) {
            v2 = v;
          }
        }
        aux[g] = v1 + v2;
        chosen[g] = 0;
      }
      __syncwarp();
      // group keys reuse `aux`'s words once scored
      auto* gkeys = reinterpret_cast<std::uint32_t*>(aux);
      for (int g = lane; g < p.n_group; g += 32) gkeys[g] = orderable(aux[g]);
      __syncwarp();
      Selector groups(gkeys, p.n_group, lane);
      for (int j = 0; j < p.topk_group; ++j) {
        const int g = groups.take();
        if (lane == 0) chosen[g] = 1;
      }
      __syncwarp();
      for (int e = lane; e < e_count; e += 32) {
        if (chosen[e / size] == 0) keys[e] = 0;
      }
      __syncwarp();
    }

    // k rounds of warp-wide selection; lane 0 keeps the order in `chosen`
    Selector experts(keys, e_count, lane);
    for (int j = 0; j < k; ++j) {
      const int e = experts.take();
      if (lane == 0) chosen[j] = e;
    }
    __syncwarp();

    // The weights, a chosen expert per lane (j = lane, lane + 32, ...); sums over the chosen
    // experts are warp reductions, in a fixed order.
    const auto over_chosen = [&](auto f) {
      float s = 0.0f;
      for (int j = lane; j < k; j += 32) s += f(lg[chosen[j]]);
      return warp_sum(s);
    };
    const auto write = [&](auto weight) {
      for (int j = lane; j < k; j += 32) {
        ids[j] = chosen[j];
        weights[j] = weight(lg[chosen[j]]);
      }
    };
    if (p.kind == RoutingKindId::softmax_topk) {
      float mx = -INFINITY;
      for (int e = lane; e < e_count; e += 32) mx = fmaxf(mx, lg[e]);
      mx = warp_max(mx);
      float sum = 0.0f;
      for (int e = lane; e < e_count; e += 32) sum += expf(lg[e] - mx);
      sum = warp_sum(sum);
      const auto prob = [&](float v) { return expf(v - mx) / sum; };
      const float denom = p.renormalize ? over_chosen(prob) : 1.0f;
      write([&](float v) { return prob(v) / denom * p.scaling; });
    } else if (p.kind == RoutingKindId::sigmoid_topk) {
      const auto sigmoid = [](float v) { return sigmoidf_(v); };
      const float denom = p.renormalize ? over_chosen(sigmoid) + 1e-20f : 1.0f;
      write([&](float v) { return sigmoidf_(v) / denom * p.scaling; });
    } else {  // topk_softmax: softmax over the k chosen logits
      float mx = -INFINITY;
      for (int j = lane; j < k; j += 32) mx = fmaxf(mx, lg[chosen[j]]);
      mx = warp_max(mx);
      const float sum = over_chosen([&](float v) { return expf(v - mx); });
      write([&](float v) { return expf(v - mx) / sum * p.scaling; });
    }
    __syncwarp();
  }
  __syncwarp();
  for (int j = lane; j < k; j += 32) {
    if (p.ids_out.data != nullptr) p.ids_out.data[t * p.ids_out.row + j * p.ids_out.col] = ids[j];
    if (p.weights_out.data != nullptr) {
      p.weights_out.data[t * p.weights_out.row + j * p.weights_out.col] = weights[j];
    }
  }
}

}  // namespace fusedmoe::cuda
