// Randomized differential soak: many random valid layers and inputs through the backend under
// test (the fast CPU path, or CUDA with FUSEDMOE_TEST_BACKEND=cuda) against the reference, with
// test_util.hpp's Problem and check_against (poison, guards, routing, invalid-id counts and
// CONTRACT.md's tolerances). Each case draws sizes (H and I not powers of two), every routing
// kind (grouped sigmoid with correction bias included), precomputed ids of every pattern (Zipf
// skews, one hot expert, duplicates, experts with no tokens, ids out of range), activations,
// expert biases, a shared expert, every weight layout through pack_weights, dtypes, fills and
// row strides.
//
// CI runs a short fixed-seed soak (the defaults). A long run:
//   FUSEDMOE_SOAK_CASES=100000 FUSEDMOE_SOAK_SECONDS=3600 FUSEDMOE_TEST_SEED=42 build/bin/soak_test
//   FUSEDMOE_TEST_BACKEND=cuda ... build/bin/soak_test     (the CUDA backend; skipped without GPU)
// FUSEDMOE_SOAK_FIRST=N starts at case N, to replay a failure the output named. The run stops at
// its first failing case, unless FUSEDMOE_SOAK_KEEP_GOING=N: then it goes on until N cases have
// failed (each still fails the test, with its replay line) and lists them at the end.
// A case whose output the global bound cannot judge (test::global_bound_applies) is judged per
// element only, and counted.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace fusedmoe {
namespace {

std::int64_t env_int(const char* name, std::int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 0) : fallback;
}

struct SoakCase {
  LayerConfig config;
  std::int64_t tokens = 0;
  test::Options options;
};

template <class T>
T pick(std::mt19937_64& rng, std::initializer_list<T> values) {
  std::uniform_int_distribution<std::size_t> d(0, values.size() - 1);
  return *(values.begin() + d(rng));
}

std::int64_t uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}

