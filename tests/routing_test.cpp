// core::route_token against routing decisions worked out by hand (MODELS.md), in both the
// precisions the backends run it in (double: reference, float: fast path). Expected ids and
// weights are literals or one exp() away from them; nothing here is computed by the code under
// test's own formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "core/routing.hpp"
#include "test_util.hpp"

namespace fusedmoe {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

double sig(double v) { return 1.0 / (1.0 + std::exp(-v)); }

struct Routed {
  std::vector<std::int32_t> ids;  // in the order route_token wrote them
  std::vector<float> weights;
  std::map<std::int32_t, float> by_id() const {
    std::map<std::int32_t, float> m;
    for (std::size_t j = 0; j < ids.size(); ++j) m[ids[j]] = weights[j];
    return m;
  }
};

template <class Real>
Routed route(const Routing& routing, const std::vector<double>& logits, std::int64_t k,
             const std::vector<float>& correction_bias = {}) {
  const auto e = static_cast<std::int64_t>(logits.size());
  std::vector<Real> l(logits.begin(), logits.end());
  std::vector<Real> real_scratch(static_cast<std::size_t>(core::kRouteRealScratch * e));
  std::vector<std::int32_t> index_scratch(static_cast<std::size_t>(core::kRouteIndexScratch * e));
  Routed r;
  r.ids.assign(static_cast<std::size_t>(k), -12345);
  r.weights.assign(static_cast<std::size_t>(k), std::numeric_limits<float>::quiet_NaN());
  core::route_token<Real>(
      routing, e, k, l.data(), correction_bias.empty() ? nullptr : correction_bias.data(),
      real_scratch.data(), index_scratch.data(), r.ids.data(), r.weights.data());
  return r;
}

Routing softmax(bool renormalize, float scaling = 1.0f) {
  Routing r;
  r.kind = RoutingKind::softmax_topk;
  r.renormalize = renormalize;
  r.scaling = scaling;
  return r;
}

Routing sigmoid(bool renormalize, float scaling = 1.0f, int n_group = 1, int topk_group = 1,
                bool correction_bias = false) {
  return {
      RoutingKind::sigmoid_topk, renormalize, n_group, topk_group, scaling, false, correction_bias};
}

Routing topk_softmax(float scaling = 1.0f) {
  Routing r;
  r.kind = RoutingKind::topk_softmax;
  r.renormalize = false;
  r.scaling = scaling;
  return r;
}

// Checks the ids as a set and the weight of each, within fp32 rounding of `Real`.
template <class Real>
void expect_routing(const Routed& got, const std::map<std::int32_t, double>& want) {
  const double tol = std::is_same_v<Real, float> ? 2e-6 : 1e-7;
  ASSERT_EQ(got.ids.size(), want.size());
  const auto by_id = got.by_id();
  ASSERT_EQ(by_id.size(), want.size()) << "ids are not distinct";
  for (const auto& [id, w] : want) {
    auto it = by_id.find(id);
    ASSERT_NE(it, by_id.end()) << "expert " << id << " was not chosen";
    EXPECT_NEAR(it->second, w, tol * std::max(1.0, std::abs(w))) << "weight of expert " << id;
  }
}

void expect_ids(const Routed& got, const std::vector<std::int32_t>& want) {
  EXPECT_EQ(std::set<std::int32_t>(got.ids.begin(), got.ids.end()),
            std::set<std::int32_t>(want.begin(), want.end()));
}

// Ids distinct and in [0, E).
void expect_valid_ids(const Routed& got, std::int64_t experts) {
  std::set<std::int32_t> seen;
  for (std::int32_t id : got.ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, experts);
    EXPECT_TRUE(seen.insert(id).second) << "expert " << id << " chosen twice";
  }
}

template <class Real>
class RouteToken : public ::testing::Test {};
using Reals = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RouteToken, Reals);

// ---- softmax top-k (Mixtral, Qwen, OLMoE) ----------------------------------------------------

