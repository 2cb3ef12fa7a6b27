// core::apply_activation against values worked out independently (MODELS.md formulas evaluated
// in high precision offline), in float and double. gpt-oss's alpha is the config's float 1.702f
// (= 1.7020000219345093), and the expected values use exactly that.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/activation.hpp"
#include "test_util.hpp"

namespace fusedmoe {
namespace {

LayerConfig with_activation(Activation a) {
  LayerConfig c = test::make_config(8, 8, 2, 1);
  c.activation = a;
  return c;
}

template <class Real>
double act(const LayerConfig& c, double gate, double up) {
  return static_cast<double>(
      core::apply_activation<Real>(c, static_cast<Real>(gate), static_cast<Real>(up)));
}

template <class Real>
double tol(double want) {
  return (std::is_same_v<Real, float> ? 2e-6 : 1e-13) * std::max(1.0, std::abs(want));
}

template <class Real>
class ActivationTest : public ::testing::Test {};
using Reals = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ActivationTest, Reals);

TYPED_TEST(ActivationTest, SwiGLU) {
  const LayerConfig c = with_activation(Activation::swiglu);
  // silu(g) · u = g · sigmoid(g) · u
  const struct {
    double gate, up, want;
  } cases[] = {{1.0, 2.0, 1.4621171572600098},
               {-2.0, 3.0, -0.7152175321327052},
               {0.5, -1.5, -0.466844498401391},
               {0.0, 5.0, 0.0}};
  for (const auto& k : cases) {
    EXPECT_NEAR(act<TypeParam>(c, k.gate, k.up), k.want, tol<TypeParam>(k.want))
        << "gate " << k.gate << " up " << k.up;
  }
}

TYPED_TEST(ActivationTest, SwiGLUSaturates) {
  const LayerConfig c = with_activation(Activation::swiglu);
  // silu(g) -> g for large g and -> 0 (not NaN) for very negative g
  EXPECT_NEAR(act<TypeParam>(c, 50.0, 2.0), 100.0, tol<TypeParam>(100.0));
  const double v = act<TypeParam>(c, -200.0, 2.0);
  EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(v, 0.0, 1e-30);
}

TYPED_TEST(ActivationTest, GeGLUTanhForm) {
  const LayerConfig c = with_activation(Activation::geglu);
  // 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) · u
  const struct {
    double gate, up, want;
  } cases[] = {{1.0, 1.0, 0.8411919906082768},
               {-0.5, 2.0, -0.3085719803497121},
               {2.5, -0.75, -1.863686800432501}};
  for (const auto& k : cases) {
    EXPECT_NEAR(act<TypeParam>(c, k.gate, k.up), k.want, tol<TypeParam>(k.want))
        << "gate " << k.gate << " up " << k.up;
  }
}

TYPED_TEST(ActivationTest, GeGLUIsNotTheErfForm) {
  // erf-GELU(1) = 0.8413447460685429; the tanh form gives 0.8411919906082768. The difference
  // (1.5e-4) is far above float rounding, so this pins the tanh form.
  const LayerConfig c = with_activation(Activation::geglu);
  EXPECT_GT(std::abs(act<TypeParam>(c, 1.0, 1.0) - 0.8413447460685429), 1e-4);
}

TYPED_TEST(ActivationTest, SwiGLUOssWithinLimits) {
  const LayerConfig c = with_activation(Activation::swiglu_oss);
  // (u + 1) · g · sigmoid(1.702 g), no clamping for |u| <= 7, g <= 7
  EXPECT_NEAR(act<TypeParam>(c, 1.5, 0.5), 2.0874933026312013, tol<TypeParam>(2.09));
  EXPECT_NEAR(act<TypeParam>(c, 3.0, 6.5), 22.36446518605655, tol<TypeParam>(22.4));
}

TYPED_TEST(ActivationTest, SwiGLUOssClampsGateAboveLimit) {
  const LayerConfig c = with_activation(Activation::swiglu_oss);
  // gate 8 -> 7, up 9 -> 7: 8 · 7 · sigmoid(11.914)
  EXPECT_NEAR(act<TypeParam>(c, 8.0, 9.0), 55.99962502648411, tol<TypeParam>(56.0));
  // gate 7.5 -> 7, up -8 -> -7: -6 · 7 · sigmoid(11.914)
  EXPECT_NEAR(act<TypeParam>(c, 7.5, -8.0), -41.99971876986309, tol<TypeParam>(42.0));
}

TYPED_TEST(ActivationTest, SwiGLUOssDoesNotClampGateBelow) {
  const LayerConfig c = with_activation(Activation::swiglu_oss);
  // gate -10 stays -10 (min only), up -9 -> -7: (-6) · (-10) · sigmoid(-17.02) = 2.4348e-6.
  // Clamping the gate to -7 would give 2.8e-4.
  const double want = 2.4347762428569284e-06;
  EXPECT_NEAR(act<TypeParam>(c, -10.0, -9.0), want, want * 1e-5);
}

TYPED_TEST(ActivationTest, SwiGLUOssUsesConfiguredLimitAndAlpha) {
  LayerConfig c = with_activation(Activation::swiglu_oss);
  c.swiglu_limit = 1.5f;
  c.swiglu_alpha = 1.0f;
  // gate 2 -> 1.5, up 3 -> 1.5: 2.5 · 1.5 · sigmoid(1.5)
  EXPECT_NEAR(act<TypeParam>(c, 2.0, 3.0), 3.065904285726164, tol<TypeParam>(3.07));
}

TYPED_TEST(ActivationTest, NaNStaysNaN) {
  // Clamping must not turn a NaN (a broken token) into a plausible number.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (Activation a : {Activation::swiglu, Activation::geglu, Activation::swiglu_oss}) {
    SCOPED_TRACE(to_string(a));
    const LayerConfig c = with_activation(a);
    EXPECT_TRUE(std::isnan(act<TypeParam>(c, nan, 1.0)));
    EXPECT_TRUE(std::isnan(act<TypeParam>(c, 1.0, nan)));
  }
}

}  // namespace
}  // namespace fusedmoe
