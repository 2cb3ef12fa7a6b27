// The gated activations of MODELS.md on fp32 registers, the same formulas as the CPU backends
// (core/activation.hpp), and the split of an f32 value into two 16-bit halves (hi + lo) that the
// down GEMM multiplies separately.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fusedmoe::cuda {

enum class ActivationKind : int { swiglu = 0, geglu = 1, swiglu_oss = 2 };

struct ActivationParams {
  ActivationKind kind = ActivationKind::swiglu;
  float limit = 7.0f;    // swiglu_oss clamp
  float alpha = 1.702f;  // swiglu_oss sigmoid slope
};

__device__ __forceinline__ float gated_activation(const ActivationParams& p, float gate, float up) {
  switch (p.kind) {
    case ActivationKind::swiglu:
      return gate / (1.0f + expf(-gate)) * up;
    case ActivationKind::geglu: {
      const float inner = 0.7978845608028654f * (gate + 0.044715f * gate * gate * gate);
      return 0.5f * gate * (1.0f + tanhf(inner)) * up;
    }
    case ActivationKind::swiglu_oss: {
      // written so that NaN stays NaN, as on the CPU
      const float g = gate > p.limit ? p.limit : gate;
      const float u = up > p.limit ? p.limit : (up < -p.limit ? -p.limit : up);
      return (u + 1.0f) * g / (1.0f + expf(-p.alpha * g));
    }
  }
  return 0.0f;
}

template <class Elem>
struct Split16;
template <>
struct Split16<__nv_bfloat16> {
  using Pair = __nv_bfloat162;
  // v ≈ hi + lo, each rounded to bf16 (lo keeps the bits hi lost).
  __device__ __forceinline__ static void split(float2 v, Pair& hi, Pair& lo) {
    hi = __float22bfloat162_rn(v);
    const float2 h = __bfloat1622float2(hi);
    lo = __float22bfloat162_rn(make_float2(v.x - h.x, v.y - h.y));
  }
};
template <>
struct Split16<__half> {
  using Pair = __half2;
  __device__ __forceinline__ static void split(float2 v, Pair& hi, Pair& lo) {
    hi = __float22half2_rn(v);
    const float2 h = __half22float2(hi);
    lo = __float22half2_rn(make_float2(v.x - h.x, v.y - h.y));
  }
};

}  // namespace fusedmoe::cuda