TYPED_TEST(RouteToken, SoftmaxTopKRenormalized) {
  // top-2 of {1, 3, 2, 0} is {1, 2}; renormalised, e^3 / (e^3 + e^2) = 1 / (1 + e^-1).
  const Routed r = route<TypeParam>(softmax(true), {1.0, 3.0, 2.0, 0.0}, 2);
  expect_routing<TypeParam>(r, {{1, 0.7310585786300049}, {2, 0.2689414213699951}});
}

TYPED_TEST(RouteToken, SoftmaxTopKNotRenormalized) {
  // weights are the full-softmax probabilities: e^3 / (e^0 + e^1 + e^2 + e^3), ...
  const double sum = std::exp(0.0) + std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  const Routed r = route<TypeParam>(softmax(false), {1.0, 3.0, 2.0, 0.0}, 2);
  expect_routing<TypeParam>(r, {{1, std::exp(3.0) / sum}, {2, std::exp(2.0) / sum}});
}

TYPED_TEST(RouteToken, SoftmaxIsShiftInvariantWithLargeLogits) {
  // The same decision as above with every logit + 1000: a naive exp would overflow.
  const Routed r = route<TypeParam>(softmax(true), {1001.0, 1003.0, 1002.0, 1000.0}, 2);
  expect_routing<TypeParam>(r, {{1, 0.7310585786300049}, {2, 0.2689414213699951}});
}

TYPED_TEST(RouteToken, SoftmaxScalingMultipliesWeights) {
  const Routed r = route<TypeParam>(softmax(true, 2.0f), {1.0, 3.0, 2.0, 0.0}, 2);
  expect_routing<TypeParam>(r, {{1, 2 * 0.7310585786300049}, {2, 2 * 0.2689414213699951}});
}

TYPED_TEST(RouteToken, SoftmaxTopOne) {
  // k = 1 renormalised: weight exactly 1 whatever the logits.
  const Routed r = route<TypeParam>(softmax(true), {-0.5, 0.25, -2.0, 0.2, 0.1}, 1);
  expect_routing<TypeParam>(r, {{1, 1.0}});
}

// ---- sigmoid top-k (the seed paper's DeepSeek-V3) ---------------------------------------------

TYPED_TEST(RouteToken, SigmoidTopKRenormalized) {
  // sigmoid is monotone: the top-3 logits {2, 1, 0.5} win; weights s / (sum s + 1e-20).
  const Routed r = route<TypeParam>(sigmoid(true), {-1.0, 0.5, 2.0, 0.25, -3.0, 1.0}, 3);
  const double sum = sig(2.0) + sig(1.0) + sig(0.5);
  expect_routing<TypeParam>(r, {{2, sig(2.0) / sum}, {5, sig(1.0) / sum}, {1, sig(0.5) / sum}});
}

TYPED_TEST(RouteToken, SigmoidTopKNotRenormalizedScaled) {
  const Routed r = route<TypeParam>(sigmoid(false, 2.5f), {-1.0, 0.5, 2.0, 0.25, -3.0, 1.0}, 2);
  expect_routing<TypeParam>(r, {{2, 2.5 * 0.8807970779778823}, {5, 2.5 * 0.7310585786300049}});
}

TYPED_TEST(RouteToken, SigmoidSumGuardKeepsWeightsFiniteWhenAllScoresUnderflow) {
  // sigmoid(-1e4) is 0 in float and double; DeepSeek-V3's + 1e-20 turns 0/0 into 0.
  const Routed r = route<TypeParam>(sigmoid(true, 2.5f), {-1e4, -1e4, -2e4, -1e4}, 2);
  expect_valid_ids(r, 4);
  expect_ids(r, {0, 1});
  for (float w : r.weights) EXPECT_EQ(w, 0.0f);
}

// ---- DeepSeek-V3: grouped sigmoid with correction bias -----------------------------------------