SoakCase draw(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  SoakCase s;
  LayerConfig& c = s.config;
  c.dtype = pick(rng, {DType::bf16, DType::bf16, DType::f16, DType::f32});
  c.hidden = pick<std::int64_t>(rng, {uniform(rng, 1, 24), uniform(rng, 25, 130), 64, 96});
  c.intermediate = pick<std::int64_t>(rng, {uniform(rng, 1, 20), uniform(rng, 21, 100), 32});
  c.experts = pick<std::int64_t>(rng, {1, 2, 3, uniform(rng, 4, 20), 8, 16, 60, 64, 128});
  const int kind = static_cast<int>(uniform(rng, 0, 4));  // 4: grouped sigmoid
  c.top_k = pick<std::int64_t>(rng, {1, 2, uniform(rng, 1, std::min<std::int64_t>(c.experts, 8)),
                                     std::min<std::int64_t>(c.experts, 8)});
  c.top_k = std::min(c.top_k, c.experts);
  if (uniform(rng, 0, 15) == 0) c.top_k = c.experts;  // k = E
  Routing& r = c.routing;
  switch (kind) {
    case 0:
      r.kind = RoutingKind::softmax_topk;
      r.renormalize = uniform(rng, 0, 1) == 1;
      r.router_bias = uniform(rng, 0, 3) == 0;
      break;
    case 1:
      r.kind = RoutingKind::sigmoid_topk;
      r.renormalize = uniform(rng, 0, 1) == 1;
      r.correction_bias = uniform(rng, 0, 1) == 1;
      r.scaling = pick(rng, {1.0f, 2.5f, 0.5f});
      break;
    case 2:
      r.kind = RoutingKind::topk_softmax;
      r.renormalize = false;
      r.router_bias = uniform(rng, 0, 1) == 1;
      break;
    case 3:
      r.kind = RoutingKind::precomputed;
      r.renormalize = false;
      break;
    default: {
      // DeepSeek-style groups: n_group divides E with at least 2 experts per group.
      r = {RoutingKind::sigmoid_topk, true, 1, 1, 2.5f, false, true};
      c.experts = pick<std::int64_t>(rng, {8, 16, 32, 64, 256});
      r.n_group = static_cast<int>(std::min(pick<std::int64_t>(rng, {2, 4, 8}), c.experts / 2));
      r.topk_group = static_cast<int>(uniform(rng, 1, r.n_group));
      const std::int64_t kept = r.topk_group * (c.experts / r.n_group);
      c.top_k = std::min<std::int64_t>(kept, pick<std::int64_t>(rng, {1, 2, 4, 8}));
      break;
    }
  }
  c.activation = pick(rng, {Activation::swiglu, Activation::geglu, Activation::swiglu_oss});
  c.expert_bias =
      c.activation == Activation::swiglu_oss ? uniform(rng, 0, 3) != 0 : uniform(rng, 0, 5) == 0;
  if (uniform(rng, 0, 3) == 0) {
    c.shared.intermediate = pick<std::int64_t>(rng, {uniform(rng, 1, 40), 48});
    c.shared.gated = uniform(rng, 0, 1) == 1;
  }
  s.tokens = pick<std::int64_t>(
      rng, {0, 1, 2, 3, 7, 16, 17, 33, uniform(rng, 1, 64), 127, 129, uniform(rng, 130, 400)});

  test::Options& o = s.options;
  o.seed = (seed & 0xffffffffffffull) | 1;
  // Integer data makes the GEMMs exact, but not sigmoid routing: logits of tens saturate the
  // fp32 sigmoid to 1.0 (ties the fp64 reference does not see), and check_against allows no
  // near-ties with integer data.
  // Nor f16: integer layers' outputs pass its range (65504).
  o.fill = uniform(rng, 0, 4) == 0 && r.kind != RoutingKind::sigmoid_topk && c.dtype != DType::f16
               ? Fill::integer
               : Fill::gaussian;
  o.layout = pick(rng, {WeightLayout::gate_up_rows, WeightLayout::up_gate_rows,
                        WeightLayout::interleaved_cols, WeightLayout::separate});
  if (uniform(rng, 0, 3) == 0) o.x_row_stride = c.hidden + pick<std::int64_t>(rng, {1, 3, 8, 64});
  if (uniform(rng, 0, 3) == 0) o.out_row_stride = c.hidden + pick<std::int64_t>(rng, {1, 5, 8});
  if (uniform(rng, 0, 7) == 0) o.x_scale = pick(rng, {0.01f, 4.0f});
  // Small inputs in f16 at 0.1, not 0.01. Gate and up are linear in x and SwiGLU and GeGLU are
  // linear near 0, so without expert biases such a layer's outputs scale as x_scale^2: drawn at
  // 0.01 they had an RMS of 2.3e-6 to 1.6e-4 (154 draws over seeds 0, 7 and 42), mostly below
  // f16's smallest normal (6.1e-5), where f16 keeps a fixed spacing of 6e-8. There the reference
  // rounded to f16, which is what the CPU backend writes, scores up to 7.3e-3 against the 2e-3
  // global bound (seed 7 case 2944), and the per-element atol (1e-5) exceeds every element, so no
  // check can judge the case (see test::rounding_floor). At 0.1 their RMS is 3e-4 or more, in
  // f16's normal range. bf16 and f32 have f32's exponent range and keep 0.01. The same random
  // numbers are drawn, so no other case changes.
  if (c.dtype == DType::f16 && o.x_scale < 1.0f) o.x_scale = 0.1f;
  o.zipf_s = pick(rng, {0.0, 1.0, 2.0});
  if (r.kind == RoutingKind::precomputed) {
    o.ids = pick(rng, {test::Ids::zipf, test::Ids::one_expert, test::Ids::duplicate,
                       test::Ids::half_experts, test::Ids::invalid});
    // half_experts draws k distinct experts among E / 2
    if (o.ids == test::Ids::half_experts && c.experts / 2 < c.top_k) o.ids = test::Ids::zipf;
  }
  return s;
}

// The seed of soak case `i` under FUSEDMOE_TEST_SEED=`base`.
std::uint64_t soak_seed(std::int64_t i, std::uint64_t base) {
  return test::case_seed_of("Soak", "RandomLayersMatchTheReference",
                            "soak case " + std::to_string(i), base);
}

