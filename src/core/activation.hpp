// The gated activations (MODELS.md), for any floating type: double in the reference, float in
// the fast paths.
#pragma once

#include <algorithm>
#include <cmath>

#include "fusedmoe/config.hpp"

namespace fusedmoe::core {

template <class Real>
Real apply_activation(const LayerConfig& c, Real gate, Real up) {
  switch (c.activation) {
    case Activation::swiglu:
      return gate / (Real(1) + std::exp(-gate)) * up;
    case Activation::geglu: {
      constexpr Real kSqrt2OverPi = Real(0.7978845608028654);
      const Real inner = kSqrt2OverPi * (gate + Real(0.044715) * gate * gate * gate);
      return Real(0.5) * gate * (Real(1) + std::tanh(inner)) * up;
    }
    case Activation::swiglu_oss: {
      const Real limit = Real(c.swiglu_limit);
      // min/clamp written so that NaN stays NaN
      const Real g = gate > limit ? limit : gate;
      const Real u = up > limit ? limit : (up < -limit ? -limit : up);
      return (u + Real(1)) * g / (Real(1) + std::exp(-Real(c.swiglu_alpha) * g));
    }
  }
  return Real(0);
}

}  // namespace fusedmoe::core