// 8 experts in 4 groups of 2. Sigmoid scores:
//   group 0: e0 0.953, e1 0.018 (sum 0.971)    group 1: e2 0.731, e3 0.690 (sum 1.421)
//   group 2: e4 0.711, e5 0.668 (sum 1.379)    group 3: e6 0.269, e7 0.119 (sum 0.388)
const std::vector<double> kGroupedLogits = {3.0, -4.0, 1.0, 0.8, 0.9, 0.7, -1.0, -2.0};

TYPED_TEST(RouteToken, GroupedKeepsBestGroupsNotBestExperts) {
  // Groups 1 and 2 are kept; e0, the best single expert, is in dropped group 0.
  const Routed r = route<TypeParam>(sigmoid(true, 2.5f, 4, 2, true), kGroupedLogits, 2,
                                    std::vector<float>(8, 0));
  const double s2 = sig(1.0), s4 = sig(0.9);
  expect_routing<TypeParam>(r, {{2, 2.5 * s2 / (s2 + s4)}, {4, 2.5 * s4 / (s2 + s4)}});
}

TYPED_TEST(RouteToken, GroupedCorrectionBiasSelectsButDoesNotWeigh) {
  // +0.95 on e1 lifts group 0 (0.953 + 0.968) and makes e1 (0.968) the best expert, yet its
  // weight comes from its unbiased score 0.018.
  std::vector<float> bias(8, 0.0f);
  bias[1] = 0.95f;
  const Routed r = route<TypeParam>(sigmoid(true, 2.5f, 4, 2, true), kGroupedLogits, 2, bias);
  const double s0 = sig(3.0), s1 = sig(-4.0);
  expect_routing<TypeParam>(r, {{1, 2.5 * s1 / (s0 + s1)}, {0, 2.5 * s0 / (s0 + s1)}});
}

TYPED_TEST(RouteToken, GroupedMasksDroppedGroupsWithMinusInfinityNotZero) {
  // All biases -1: every biased score is negative. Masking dropped groups with 0.0 would rank
  // their experts (score 0) above every kept one and pick {0, 1, 6}; with -inf (MODELS.md) the
  // top-3 come from kept groups 1 and 2: e2 0.731, e4 0.711, e3 0.690.
  const Routed r = route<TypeParam>(sigmoid(true, 2.5f, 4, 2, true), kGroupedLogits, 3,
                                    std::vector<float>(8, -1.0f));
  const double s2 = sig(1.0), s3 = sig(0.8), s4 = sig(0.9), sum = s2 + s3 + s4;
  expect_routing<TypeParam>(r, {{2, 2.5 * s2 / sum}, {4, 2.5 * s4 / sum}, {3, 2.5 * s3 / sum}});
}

TYPED_TEST(RouteToken, GroupedNegativeBiasesChangeWhichGroupsAreKept) {
  // Biases per expert can reorder groups: -0.5 on group 1's experts drops it (sum 0.421) in
  // favour of group 0 (0.971); e0 then wins overall.
  std::vector<float> bias(8, 0.0f);
  bias[2] = bias[3] = -0.5f;
  const Routed r = route<TypeParam>(sigmoid(true, 1.0f, 4, 2, true), kGroupedLogits, 2, bias);
  const double s0 = sig(3.0), s4 = sig(0.9);
  expect_routing<TypeParam>(r, {{0, s0 / (s0 + s4)}, {4, s4 / (s0 + s4)}});
}

TYPED_TEST(RouteToken, GroupedGroupScoreIsSumOfTopTwo) {
  // Group 0 holds the single best expert (0.99) but a poor second; group 1's two 0.8s win
  // (1.6 > 1.0), though a max-based group score would keep group 0. 4 groups of 3, keep 1.
  const std::vector<double> logits = {4.6,  -4.6, -4.6, 1.4,  1.4,  -4.6,
                                      -1.0, -1.0, -1.0, -2.0, -2.0, -2.0};
  const Routed r =
      route<TypeParam>(sigmoid(false, 1.0f, 4, 1, true), logits, 2, std::vector<float>(12, 0));
  expect_routing<TypeParam>(r, {{3, sig(1.4)}, {4, sig(1.4)}});
}

