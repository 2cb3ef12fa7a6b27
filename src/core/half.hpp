// Scalar conversions between f32 and the 16-bit float formats (round to nearest even, NaN kept
// NaN). Used by the reference, packing and data generation; SIMD kernels have their own.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "fusedmoe/tensor.hpp"

namespace fusedmoe::core {

inline float bf16_to_f32(std::uint16_t h) { return std::bit_cast<float>(std::uint32_t{h} << 16); }

inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t{h & 0x8000u} << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // Inf, NaN
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);
  // subnormal: value = mant · 2^-24
  const float v = static_cast<float>(mant) * 0x1p-24f;
  return sign ? -v : v;
}

inline std::uint16_t f32_to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow to Inf
  if (abs < 0x38800000u) {  // below the smallest normal f16: round to a subnormal
    const float v = std::bit_cast<float>(abs) * 0x1p24f;  // exact scaling into [0, 1024)
    // round half to even on the integer mantissa
    const float r = v + 0x1p23f - 0x1p23f;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(r));
  }
  std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even at bit 13
  return static_cast<std::uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

// Reads element `i` of a float buffer of dtype `dt` (f32, f16, bf16) as f32.
inline float load_f32(DType dt, const void* base, std::int64_t i) {
  switch (dt) {
    case DType::bf16:
      return bf16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    case DType::f16:
      return f16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    case DType::f32:
      return static_cast<const float*>(base)[i];
    case DType::i32:
      return static_cast<float>(static_cast<const std::int32_t*>(base)[i]);
  }
  return 0.0f;
}

// Writes `v` rounded to dtype `dt` into element `i`.
inline void store_f32(DType dt, void* base, std::int64_t i, float v) {
  switch (dt) {
    case DType::bf16:
      static_cast<std::uint16_t*>(base)[i] = f32_to_bf16(v);
      return;
    case DType::f16:
      static_cast<std::uint16_t*>(base)[i] = f32_to_f16(v);
      return;
    case DType::f32:
      static_cast<float*>(base)[i] = v;
      return;
    case DType::i32:
      static_cast<std::int32_t*>(base)[i] = static_cast<std::int32_t>(v);
      return;
  }
}

}  // namespace fusedmoe::core
