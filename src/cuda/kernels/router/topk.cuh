// Routing of each token (MODELS.md), one warp per token, the same rules as the CPU backends
// (core/routing.hpp):
//   - a larger score wins; equal scores go to the lower expert index;
//   - NaN scores rank with -inf (then by index), so ids are always in range and distinct;
//   - grouped routing keeps the experts of the topk_group best groups (score: sum of a group's two
//     best selection values) and masks the rest, as if with -inf.
// Each candidate is one 64-bit key, (orderable score << 32) | ~index, so a selection round is one
// warp-wide max; key 0 marks "taken or masked". Scores and keys live in shared memory (4·E words
// per warp). The logits arrive as fixed H-slices of partial sums (router_logits.cuh), added here
// in slice order. Precomputed routing copies the caller's ids and weights instead.
#pragma once

#include <cstddef>
#include <cstdint>

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

__device__ __forceinline__ std::uint64_t warp_max_u64(std::uint64_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const std::uint64_t w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}
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

// The best remaining candidate among keys[0, n) (index order breaks ties); takes it.
__device__ __forceinline__ int take_best(std::uint32_t* keys, int n, int lane) {
  std::uint64_t best = 0;
  for (int e = lane; e < n; e += 32) {
    if (keys[e] == 0) continue;
    const std::uint64_t c = (static_cast<std::uint64_t>(keys[e]) << 32) | (0xffffffffu - e);
    best = c > best ? c : best;
  }
  best = warp_max_u64(best);
  const int chosen = static_cast<int>(0xffffffffu - static_cast<std::uint32_t>(best));
  __syncwarp();
  if (lane == 0) keys[chosen] = 0;
  __syncwarp();
  return chosen;
}

__global__ void __launch_bounds__(kTopkMaxWarps * 32) route_tokens(const RouteParams p) {
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
      for (int j = 0; j < p.topk_group; ++j) {
        const int g = take_best(gkeys, p.n_group, lane);
        if (lane == 0) chosen[g] = 1;
        __syncwarp();
      }
      for (int e = lane; e < e_count; e += 32) {
        if (chosen[e / size] == 0) keys[e] = 0;
      }
      __syncwarp();
    }

    // k rounds of warp-wide selection; lane 0 keeps the order in `chosen`
    for (int j = 0; j < k; ++j) {
      const int e = take_best(keys, e_count, lane);
      if (lane == 0) chosen[j] = e;
    }
    __syncwarp();

    if (p.kind == RoutingKindId::softmax_topk) {
      float mx = -INFINITY;
      for (int e = lane; e < e_count; e += 32) mx = fmaxf(mx, lg[e]);
      mx = warp_max(mx);
      float sum = 0.0f;
      for (int e = lane; e < e_count; e += 32) sum += expf(lg[e] - mx);
      sum = warp_sum(sum);
      if (lane == 0) {
        float chosen_sum = 0.0f;
        for (int j = 0; j < k; ++j) chosen_sum += expf(lg[chosen[j]] - mx) / sum;
        const float denom = p.renormalize ? chosen_sum : 1.0f;
        for (int j = 0; j < k; ++j) {
          ids[j] = chosen[j];
          weights[j] = expf(lg[chosen[j]] - mx) / sum / denom * p.scaling;
        }
      }
    } else if (p.kind == RoutingKindId::sigmoid_topk) {
      if (lane == 0) {
        float sum = 0.0f;
        for (int j = 0; j < k; ++j) sum += sigmoidf_(lg[chosen[j]]);
        const float denom = p.renormalize ? sum + 1e-20f : 1.0f;
        for (int j = 0; j < k; ++j) {
          ids[j] = chosen[j];
          weights[j] = sigmoidf_(lg[chosen[j]]) / denom * p.scaling;
        }
      }
    } else {  // topk_softmax: softmax over the k chosen logits
      if (lane == 0) {
        float mx = -INFINITY;
        for (int j = 0; j < k; ++j) mx = fmaxf(mx, lg[chosen[j]]);
        float sum = 0.0f;
        for (int j = 0; j < k; ++j) sum += expf(lg[chosen[j]] - mx);
        for (int j = 0; j < k; ++j) {
          ids[j] = chosen[j];
          weights[j] = expf(lg[chosen[j]] - mx) / sum * p.scaling;
        }
      }
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