TYPED_TEST(RouteToken, GroupedTiedGroupsKeepTheLowerGroup) {
  // Groups 0 and 1 score the same; with one group kept, group 0's experts win.
  const Routed r = route<TypeParam>(sigmoid(true, 1.0f, 2, 1, false), {0.5, 0.3, 0.3, 0.5}, 2);
  expect_ids(r, {0, 1});
}

// ---- gpt-oss: top-k of logits, softmax over the k ----------------------------------------------

TYPED_TEST(RouteToken, TopKThenSoftmax) {
  // top-2 of {0.5, 2, -1, 1.5} is {1, 3}; softmax over {2, 1.5}: 1 / (1 + e^-0.5).
  const Routed r = route<TypeParam>(topk_softmax(), {0.5, 2.0, -1.0, 1.5}, 2);
  expect_routing<TypeParam>(r, {{1, 0.6224593312018546}, {3, 0.3775406687981454}});
}

TYPED_TEST(RouteToken, TopKThenSoftmaxIgnoresUnchosenLogits) {
  // Changing an unchosen logit changes nothing (unlike softmax_topk without renormalising).
  const Routed a = route<TypeParam>(topk_softmax(), {0.5, 2.0, -1.0, 1.5}, 2);
  const Routed b = route<TypeParam>(topk_softmax(), {1.2, 2.0, -7.0, 1.5}, 2);
  EXPECT_EQ(a.by_id(), b.by_id());
}

TYPED_TEST(RouteToken, TopKThenSoftmaxScaled) {
  const Routed r = route<TypeParam>(topk_softmax(3.0f), {0.5, 2.0, -1.0, 1.5, 0.0}, 3);
  const double sum = std::exp(2.0) + std::exp(1.5) + std::exp(0.5);
  expect_routing<TypeParam>(
      r,
      {{1, 3 * std::exp(2.0) / sum}, {3, 3 * std::exp(1.5) / sum}, {0, 3 * std::exp(0.5) / sum}});
}

// ---- ties, NaN, Inf, k = E ---------------------------------------------------------------------

TYPED_TEST(RouteToken, TiesGoToTheLowerIndex) {
  const std::vector<double> logits = {1.0, 2.0, 2.0, 0.0, 2.0};
  for (const Routing& routing : {softmax(true), sigmoid(true), topk_softmax()}) {
    SCOPED_TRACE(to_string(routing.kind));
    expect_ids(route<TypeParam>(routing, logits, 2), {1, 2});
    expect_ids(route<TypeParam>(routing, logits, 3), {1, 2, 4});
  }
}

TYPED_TEST(RouteToken, TiedWeightsAreEqual) {
  const Routed r = route<TypeParam>(softmax(true), {2.0, 0.0, 2.0}, 2);
  expect_routing<TypeParam>(r, {{0, 0.5}, {2, 0.5}});
}

TYPED_TEST(RouteToken, NaNLogitsRankLast) {
  const std::vector<double> logits = {kNaN, 1.0, kNaN, 0.0};
  for (const Routing& routing : {softmax(true), softmax(false), sigmoid(true), topk_softmax()}) {
    SCOPED_TRACE(to_string(routing.kind));
    const Routed r = route<TypeParam>(routing, logits, 3);
    expect_valid_ids(r, 4);
    expect_ids(r, {1, 3, 0});
  }
  // grouped: both groups score -inf (NaN counts as -inf), the tie keeps group 0
  const Routed r =
      route<TypeParam>(sigmoid(true, 2.5f, 2, 1, true), logits, 2, std::vector<float>(4, 0.0f));
  expect_valid_ids(r, 4);
  expect_ids(r, {1, 0});
}

