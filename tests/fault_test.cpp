// Fault behaviour: allocation failure and a workspace too small. This program replaces the global
// operator new with one that, once armed, fails the Nth allocation (only that one, so that the
// error message can still be built; FaultCApi also fails every later one), and runs
// pack_weights, Layer::create and forward with N = 0, 1, 2, ... until the call succeeds:
// every earlier attempt must return out_of_memory (never abort, never throw), leak nothing
// (LeakSanitizer in the sanitizer build), leave the caller's buffers as they were, and leave the
// layer usable: the next call, unarmed, gives the same bits as a clean run.
#include <atomic>
#include <cstdlib>
#include <new>
#include <optional>
#include <thread>

#include "fusedmoe/fusedmoe.h"
#include "test_util.hpp"

namespace {

std::atomic<bool> g_armed{false};
std::atomic<std::int64_t> g_left{0};  // allocations that still succeed while armed
std::atomic<std::int64_t> g_failed{0};
std::atomic<bool> g_sticky{false};  // fail every allocation after the Nth too

void* allocate(std::size_t n, std::size_t align) {
  const auto left = g_armed.load(std::memory_order_relaxed)
                        ? g_left.fetch_sub(1, std::memory_order_relaxed)
                        : std::int64_t{1};
  if (left == 0 || (left < 0 && g_sticky.load(std::memory_order_relaxed))) {
    g_failed.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  if (n == 0) n = 1;
  if (align <= alignof(std::max_align_t)) return std::malloc(n);
  return std::aligned_alloc(align, (n + align - 1) / align * align);
}

// Arms the failing allocator for the duration of a scope.
class FailAfter {
 public:
  explicit FailAfter(std::int64_t n, bool sticky = false) {
    g_failed = 0;
    g_sticky = sticky;
    g_left = n;
    g_armed = true;
  }
  ~FailAfter() { g_armed = false; }
  FailAfter(const FailAfter&) = delete;
  FailAfter& operator=(const FailAfter&) = delete;
  static bool failed() { return g_failed.load() > 0; }
};

}  // namespace

void* operator new(std::size_t n) {
  if (void* p = allocate(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = allocate(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace fusedmoe {
namespace {

using test::Problem;
using test::RunResult;

// Enough attempts for every allocation these small layers make; a loop that reaches this did
// not converge.
constexpr std::int64_t kMaxAttempts = 5000;

struct Case {
  const char* name;
  LayerConfig config;
  WeightLayout layout;
};

std::vector<Case> cases() {
  LayerConfig shared = test::make_config(24, 12, 8, 2);
  shared.shared = {8, true};
  LayerConfig precomputed = test::make_config(24, 12, 8, 3, DType::f32);
  precomputed.routing.kind = RoutingKind::precomputed;
  precomputed.routing.renormalize = false;
  return {
      {"softmax_shared", shared, WeightLayout::gate_up_rows},
      {"grouped_separate", test::deepseek_like(24, 12, 16, 4, 4, 2), WeightLayout::separate},
      {"gpt_oss_interleaved", test::gpt_oss_like(24, 12, 8, 2, DType::f16),
       WeightLayout::interleaved_cols},
      {"precomputed", precomputed, WeightLayout::up_gate_rows},
  };
}

class Fault : public ::testing::TestWithParam<std::tuple<std::size_t, Backend>> {
 protected:
  void SetUp() override {
    // The CUDA backend's allocations are device allocations: this program covers the host.
    if (std::get<1>(GetParam()) == Backend::cuda) GTEST_SKIP();
    FUSEDMOE_TEST_REQUIRE_BACKEND(std::get<1>(GetParam()));
  }
  const Case& the_case() const {
    static const std::vector<Case> all = cases();
    return all[std::get<0>(GetParam())];
  }
  Problem problem(std::int64_t tokens) const {
    test::Options o;
    o.layout = the_case().layout;
    o.seed = 99;
    return Problem(the_case().config, tokens, o);
  }
};

TEST_P(Fault, PackWeightsAndCreate) {
  const Backend backend = std::get<1>(GetParam());
  const Problem p = problem(5);
  const LayerConfig& c = p.config;
  const WeightSet w = p.weights().view();
  std::int64_t n = 0;
  for (; n < kMaxAttempts; ++n) {
    std::optional<Result<PackedWeights>> packed;
    std::optional<Result<Layer>> layer;
    bool failed = false;
    {
      FailAfter fail(n);
      packed.emplace(pack_weights(c, w, backend));
      if (packed->ok()) layer.emplace(Layer::create(c, std::move(*packed).value()));
      failed = FailAfter::failed();
    }
    const Status status = layer.has_value() ? layer->status() : packed->status();
    if (!failed) {
      ASSERT_TRUE(status.ok()) << status.to_string();
      break;
    }
    ASSERT_EQ(status.code(), StatusCode::out_of_memory)
        << "attempt " << n << ": " << status.to_string();
  }
  ASSERT_LT(n, kMaxAttempts);
  std::printf("[ fault ] %s on %s: pack + create failed cleanly at each of %lld allocations\n",
              the_case().name, std::string(to_string(backend)).c_str(), static_cast<long long>(n));
}

TEST_P(Fault, ForwardStaysUsable) {
  const Backend backend = std::get<1>(GetParam());
  const Problem p = problem(70);
  const DType out = p.config.dtype;
  Result<Layer> layer = test::make_layer(p.config, p.weights().view(), backend);
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const RunResult clean = test::run_layer(layer.value(), p, out);
  ASSERT_TRUE(clean.status.ok()) << clean.status.to_string();
  std::int64_t n = 0;
  for (; n < kMaxAttempts; ++n) {
    RunResult r = test::poisoned_outputs(p, out);
    const std::vector<std::byte> before = r.out.element_bytes();
    std::vector<std::byte> workspace(layer->workspace_size(p.tokens));
    ForwardArgs a;
    a.x = p.x;
    a.out = r.out.ref();
    a.workspace = {workspace.data(), workspace.size()};
    if (p.config.routing.kind == RoutingKind::precomputed) {
      a.topk_ids = p.ids.cref();
      a.topk_weights = p.topk_weights.cref();
    }
    a.ids_out = r.ids_out.ref();
    Status status;
    bool failed = false;
    // On a thread of its own, so that the CPU path's per-thread scratch is allocated afresh.
    std::thread([&] {
      FailAfter fail(n);
      status = layer->forward(a);
      failed = FailAfter::failed();
    }).join();
    if (!failed) {
      ASSERT_TRUE(status.ok()) << status.to_string();
      break;
    }
    ASSERT_EQ(status.code(), StatusCode::out_of_memory)
        << "attempt " << n << ": " << status.to_string();
    EXPECT_EQ(r.out.element_bytes(), before) << "a failed forward wrote out (attempt " << n << ")";
    // Still usable, and still right: the same bits as the clean run.
    const RunResult again = test::run_layer(layer.value(), p, out);
    ASSERT_TRUE(again.status.ok()) << again.status.to_string();
    ASSERT_EQ(test::output_bytes(again), test::output_bytes(clean)) << "attempt " << n;
  }
  ASSERT_LT(n, kMaxAttempts);
  layer->take_invalid_id_count();
  std::printf("[ fault ] %s on %s: forward failed cleanly at each of %lld allocations\n",
              the_case().name, std::string(to_string(backend)).c_str(), static_cast<long long>(n));
}

TEST_P(Fault, ConvenienceForwardOwnsItsWorkspace) {
  const Backend backend = std::get<1>(GetParam());
  const Problem p = problem(40);
  if (p.config.routing.kind == RoutingKind::precomputed) GTEST_SKIP() << "needs topk_ids";
  Result<Layer> layer = test::make_layer(p.config, p.weights().view(), backend);
  ASSERT_TRUE(layer.ok());
  test::GuardedOutput out(p.config.dtype, p.tokens, p.config.hidden);
  Status status;
  {
    FailAfter fail(0);
    status = layer->forward(p.x, out.ref());
  }
  if (layer->workspace_size(p.tokens) > 0) {
    EXPECT_EQ(status.code(), StatusCode::out_of_memory) << status.to_string();
    EXPECT_EQ(test::count_poison(out.cref()), p.tokens * p.config.hidden) << "out was written";
  }
  EXPECT_TRUE(layer->forward(p.x, out.ref()).ok());
  EXPECT_EQ(test::count_poison(out.cref()), 0);
}

TEST_P(Fault, WorkspaceTooSmallLeavesTheLayerUsable) {
  const Backend backend = std::get<1>(GetParam());
  const Problem p = problem(33);
  Result<Layer> layer = test::make_layer(p.config, p.weights().view(), backend);
  ASSERT_TRUE(layer.ok());
  const std::size_t need = layer->workspace_size(p.tokens);
  if (need == 0) GTEST_SKIP() << "this backend needs no workspace";
  RunResult r = test::poisoned_outputs(p, p.config.dtype);
  std::vector<std::byte> workspace(need);
  ForwardArgs a;
  a.x = p.x;
  a.out = r.out.ref();
  if (p.config.routing.kind == RoutingKind::precomputed) {
    a.topk_ids = p.ids.cref();
    a.topk_weights = p.topk_weights.cref();
  }
  for (std::size_t bytes : {std::size_t{0}, need / 2, need - 1}) {
    a.workspace = {bytes == 0 ? nullptr : workspace.data(), bytes};
    EXPECT_EQ(layer->forward(a).code(), StatusCode::workspace_too_small) << bytes;
    EXPECT_EQ(test::count_poison(r.out.cref()), p.tokens * p.config.hidden);
  }
  a.workspace = {workspace.data(), need};
  EXPECT_TRUE(layer->forward(a).ok());
  EXPECT_EQ(test::count_poison(r.out.cref()), 0);
}

TEST(FaultCApi, NothingUnwindsIntoC) {
  // Whatever allocation fails, a C entry point returns a status (its error path must not throw).
  fusedmoe_layer_config c;
  ASSERT_EQ(fusedmoe_preset_config("mixtral-8x7b", &c), FUSEDMOE_OK);
  fusedmoe_weights w;
  fusedmoe_weights_init(&w);
  for (std::int64_t n = 0; n < 20; ++n) {
    fusedmoe_layer* layer = nullptr;
    fusedmoe_status s = FUSEDMOE_OK;
    bool threw = false;
    {
      FailAfter fail(n, /*sticky=*/true);
      try {
        s = fusedmoe_layer_create(&c, &w, FUSEDMOE_BACKEND_CPU, &layer);
      } catch (...) {
        threw = true;
      }
    }
    EXPECT_FALSE(threw) << "an exception left fusedmoe_layer_create (allocation " << n << ")";
    EXPECT_NE(s, FUSEDMOE_OK);  // the weights are missing
    EXPECT_EQ(layer, nullptr);
  }
}

INSTANTIATE_TEST_SUITE_P(Fault, Fault,
                         ::testing::Combine(::testing::Range<std::size_t>(0, 4),
                                            ::testing::Values(Backend::cpu, Backend::reference)),
                         [](const auto& info) {
                           static const std::vector<Case> all = cases();
                           return std::string(all[std::get<0>(info.param)].name) + "_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace fusedmoe
