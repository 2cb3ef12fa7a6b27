// Device allocation failure on the CUDA backend: a real out-of-memory, not a simulated one. The
// test takes all of the device's free memory, gives back `spare` bytes (0, 2, 4, ... MiB), and
// packs a layer whose weights need more than that: every attempt short of enough memory must
// return out_of_memory (never abort, never throw), give back everything it took (the spare is
// whole again afterwards), and leave the library working: the layer packed once memory suffices
// gives the same bits as one packed on an idle device. It needs the GPU to itself: CTest runs it
// alone (RUN_SERIAL), and no other process should use the GPU meanwhile (it would be starved, and
// its allocations would move this test's edge). Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "fusedmoe/device.hpp"
#include "test_util.hpp"

namespace fusedmoe {
namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
// The large-page size: blocks of it free into memory any later allocation can use.
constexpr std::size_t kBlock = 2 * kMiB;

// Holds all of the current device's free memory (to within one kBlock) until destroyed, in
// 1 GiB pieces and then kBlock pieces, so that blocks can be handed back one at a time.
class DeviceHog {
 public:
  void fill() {
    for (std::size_t piece : {std::size_t{1} << 30, kBlock}) {
      std::vector<device::Buffer>& into = piece == kBlock ? blocks_ : large_;
      for (;;) {
        Result<device::Buffer> b = device::Buffer::allocate(piece);
        if (!b.ok()) {
          ASSERT_EQ(b.status().code(), StatusCode::out_of_memory) << b.status().to_string();
          break;
        }
        into.push_back(std::move(b).value());
      }
    }
    ASSERT_FALSE(blocks_.empty()) << "the device never filled";
  }
  // Gives back n of the kBlock pieces; false when there are not that many.
  bool give_back(std::size_t n) {
    if (n > blocks_.size()) return false;
    blocks_.resize(blocks_.size() - n);
    return true;
  }
  // Takes n kBlock pieces again: every one must still be there.
  void take_again(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      Result<device::Buffer> b = device::Buffer::allocate(kBlock);
      ASSERT_TRUE(b.ok()) << "block " << i << " of " << n << " is gone: " << b.status().to_string();
      blocks_.push_back(std::move(b).value());
    }
  }

 private:
  std::vector<device::Buffer> large_, blocks_;
};

TEST(CudaFault, PackAndCreateUnderDeviceOutOfMemory) {
  FUSEDMOE_TEST_REQUIRE_BACKEND(Backend::cuda);
  // ~24 MiB of packed weights in several device allocations (gate/up, down, biases, router), with a
  // gated shared expert and expert biases. The spare grows in 2 MiB steps, so the allocations that
  // run out are the large ones (gate/up and down, routed and shared); the small ones fail only
  // when they come first.
  LayerConfig c = test::make_config(512, 1024, 8, 2);
  c.shared = {512, true};
  c.expert_bias = true;
  test::Options o;
  o.seed = 5;
  const test::Problem p(c, 37, o);
  const test::RunResult clean = test::run_backend(p, Backend::cuda);
  ASSERT_TRUE(clean.status.ok()) << clean.status.to_string();

  std::optional<Layer> layer;
  std::size_t failures = 0, spare = 0;
  {
    DeviceHog hog;
    ASSERT_NO_FATAL_FAILURE(hog.fill());
    for (;; ++spare) {
      ASSERT_LT(spare, 64U) << "128 MiB spare and the layer still does not fit";
      if (spare > 0) ASSERT_TRUE(hog.give_back(1));
      Result<Layer> got = test::make_layer(p.config, p.weights().view(), Backend::cuda);
      if (got.ok()) {
        layer.emplace(std::move(got).value());
        break;
      }
      ASSERT_EQ(got.status().code(), StatusCode::out_of_memory)
          << spare * 2 << " MiB spare: " << got.status().to_string();
      ++failures;
      // Everything the failed attempt allocated came back.
      ASSERT_NO_FATAL_FAILURE(hog.take_again(spare));
      ASSERT_TRUE(hog.give_back(spare));
    }
  }
  EXPECT_GT(failures, 0U) << "the layer fitted in an empty device: nothing was tested";
  // The layer made at the edge of memory, and the library after all those failures, still work.
  const test::RunResult again = test::run_layer(*layer, p, p.config.dtype);
  ASSERT_TRUE(again.status.ok()) << again.status.to_string();
  EXPECT_EQ(test::output_bytes(again), test::output_bytes(clean));
  EXPECT_EQ(test::run_backend(p, Backend::cuda).out.element_bytes(), clean.out.element_bytes());
  std::printf(
      "[ fault ] device out of memory: %zu attempts failed cleanly (0 to %zu MiB spare), "
      "then the layer fitted\n",
      failures, (spare - 1) * 2);
}

}  // namespace
}  // namespace fusedmoe