TYPED_TEST(RouteToken, AllNaNLogitsStillGiveDistinctInRangeIds) {
  const std::vector<double> logits(8, kNaN);
  for (const Routing& routing :
       {softmax(true), sigmoid(false), topk_softmax(), sigmoid(true, 2.5f, 4, 3, true)}) {
    SCOPED_TRACE(to_string(routing.kind));
    const Routed r = route<TypeParam>(routing, logits, 5, std::vector<float>(8, 0.0f));
    expect_valid_ids(r, 8);
  }
}

TYPED_TEST(RouteToken, InfiniteLogits) {
  const std::vector<double> logits = {kInf, 1.0, -kInf, 2.0, kInf};
  for (const Routing& routing : {softmax(true), sigmoid(true), topk_softmax()}) {
    SCOPED_TRACE(to_string(routing.kind));
    const Routed r = route<TypeParam>(routing, logits, 3);
    expect_valid_ids(r, 5);
    expect_ids(r, {0, 4, 3});
  }
  // -inf everywhere but one: still k distinct ids
  const Routed r = route<TypeParam>(softmax(true), {-kInf, -kInf, 0.5, -kInf}, 3);
  expect_valid_ids(r, 4);
  expect_ids(r, {2, 0, 1});
}

TYPED_TEST(RouteToken, HugeLogitsFromARouterWithHugeWeights) {
  // ±1e30 logits overflow every exp; ids still valid and the largest logit first.
  const std::vector<double> logits = {-1e30, 1e30, 0.5, -3.0, 1e30, 0.0};
  for (const Routing& routing :
       {softmax(true), sigmoid(true), topk_softmax(), sigmoid(true, 2.5f, 3, 2, true)}) {
    SCOPED_TRACE(to_string(routing.kind));
    const Routed r = route<TypeParam>(routing, logits, 2, std::vector<float>(6, 0.0f));
    expect_valid_ids(r, 6);
    expect_ids(r, {1, 4});
  }
}

TYPED_TEST(RouteToken, KEqualsEChoosesEveryExpert) {
  const std::vector<double> logits = {0.3, -1.2, 2.2, 0.9, -0.4};
  double sum = 0;
  for (double l : logits) sum += std::exp(l);
  std::map<std::int32_t, double> want;
  for (std::int32_t e = 0; e < 5; ++e)
    want[e] = std::exp(logits[static_cast<std::size_t>(e)]) / sum;
  // renormalised or not, the full softmax already sums to 1
  expect_routing<TypeParam>(route<TypeParam>(softmax(true), logits, 5), want);
  expect_routing<TypeParam>(route<TypeParam>(softmax(false), logits, 5), want);
  expect_routing<TypeParam>(route<TypeParam>(topk_softmax(), logits, 5), want);
  expect_valid_ids(route<TypeParam>(sigmoid(true), logits, 5), 5);
}

TYPED_TEST(RouteToken, SingleExpert) {
  expect_routing<TypeParam>(route<TypeParam>(softmax(true), {0.7}, 1), {{0, 1.0}});
  expect_routing<TypeParam>(route<TypeParam>(sigmoid(false), {0.7}, 1), {{0, sig(0.7)}});
  expect_routing<TypeParam>(route<TypeParam>(topk_softmax(), {0.7}, 1), {{0, 1.0}});
}

// ---- properties over random logits -------------------------------------------------------------

