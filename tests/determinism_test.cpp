// Determinism (CONTRACT.md): the same inputs give the same bits run to run, a token's output is
// the same bits alone or at any row of any batch, and neither depends on the OpenMP thread count
// or on other threads calling forward at the same time. Checked on the backend under test
// (Backend::cpu, or Backend::cuda with FUSEDMOE_TEST_BACKEND=cuda).
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <tuple>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.hpp"

namespace fusedmoe {
namespace {

using test::Problem;
using test::RunResult;

enum class Variant { plain, shared, precomputed, grouped, gpt_oss };

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::plain:
      return "plain";
    case Variant::shared:
      return "shared";
    case Variant::precomputed:
      return "precomputed";
    case Variant::grouped:
      return "grouped";
    case Variant::gpt_oss:
      return "gptoss";
  }
  return "?";
}

void PrintTo(Variant v, std::ostream* os) { *os << variant_name(v); }

LayerConfig variant_config(Variant v, DType dt) {
  // H 200 and I 72: several SIMD blocks and a tail; E 16 k 4.
  LayerConfig c = test::make_config(200, 72, 16, 4, dt);
  switch (v) {
    case Variant::plain:
      break;
    case Variant::shared:
      c.shared = {56, true};
      break;
    case Variant::precomputed:
      c.routing.kind = RoutingKind::precomputed;
      break;
    case Variant::grouped:
      c = test::deepseek_like(200, 72, 16, 4, 4, 2, dt);
      c.shared = {40, false};
      break;
    case Variant::gpt_oss:
      c = test::gpt_oss_like(200, 72, 16, 4, dt);
      break;
  }
  return c;
}

test::Options variant_options(Variant v) {
  test::Options o;
  o.seed = test::case_seed();
  if (v == Variant::precomputed) o.zipf_s = 1.0;
  return o;
}

// A T-row problem whose rows are rows [first, first + T) of `big` (x and precomputed routing),
// with big's weights.
Problem rows_of(const Problem& big, std::int64_t first, std::int64_t t) {
  Problem p(big.config, t, big.options, big.weights_ptr);
  for (std::int64_t r = 0; r < t; ++r) {
    for (std::int64_t h = 0; h < big.config.hidden; ++h) {
      p.set_x(r, h, static_cast<float>(big.x_at(first + r, h)));
    }
    if (big.config.routing.kind == RoutingKind::precomputed) {
      for (std::int64_t j = 0; j < big.config.top_k; ++j) {
        p.id(r, j) = big.id_at(first + r, j);
        p.route_weight(r, j) = big.route_weight_at(first + r, j);
      }
    }
  }
  return p;
}

std::string param_name(const ::testing::TestParamInfo<std::tuple<Variant, DType>>& info) {
  return std::string(variant_name(std::get<0>(info.param))) + "_" +
         std::string(to_string(std::get<1>(info.param)));
}

class Determinism : public ::testing::TestWithParam<std::tuple<Variant, DType>> {
 protected:
  void SetUp() override {
    FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test());
    const auto [variant, dtype] = GetParam();
    FUSEDMOE_TEST_REQUIRE_SUPPORT(test::backend_under_test(), variant_config(variant, dtype));
  }
};

TEST_P(Determinism, SameInputsSameBits) {
  const auto [variant, dtype] = GetParam();
  const Problem p(variant_config(variant, dtype), 129, variant_options(variant));
  SCOPED_TRACE(p.describe());
  for (Backend backend : {Backend::reference, test::backend_under_test()}) {
    SCOPED_TRACE(to_string(backend));
    Result<Layer> layer = test::make_layer(p.config, p.weights().view(), backend);
    ASSERT_TRUE(layer.ok());
    const DType out = backend == Backend::reference ? DType::f32 : dtype;
    const RunResult a = test::run_layer(layer.value(), p, out);
    const RunResult b = test::run_layer(layer.value(), p, out);
    const RunResult c = test::run_backend(p, backend);  // a fresh layer
    ASSERT_TRUE(a.status.ok() && b.status.ok() && c.status.ok());
    EXPECT_EQ(test::count_poison(a.out.cref()), 0);
    EXPECT_TRUE(test::output_bytes(a) == test::output_bytes(b));
    EXPECT_TRUE(test::output_bytes(a) == test::output_bytes(c));
    EXPECT_TRUE(a.ids_out.element_bytes() == b.ids_out.element_bytes());
    EXPECT_TRUE(a.weights_out.element_bytes() == b.weights_out.element_bytes());
  }
}