TEST(Soak, RandomLayersMatchTheReference) {
  const Backend backend = test::backend_under_test();
  FUSEDMOE_TEST_REQUIRE_BACKEND(backend);
  const std::int64_t cases = env_int("FUSEDMOE_SOAK_CASES", 5000);
  const std::int64_t first = env_int("FUSEDMOE_SOAK_FIRST", 0);
  const double seconds = static_cast<double>(env_int("FUSEDMOE_SOAK_SECONDS", 60));
  const std::int64_t keep_going = env_int("FUSEDMOE_SOAK_KEEP_GOING", 0);
  const auto failed_parts = [] {
    const ::testing::TestResult* r =
        ::testing::UnitTest::GetInstance()->current_test_info()->result();
    int n = 0;
    for (int j = 0; j < r->total_part_count(); ++j) n += r->GetTestPartResult(j).failed() ? 1 : 0;
    return n;
  };
  std::vector<std::int64_t> failing;
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::int64_t ran = 0, skipped = 0, tokens = 0, invalid_ids = 0, near_ties = 0, per_element = 0;
  std::int64_t i = first;
  for (; i < first + cases && elapsed() < seconds; ++i) {
    const SoakCase s = draw(soak_seed(i, test::base_seed()));
    if (!test::unsupported_reason(backend, s.config, s.options).empty()) {
      ++skipped;
      continue;
    }
    const Status valid = validate(s.config);
    ASSERT_TRUE(valid.ok()) << "soak case " << i << " drew an invalid layer: " << valid.to_string();
    const int failed_before = failed_parts();
    const test::Problem p(s.config, s.tokens, s.options);
    SCOPED_TRACE("soak case " + std::to_string(i) + " (FUSEDMOE_SOAK_FIRST=" + std::to_string(i) +
                 " FUSEDMOE_SOAK_CASES=1 replays it)");
    SCOPED_TRACE(p.describe());
    const test::RunResult ref = test::run_backend(p, Backend::reference);
    test::CheckOptions check;
    check.global_bound = test::global_bound_applies(ref.out, s.config.dtype);
    per_element += check.global_bound ? 0 : 1;
    const test::Verdict v = test::check_against(p, ref, test::run_backend(p, backend), check);
    ++ran;
    tokens += s.tokens;
    invalid_ids += p.invalid_id_count();
    near_ties += v.excluded_tokens;
    if (failed_parts() > failed_before) {  // reported with its seed and replay line
      failing.push_back(i);
      if (static_cast<std::int64_t>(failing.size()) > keep_going - 1) break;
    }
  }
  std::printf(
      "[ soak ] backend %s: %lld cases run (%lld refused by design; %lld judged per element "
      "only) of %lld asked from case %lld, %lld tokens, %lld invalid ids, %lld near-tie tokens, "
      "%.1f s, FUSEDMOE_TEST_SEED=%llu\n",
      std::string(to_string(backend)).c_str(), static_cast<long long>(ran),
      static_cast<long long>(skipped), static_cast<long long>(per_element),
      static_cast<long long>(cases), static_cast<long long>(first), static_cast<long long>(tokens),
      static_cast<long long>(invalid_ids), static_cast<long long>(near_ties), elapsed(),
      static_cast<unsigned long long>(test::base_seed()));
  // A few per run are chance (~0.2% of cases); many would mean the generator or a backend drifted
  // to outputs the global bound no longer judges.
  EXPECT_LE(per_element, std::max<std::int64_t>(2, ran / 100))
      << "too many cases judged per element only";
  if (!failing.empty()) {
    std::printf("[ soak ] %zu failing case(s):", failing.size());
    for (std::int64_t f : failing) std::printf(" %lld", static_cast<long long>(f));
    std::printf("\n");
  }
  EXPECT_GT(ran, 0);
}

// Seed 7, case 2944 (T = 3, H = 96, I = 20, E = 64, k = 1, softmax_topk with router bias, f16,
// x_scale 0.01 as drawn then) failed the global bound, 7.3e-3 against 2e-3, with every element
// within tolerance. The CPU backend was right: its output is the reference rounded to nearest
// f16, bit for bit; the outputs (RMS 2.3e-6) lie in f16's subnormal range, where that rounding
// alone is 7.3e-3. The generator no longer draws such inputs in f16.
TEST(Soak, Seed7Case2944IsTheReferenceRoundedToF16) {
  FUSEDMOE_TEST_REQUIRE_BACKEND(Backend::cpu);
  SoakCase s = draw(soak_seed(2944, 7));
  ASSERT_EQ(s.config.dtype, DType::f16);
  ASSERT_EQ(s.options.x_scale, 0.1f) << "the generator's small f16 input scale";
  ASSERT_EQ(s.tokens, 3);
  ASSERT_EQ(s.config.hidden, 96);

  // As drawn before the fix: a perfect f16 output cannot meet the bound, and the CPU backend's is
  // exactly that output.
  s.options.x_scale = 0.01f;
  const test::Problem tiny(s.config, s.tokens, s.options);
  SCOPED_TRACE(tiny.describe());
  const test::RunResult ref = test::run_backend(tiny, Backend::reference);
  const test::RunResult got = test::run_backend(tiny, Backend::cpu);
  ASSERT_TRUE(ref.status.ok() && got.status.ok());
  const double floor = test::rounding_floor(ref.out, DType::f16);
  EXPECT_GT(floor, tolerance_for(DType::f16).global);
  EXPECT_FALSE(test::global_bound_applies(ref.out, DType::f16));
  double sum2 = 0;
  for (std::int64_t t = 0; t < tiny.tokens; ++t) {
    for (std::int64_t h = 0; h < tiny.config.hidden; ++h) {
      const float f = ref.out.at(t, h);
      sum2 += double{f} * f;
      std::uint16_t rounded = 0;
      core::store_f32(DType::f16, &rounded, 0, f);
      ASSERT_EQ(got.out.at(t, h), core::load_f32(DType::f16, &rounded, 0))
          << "token " << t << " column " << h << ": reference " << f;
    }
  }
  EXPECT_LT(std::sqrt(sum2 / static_cast<double>(tiny.tokens * tiny.config.hidden)), 6.1e-5)
      << "the outputs were below f16's smallest normal";

  // As drawn now: judgeable, and it passes.
  s.options.x_scale = 0.1f;
  const test::Problem p(s.config, s.tokens, s.options);
  std::string why;
  EXPECT_TRUE(
      test::global_bound_applies(test::run_backend(p, Backend::reference).out, DType::f16, &why))
      << why;
  test::expect_matches_reference(p, Backend::cpu);
}