// Ids distinct and in range; every chosen expert scores at least as much as every unchosen one
// (ungrouped routing); and float routes exactly as double does unless the boundary is a near-tie.
TEST(RouteTokenProperties, RandomLogitsFloatAgreesWithDouble) {
  const std::uint64_t seed = test::case_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> gauss(0.0, 2.0);
  int checked = 0;
  for (std::int64_t e : {1, 2, 7, 8, 60, 64, 128, 256, 257}) {
    for (std::int64_t k : {std::int64_t{1}, std::int64_t{2}, std::int64_t{4}, std::int64_t{8}, e}) {
      if (k > e) continue;
      for (const Routing& routing :
           {softmax(true), softmax(false), sigmoid(true, 2.5f), topk_softmax()}) {
        std::vector<double> logits(static_cast<std::size_t>(e));
        for (double& l : logits) l = static_cast<float>(gauss(rng));  // float-exact inputs
        const Routed d = route<double>(routing, logits, k);
        const Routed f = route<float>(routing, logits, k);
        SCOPED_TRACE(::testing::Message()
                     << "E " << e << " k " << k << " " << to_string(routing.kind));
        expect_valid_ids(d, e);
        expect_valid_ids(f, e);
        const std::set<std::int32_t> chosen(d.ids.begin(), d.ids.end());
        double lowest_chosen = kInf, highest_other = -kInf;
        for (std::int32_t x = 0; x < e; ++x) {
          const double v = logits[static_cast<std::size_t>(x)];
          if (chosen.count(x) != 0) {
            lowest_chosen = std::min(lowest_chosen, v);
          } else {
            highest_other = std::max(highest_other, v);
          }
        }
        EXPECT_GE(lowest_chosen, highest_other);
        if (lowest_chosen - highest_other > 1e-5) {
          EXPECT_EQ(d.by_id().size(), f.by_id().size());
          for (const auto& [id, w] : d.by_id()) {
            const auto fw = f.by_id();
            ASSERT_TRUE(fw.count(id) == 1) << "float chose differently";
            EXPECT_NEAR(fw.at(id), w, 1e-6 + 1e-5 * w);
          }
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(RouteTokenProperties, GroupedChoosesOnlyFromKeptGroups) {
  const std::uint64_t seed = test::case_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> gauss(0.0, 1.5);
  std::normal_distribution<float> bias_dist(0.0f, 0.3f);
  for (int trial = 0; trial < 200; ++trial) {
    const int n_group = 8, topk_group = 4;
    const std::int64_t e = 64, size = e / n_group, k = 8;
    std::vector<double> logits(static_cast<std::size_t>(e));
    std::vector<float> bias(static_cast<std::size_t>(e));
    for (double& l : logits) l = gauss(rng);
    for (float& b : bias) b = bias_dist(rng);
    const Routed r = route<double>(sigmoid(true, 2.5f, n_group, topk_group, true), logits, k, bias);
    expect_valid_ids(r, e);
    // group scores by hand: sum of the two best biased scores in each group
    std::vector<std::pair<double, int>> groups;
    for (int g = 0; g < n_group; ++g) {
      std::vector<double> c;
      for (std::int64_t x = g * size; x < (g + 1) * size; ++x) {
        c.push_back(sig(logits[static_cast<std::size_t>(x)]) + bias[static_cast<std::size_t>(x)]);
      }
      std::sort(c.rbegin(), c.rend());
      groups.emplace_back(-(c[0] + c[1]), g);
    }
    std::sort(groups.begin(), groups.end());
    std::set<int> kept;
    for (int j = 0; j < topk_group; ++j) kept.insert(groups[static_cast<std::size_t>(j)].second);
    double wsum = 0;
    for (std::int32_t id : r.ids) {
      EXPECT_EQ(kept.count(static_cast<int>(id / size)), 1u) << "expert " << id;
      wsum += sig(logits[static_cast<std::size_t>(id)]);
    }
    // weights: unbiased sigmoid / (sum + 1e-20) * 2.5; they sum to 2.5
    double total = 0;
    for (std::size_t j = 0; j < r.ids.size(); ++j) {
      EXPECT_NEAR(r.weights[j], 2.5 * sig(logits[static_cast<std::size_t>(r.ids[j])]) / wsum, 1e-6);
      total += r.weights[j];
    }
    EXPECT_NEAR(total, 2.5, 1e-5);
  }
}

}  // namespace
}  // namespace fusedmoe