TEST_P(Determinism, BatchInvariantAloneOrInAnyBatch) {
  const auto [variant, dtype] = GetParam();
  const Problem big(variant_config(variant, dtype), 333, variant_options(variant));
  SCOPED_TRACE(big.describe());
  Result<Layer> layer =
      test::make_layer(big.config, big.weights().view(), test::backend_under_test());
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const RunResult whole = test::run_layer(layer.value(), big, dtype);
  ASSERT_TRUE(whole.status.ok());
  EXPECT_EQ(test::count_poison(whole.out.cref()), 0);
  // alone (T = 1) at several rows, first, last and inside the 32-token chunks
  for (std::int64_t r : {0, 1, 31, 32, 100, 331, 332}) {
    const Problem one = rows_of(big, r, 1);
    const RunResult alone = test::run_layer(layer.value(), one, dtype);
    ASSERT_TRUE(alone.status.ok());
    EXPECT_TRUE(alone.out.row_bytes(0) == whole.out.row_bytes(r)) << "row " << r << " alone";
    EXPECT_TRUE(alone.ids_out.row_bytes(0) == whole.ids_out.row_bytes(r));
    EXPECT_TRUE(alone.weights_out.row_bytes(0) == whole.weights_out.row_bytes(r));
  }
  // inside smaller batches that start at other offsets
  for (auto [first, t] : {std::pair<std::int64_t, std::int64_t>{100, 17}, {5, 64}, {290, 43}}) {
    const Problem part = rows_of(big, first, t);
    const RunResult sub = test::run_layer(layer.value(), part, dtype);
    ASSERT_TRUE(sub.status.ok());
    for (std::int64_t r = 0; r < t; ++r) {
      ASSERT_TRUE(sub.out.row_bytes(r) == whole.out.row_bytes(first + r))
          << "row " << first + r << " in a batch of " << t << " starting at " << first;
    }
  }
}

#ifdef _OPENMP
// Restores the OpenMP thread count when a test ends.
class ThreadCount {
 public:
  ThreadCount() : saved_(omp_get_max_threads()) {}
  ~ThreadCount() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};
#endif

TEST_P(Determinism, IndependentOfThreadCount) {
#ifndef _OPENMP
  GTEST_SKIP() << "built without OpenMP";
#else
  const ThreadCount restore;
  const auto [variant, dtype] = GetParam();
  const Problem p(variant_config(variant, dtype), 333, variant_options(variant));
  SCOPED_TRACE(p.describe());
  std::vector<std::byte> first;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    // packing runs under the thread count too
    const RunResult r = test::run_backend(p, test::backend_under_test());
    ASSERT_TRUE(r.status.ok());
    if (first.empty()) {
      first = test::output_bytes(r);
      EXPECT_EQ(test::count_poison(r.out.cref()), 0);
    } else {
      EXPECT_TRUE(test::output_bytes(r) == first) << threads << " threads";
    }
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(Determinism, Determinism,
                         ::testing::Values(std::tuple{Variant::plain, DType::bf16},
                                           std::tuple{Variant::plain, DType::f16},
                                           std::tuple{Variant::plain, DType::f32},
                                           std::tuple{Variant::shared, DType::bf16},
                                           std::tuple{Variant::shared, DType::f16},
                                           std::tuple{Variant::shared, DType::f32},
                                           std::tuple{Variant::precomputed, DType::bf16},
                                           std::tuple{Variant::precomputed, DType::f32},
                                           std::tuple{Variant::grouped, DType::bf16},
                                           std::tuple{Variant::gpt_oss, DType::bf16}),
                         param_name);

TEST(DeterminismThreads, ConcurrentForwardsAgreeWithSerial) {
  // forward is documented safe to call from several threads with distinct workspaces and outputs
  // (on CUDA, each thread's run_layer has a stream of its own)
  FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test());
  LayerConfig c = test::make_config(160, 48, 16, 4);
  c.shared = {32, true};
  const Problem p(c, 200);
  Result<Layer> layer = test::make_layer(c, p.weights().view(), test::backend_under_test());
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const RunResult serial = test::run_layer(layer.value(), p, c.dtype);
  ASSERT_TRUE(serial.status.ok());
  std::vector<RunResult> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) {
    threads.emplace_back([&] { r = test::run_layer(layer.value(), p, c.dtype); });
  }
  for (auto& t : threads) t.join();
  for (const RunResult& r : results) {
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    EXPECT_TRUE(test::output_bytes(r) == test::output_bytes(serial));
  }
}

TEST(DeterminismThreads, MovedLayerKeepsWorking) {
  FUSEDMOE_TEST_REQUIRE_BACKEND(test::backend_under_test());
  const LayerConfig c = test::make_config(96, 40, 8, 2);
  const Problem p(c, 20);
  Result<Layer> layer = test::make_layer(c, p.weights().view(), test::backend_under_test());
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const RunResult before = test::run_layer(layer.value(), p, c.dtype);
  Layer moved = std::move(layer).value();
  Layer assigned = std::move(moved);
  const RunResult after = test::run_layer(assigned, p, c.dtype);
  ASSERT_TRUE(before.status.ok() && after.status.ok());
  EXPECT_TRUE(test::output_bytes(before) == test::output_bytes(after));
  EXPECT_EQ(assigned.config(), c);
  EXPECT_EQ(assigned.backend(), test::backend_under_test());
}

}  // namespace
}  // namespace fusedmoe