// Seed 12, case 75363 (T = 1, H = 64, I = 2, E = 3, k = 3 precomputed, gpt-oss activation,
// integer data) failed the global bound on both the CPU and CUDA backends, with global rel 1 and
// every element within tolerance: integer gates of several hundred make the reference's output
// ~1e-37 (sigmoid(1.702 · gate) below fp32's range), and fp32 arithmetic writes 0. Such an output
// is zero to within the per-element atol, and only the per-element bounds judge it.
TEST(Soak, Seed12Case75363IsZeroToWithinAtol) {
  FUSEDMOE_TEST_REQUIRE_BACKEND(Backend::cpu);
  const SoakCase s = draw(soak_seed(75363, 12));
  ASSERT_EQ(s.config.activation, Activation::swiglu_oss);
  ASSERT_EQ(s.options.fill, Fill::integer);
  const test::Problem p(s.config, s.tokens, s.options);
  SCOPED_TRACE(p.describe());
  const test::RunResult ref = test::run_backend(p, Backend::reference);
  ASSERT_TRUE(ref.status.ok());
  std::string why;
  EXPECT_FALSE(test::global_bound_applies(ref.out, s.config.dtype, &why));
  EXPECT_NE(why.find("RMS"), std::string::npos) << why;
  test::CheckOptions per_element;
  per_element.global_bound = false;
  test::check_against(p, ref, test::run_backend(p, Backend::cpu), per_element);
}

// Seed 11 case 13197 (bf16, geglu, k = 8, I = 11) failed on the GPU with the per-element atol
// scaled by the reference's RMS: token 65's column 28 cancels to -1.6e-3 from terms some hundred
// times larger, and the CUDA backend's activation (a bf16 hi + lo pair, ~16 bits) left 1.7e-4 of
// error there. Judged by its term magnitude (CONTRACT.md's atol on the scale of the data the
// element is computed from), the element is within tolerance on every backend.
TEST(Soak, Seed11Case13197CancelsWithinItsTermMagnitude) {
  const Backend backend = test::backend_under_test();
  FUSEDMOE_TEST_REQUIRE_BACKEND(backend);
  const SoakCase s = draw(soak_seed(13197, 11));
  ASSERT_EQ(s.config.dtype, DType::bf16);
  ASSERT_EQ(s.tokens, 129);
  const test::Problem p(s.config, s.tokens, s.options);
  SCOPED_TRACE(p.describe());
  const test::RunResult ref = test::run_backend(p, Backend::reference);
  ASSERT_TRUE(ref.status.ok());
  const double want = ref.out.at(65, 28), magnitude = ref.magnitude.at(65, 28);
  EXPECT_GT(magnitude, 100 * std::abs(want)) << "want " << want << ", magnitude " << magnitude;
  test::check_against(p, ref, test::run_backend(p, backend));
}

// Seed 31 case 81379 (H = 1, sigmoid routing over 128 experts, large x) failed the near-tie cap
// on the GPU and the CPU alike: 20 of 349 tokens chose other experts than the reference, all
// among scores of 1 - 1e-8 or so. Those are exact ties in the router's fp32 arithmetic (a
// saturated sigmoid is 1.0f), which the lower index wins, so they do not count against the cap.
TEST(Soak, Seed31Case81379TiesExactlyInF32) {
  const Backend backend = test::backend_under_test();
  FUSEDMOE_TEST_REQUIRE_BACKEND(backend);
  const SoakCase s = draw(soak_seed(81379, 31));
  ASSERT_EQ(s.config.hidden, 1);
  ASSERT_EQ(s.config.routing.kind, RoutingKind::sigmoid_topk);
  const test::Problem p(s.config, s.tokens, s.options);
  SCOPED_TRACE(p.describe());
  const test::Verdict v = test::check_against(p, test::run_backend(p, Backend::reference),
                                              test::run_backend(p, backend));
  EXPECT_GT(v.f32_tied_tokens, s.tokens / 50) << "the case no longer ties: it tests nothing";
}

}  // namespace
}  // namespace fusedmoe
