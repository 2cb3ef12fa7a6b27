// Regression tests for what the fuzzers (fuzz/) found, in the normal suite: each input reduced to
// the descriptor or config that failed, and the behaviour the library now guarantees.
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace fusedmoe {
namespace {

class FuzzRegression : public ::testing::Test {
 protected:
  void SetUp() override {
    weights = HostWeights::random(config, {});
    Result<Layer> l = test::make_layer(config, weights.view(), Backend::cpu);
    ASSERT_TRUE(l.ok()) << l.status().to_string();
    layer.emplace(std::move(l).value());
    workspace.resize(layer->workspace_size(kTokens));
  }
  ForwardArgs args() {
    ForwardArgs a;
    a.x = make_tensor(static_cast<const void*>(x.data()), DType::bf16, {kTokens, 16});
    a.out = make_tensor(static_cast<void*>(out.data()), DType::bf16, {kTokens, 16});
    a.workspace = {workspace.data(), workspace.size()};
    return a;
  }
  static constexpr std::int64_t kTokens = 4;
  LayerConfig config = test::make_config(16, 8, 8, 2);
  HostWeights weights;
  std::optional<Layer> layer;
  std::vector<std::uint16_t> x = std::vector<std::uint16_t>(kTokens * 16, 0x3f80);  // 1.0
  std::vector<std::uint16_t> out = std::vector<std::uint16_t>(kTokens * 16, 0xffff);
  std::vector<std::byte> workspace;
};

TEST_F(FuzzRegression, RankAboveFourIsDescribedWithoutReadingPastTheShape) {
  // describe() read shape[4..] (past the std::array) for the error message.
  ForwardArgs a = args();
  a.x.rank = 7;
  const Status s = layer->forward(a);
  EXPECT_EQ(s.code(), StatusCode::invalid_shape) << s.to_string();
  a = args();
  a.ids_out.rank = 9;  // present only through its rank
  EXPECT_FALSE(layer->forward(a).ok());
}

TEST_F(FuzzRegression, SizesWhoseProductOverflowsAreRefused) {
  // numel() multiplied sizes in int64 without a check (signed overflow).
  ForwardArgs a = args();
  a.x.shape[0] = std::int64_t{1} << 62;
  a.x.strides[0] = 0;
  EXPECT_FALSE(layer->forward(a).ok());
  const ConstTensorRef t =
      make_tensor(static_cast<const void*>(nullptr), DType::f32, {std::int64_t{1} << 40, 1 << 30});
  EXPECT_EQ(t.numel(), std::numeric_limits<std::int64_t>::max());
}

TEST_F(FuzzRegression, StridesPastAddressableMemoryAreRefused) {
  // out [4, 16] with a row stride of 2^62 elements: the last row's address overflowed.
  ForwardArgs a = args();
  a.out.strides[0] = std::int64_t{1} << 62;
  const Status s = layer->forward(a);
  EXPECT_EQ(s.code(), StatusCode::invalid_shape) << s.to_string();
  EXPECT_EQ(out[0], 0xffff) << "a refused call wrote out";
}

TEST_F(FuzzRegression, HugeTokenCountsAreRefusedNotWrapped) {
  // T · k past 2^31 (the backends' slot indices) and T whose workspace size overflows.
  for (std::int64_t t :
       {std::int64_t{1} << 31, std::int64_t{1} << 59, std::numeric_limits<std::int64_t>::max()}) {
    ForwardArgs a = args();
    a.x.shape[0] = a.out.shape[0] = t;
    a.x.strides[0] = a.out.strides[0] = 0;
    EXPECT_EQ(layer->workspace_size(t), std::numeric_limits<std::size_t>::max());
    EXPECT_EQ(layer->forward(a).code(), StatusCode::invalid_shape) << "T = " << t;
  }
}

TEST_F(FuzzRegression, OutputsWhoseElementsShareMemoryAreRefused) {
  // forward_fuzzer ran for 20 minutes on one input: out of ~10^8 rows that all alias one row
  // (stride 0), below the 2^31 slot limit, so every token was computed and written to the same
  // place. An output needs a place per element: rows that overlap are refused, x may alias.
  ForwardArgs a = args();
  a.x.shape[0] = a.out.shape[0] = std::int64_t{1} << 27;
  a.x.strides[0] = a.out.strides[0] = 0;
  Status s = layer->forward(a);
  EXPECT_EQ(s.code(), StatusCode::invalid_shape) << s.to_string();
  EXPECT_NE(s.message().find("share memory"), std::string::npos) << s.message();
  a = args();
  a.out.strides[0] = 8;  // rows of 16 elements, 8 apart
  EXPECT_EQ(layer->forward(a).code(), StatusCode::invalid_shape);
  EXPECT_EQ(out[0], 0xffff) << "a refused call wrote out";
  std::vector<std::int32_t> ids(kTokens * 2);
  a = args();
  a.ids_out = make_tensor(static_cast<void*>(ids.data()), DType::i32, {kTokens, 2});
  a.ids_out.strides = {1, 1, 0, 0};  // [t][j] and [t + 1][j - 1] coincide
  EXPECT_EQ(layer->forward(a).code(), StatusCode::invalid_shape);
  // what is allowed: x rows that alias (one token repeated), and column-major ids_out
  a = args();
  a.x.strides[0] = 0;
  a.ids_out = make_tensor(static_cast<void*>(ids.data()), DType::i32, {kTokens, 2});
  a.ids_out.strides = {1, kTokens, 0, 0};
  s = layer->forward(a);
  EXPECT_TRUE(s.ok()) << s.to_string();
}

TEST(FuzzRegressionConfig, NaNInAnUnusedActivationParameterIsRefusedByValidate) {
  // A NaN swiglu_limit with plain SwiGLU passed validate, but the config then compared unequal
  // to itself, so Layer::create refused its own packed weights ("packed for another layer
  // configuration"). validate now refuses the NaN up front.
  LayerConfig c = test::make_config(16, 8, 8, 2);
  c.swiglu_limit = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(validate(c).code(), StatusCode::invalid_argument);
  c = test::make_config(16, 8, 8, 2);
  c.swiglu_alpha = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(validate(c).code(), StatusCode::invalid_argument);
  c.swiglu_alpha = std::numeric_limits<float>::infinity();  // unused and equal to itself: fine
  EXPECT_TRUE(validate(c).ok());
  const HostWeights w = HostWeights::random(c, {});
  EXPECT_TRUE(test::make_layer(c, w.view(), Backend::cpu).ok());
}

}  // namespace
}  // namespace fusedmoe
