// The routing math of one token (MODELS.md), on the host, for any floating type: the reference
// runs it in double, the CPU fast path in float. Selection rules every backend follows:
//   - a larger score wins; equal scores go to the lower expert index;
//   - NaN scores rank below every number, so ids are always in range and distinct;
//   - grouped routing keeps only the experts of the kept groups (equivalent to masking the others
//     with -inf, never with 0).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

#include "fusedmoe/config.hpp"

namespace fusedmoe::core {

// Orders candidate experts by score: larger first, NaN last, lower index on ties.
template <class Real>
struct ScoreOrder {
  const Real* score;
  static Real key(Real v) { return std::isnan(v) ? -std::numeric_limits<Real>::infinity() : v; }
  bool operator()(std::int32_t a, std::int32_t b) const {
    const Real ka = key(score[a]), kb = key(score[b]);
    return ka > kb || (ka == kb && a < b);
  }
};

template <class Real>
Real sigmoid(Real v) {
  return Real(1) / (Real(1) + std::exp(-v));
}

// Scratch one route_token call needs: Reals and int32s, each a multiple of E.
inline constexpr std::int64_t kRouteRealScratch = 3;
inline constexpr std::int64_t kRouteIndexScratch = 2;

// Routes one token. logits: [E] (router bias already added); correction_bias: [E] or nullptr.
// real_scratch: [3E]; index_scratch: [2E]. Writes ids[k] and weights[k]. Not for precomputed.
template <class Real>
void route_token(const Routing& routing, std::int64_t experts, std::int64_t k, const Real* logits,
                 const float* correction_bias, Real* real_scratch, std::int32_t* index_scratch,
                 std::int32_t* ids, float* weights) {
  const auto e_count = static_cast<std::int32_t>(experts);
  Real* prob = real_scratch;                       // [E] the values weights are taken from
  Real* select = real_scratch + experts;           // [E] the values experts are chosen by
  Real* group_score = real_scratch + 2 * experts;  // [n_group]
  std::int32_t* candidates = index_scratch;        // [E]
  std::int32_t* groups = index_scratch + experts;  // [n_group]
  std::int32_t n_candidates = e_count;
  for (std::int32_t e = 0; e < e_count; ++e) candidates[e] = e;

  switch (routing.kind) {
    case RoutingKind::softmax_topk: {
      // softmax is monotone: choose on the logits, weigh by the probabilities.
      Real max = -std::numeric_limits<Real>::infinity();
      for (std::int32_t e = 0; e < e_count; ++e) max = std::max(max, logits[e]);
      Real sum = 0;
      for (std::int32_t e = 0; e < e_count; ++e) {
        prob[e] = std::exp(logits[e] - max);
        sum += prob[e];
      }
      for (std::int32_t e = 0; e < e_count; ++e) {
        prob[e] /= sum;
        select[e] = logits[e];
      }
      break;
    }
    case RoutingKind::sigmoid_topk: {
      for (std::int32_t e = 0; e < e_count; ++e) {
        prob[e] = sigmoid(logits[e]);
        select[e] = prob[e] + (correction_bias != nullptr ? Real(correction_bias[e]) : Real(0));
      }
      if (routing.n_group > 1) {
        const std::int32_t n_group = routing.n_group;
        const std::int32_t size = e_count / n_group;
        for (std::int32_t g = 0; g < n_group; ++g) {
          // the group's two best selection values (NaN counts as -inf)
          std::int32_t* first = candidates + g * size;
          std::partial_sort(first, first + 2, first + size, ScoreOrder<Real>{select});
          group_score[g] =
              ScoreOrder<Real>::key(select[first[0]]) + ScoreOrder<Real>::key(select[first[1]]);
          groups[g] = g;
        }
        std::partial_sort(groups, groups + routing.topk_group, groups + n_group,
                          ScoreOrder<Real>{group_score});
        // Candidates: the experts of the kept groups only, in expert order.
        std::sort(groups, groups + routing.topk_group);
        n_candidates = 0;
        for (std::int32_t j = 0; j < routing.topk_group; ++j) {
          for (std::int32_t e = groups[j] * size; e < (groups[j] + 1) * size; ++e) {
            candidates[n_candidates++] = e;
          }
        }
      }
      break;
    }
    case RoutingKind::topk_softmax:
      for (std::int32_t e = 0; e < e_count; ++e) select[e] = logits[e];
      break;
    case RoutingKind::precomputed:
      return;
  }

  std::partial_sort(candidates, candidates + k, candidates + n_candidates,
                    ScoreOrder<Real>{select});
  for (std::int64_t j = 0; j < k; ++j) ids[j] = candidates[j];

  if (routing.kind == RoutingKind::topk_softmax) {
    // softmax over the k chosen logits
    Real max = -std::numeric_limits<Real>::infinity();
    for (std::int64_t j = 0; j < k; ++j) max = std::max(max, logits[ids[j]]);
    Real sum = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      prob[j] = std::exp(logits[ids[j]] - max);
      sum += prob[j];
    }
    for (std::int64_t j = 0; j < k; ++j) {
      weights[j] = static_cast<float>(prob[j] / sum * Real(routing.scaling));
    }
    return;
  }
  Real sum = 0;
  for (std::int64_t j = 0; j < k; ++j) sum += prob[ids[j]];
  // DeepSeek-V3 guards its sum with 1e-20; the softmax sum of k probabilities is never 0.
  const Real denom = !routing.renormalize                        ? Real(1)
                     : routing.kind == RoutingKind::sigmoid_topk ? sum + Real(1e-20)
                                                                 : sum;
  for (std::int64_t j = 0; j < k; ++j) {
    weights[j] = static_cast<float>(prob[ids[j]] / denom * Real(routing.scaling));
  }
}

}  // namespace fusedmoe::core
