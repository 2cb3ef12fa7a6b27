// Tensor descriptors drawn from a fuzzer's input, each backed by a buffer that really holds every
// element it describes. The harnesses never lie about memory: a descriptor whose extent is too
// large to allocate gets a null pointer instead, and one the library must reject (negative sizes
// or strides, a rank outside [0, 4], an unknown dtype) gets a small buffer. So any read or write
// past a buffer that AddressSanitizer reports is the library's fault, not the harness's.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fusedmoe/fusedmoe.h"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe::fuzz {

// No buffer a harness allocates is larger than this.
inline constexpr std::size_t kMaxBufferBytes = std::size_t{1} << 20;
// A descriptor the library must reject still gets this many bytes, so a read shows.
inline constexpr std::size_t kRejectBufferBytes = 64;

// Stops the process so that libFuzzer records the input: a property the library promises failed.
[[noreturn]] inline void violated(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: property violated: %s\n", file, line, what);
  std::abort();
}

}  // namespace fusedmoe::fuzz

#define FUSEDMOE_FUZZ_REQUIRE(cond)                                     \
  do {                                                                  \
    if (!(cond)) ::fusedmoe::fuzz::violated(#cond, __FILE__, __LINE__); \
  } while (0)

namespace fusedmoe::fuzz {

// Elements from the first to one past the last addressed, or -1 when the descriptor is invalid
// (negative sizes or strides, a rank outside [0, kMaxRank], an unknown dtype) or overflows.
inline std::int64_t extent_elements(const ConstTensorRef& t) {
  if (t.rank < 0 || t.rank > kMaxRank || dtype_size(t.dtype) == 0) return -1;
  std::int64_t last = 0;
  for (int d = 0; d < t.rank; ++d) {
    if (t.size(d) < 0 || t.stride(d) < 0) return -1;
    if (t.size(d) == 0) return 0;
  }
  for (int d = 0; d < t.rank; ++d) {
    std::int64_t span = 0;
    if (__builtin_mul_overflow(t.size(d) - 1, t.stride(d), &span) ||
        __builtin_add_overflow(last, span, &last)) {
      return -1;
    }
  }
  if (last == INT64_MAX) return -1;  // one past the last element would not fit
  return last + 1;
}

// A descriptor and the buffer behind it.
struct FuzzTensor {
  std::vector<std::byte> storage;
  TensorRef ref;

  // Bytes from the data pointer to the end of the buffer (0 when absent).
  std::size_t bytes_after_data() const {
    if (ref.data == nullptr) return 0;
    return storage.size() -
           static_cast<std::size_t>(static_cast<const std::byte*>(ref.data) - storage.data());
  }
  std::vector<std::byte> snapshot() const { return storage; }
};

// Fills `bytes` from `in`'s choice: random bytes (NaN, Inf, any id), small integers (ids near
// [0, E), exact floats), or one repeated byte.
inline void fill(FuzzedDataProvider& in, std::vector<std::byte>& bytes, DType dtype) {
  if (bytes.empty()) return;
  const int mode = in.ConsumeIntegralInRange(0, 2);
  std::uint64_t state = in.ConsumeIntegral<std::uint64_t>() | 1;
  const auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const std::size_t es = dtype_size(dtype);  // 0: not a dtype
  if (mode == 2 || es == 0) {
    std::memset(bytes.data(), static_cast<int>(state & 0xff), bytes.size());
    return;
  }
  for (std::size_t i = 0; i + es <= bytes.size(); i += es) {
    if (mode == 0) {
      const std::uint64_t r = next();
      std::memcpy(bytes.data() + i, &r, es);
      continue;
    }
    const auto v = static_cast<std::int32_t>(next() % 11) - 2;  // -2 .. 8
    const float f = static_cast<float>(v);
    if (dtype == DType::i32) {
      std::memcpy(bytes.data() + i, &v, 4);
    } else if (dtype == DType::f32) {
      std::memcpy(bytes.data() + i, &f, 4);
    } else {
      // f16 and bf16 hold these integers exactly; the upper half of f32 is bf16, for f16 any
      // pattern is fine.
      std::uint32_t u = 0;
      std::memcpy(&u, &f, 4);
      const auto half = static_cast<std::uint16_t>(u >> 16);
      std::memcpy(bytes.data() + i, &half, 2);
    }
  }
}

// Allocates and fills the buffer behind `t` (its data pointer is replaced), offset by `misalign`
// bytes; a null pointer where the extent is too large.
inline FuzzTensor back(FuzzedDataProvider& in, TensorRef t, std::size_t misalign) {
  FuzzTensor f;
  const std::int64_t elements = extent_elements(t);
  const std::size_t es = dtype_size(t.dtype);
  std::size_t bytes = kRejectBufferBytes;
  if (elements >= 0) {
    if (static_cast<std::uint64_t>(elements) > kMaxBufferBytes / std::max<std::size_t>(es, 1)) {
      t.data = nullptr;
      f.ref = t;
      return f;
    }
    bytes = static_cast<std::size_t>(elements) * es;
  }
  f.storage.resize(bytes + misalign);
  fill(in, f.storage, t.dtype);
  t.data = f.storage.data() + misalign;
  f.ref = t;
  return f;
}

// A descriptor near `like` (what the callee expects): kept, made absent, or with its rank,
// sizes, strides, dtype, device or alignment changed; then backed.
inline FuzzTensor mutate(FuzzedDataProvider& in, const ConstTensorRef& like) {
  TensorRef t{
      const_cast<void*>(like.data), like.dtype, like.device, like.rank, like.shape, like.strides};
  std::size_t misalign = 0;
  const int mutations = in.ConsumeIntegralInRange(0, 3);
  for (int m = 0; m < mutations; ++m) {
    const int d = in.ConsumeIntegralInRange(0, kMaxRank - 1);
    auto& size = t.shape[static_cast<std::size_t>(d)];
    auto& stride = t.strides[static_cast<std::size_t>(d)];
    switch (in.ConsumeIntegralInRange(0, 11)) {
      case 0:
        return {};  // absent
      case 1:
        t.rank = in.ConsumeIntegralInRange(-1, kMaxRank + 3);
        break;
      case 2:
        size = in.ConsumeIntegralInRange<std::int64_t>(-2, 70);
        break;
      case 3:
        size = in.ConsumeIntegral<std::int64_t>();
        break;
      case 4:
        stride = in.ConsumeIntegralInRange<std::int64_t>(-2, 70);
        break;
      case 5:
        stride = in.ConsumeIntegral<std::int64_t>();
        break;
      case 6:
        // many rows over one: stride 0 aliases them all (a small buffer, a huge T)
        stride = 0;
        size = in.ConsumeIntegralInRange<std::int64_t>(0, std::int64_t{1} << 40);
        break;
      case 7:
        t.dtype = static_cast<DType>(in.ConsumeIntegralInRange(0, 4));
        break;
      case 8:
        t.device = in.ConsumeBool() ? Device::cuda(in.ConsumeIntegralInRange(-1, 2))
                                    : Device{DeviceKind::cpu, in.ConsumeIntegralInRange(-1, 1)};
        break;
      case 9:
        misalign = in.ConsumeIntegralInRange<std::size_t>(1, 3);
        break;
      case 10:
        size = 0;
        break;
      default:
        // a contiguous tensor of new sizes
        size = in.ConsumeIntegralInRange<std::int64_t>(0, 40);
        {
          std::int64_t s = 1;
          for (int r = std::min(t.rank, kMaxRank) - 1; r >= 0; --r) {
            t.strides[static_cast<std::size_t>(r)] = s;
            if (__builtin_mul_overflow(s, std::max<std::int64_t>(t.shape[r], 1), &s)) s = 1;
          }
        }
        break;
    }
  }
  return back(in, t, misalign);
}

// The C ABI's view of a descriptor.
inline fusedmoe_tensor to_c(const ConstTensorRef& t) {
  fusedmoe_tensor c{};
  c.data = const_cast<void*>(t.data);
  c.dtype = static_cast<std::int32_t>(t.dtype);
  c.device_kind = static_cast<std::int32_t>(t.device.kind);
  c.device_index = t.device.index;
  c.rank = t.rank;
  for (int d = 0; d < std::clamp(t.rank, 0, kMaxRank); ++d) {
    c.shape[d] = t.size(d);
    c.strides[d] = t.stride(d);
  }
  return c;
}

// Sometimes breaks an enum or the rank of a C descriptor with a value outside its range (which
// the ABI must reject before it looks at the memory).
inline void corrupt_c(FuzzedDataProvider& in, fusedmoe_tensor& c) {
  if (!in.ConsumeBool()) return;
  const std::int32_t bad = in.ConsumeBool() ? in.ConsumeIntegral<std::int32_t>() : -1;
  switch (in.ConsumeIntegralInRange(0, 2)) {
    case 0:
      if (bad < 0 || bad > 4) c.rank = bad;
      break;
    case 1:
      if (bad < 0 || bad > 3) c.dtype = bad;
      break;
    default:
      if (bad < 0 || bad > 1) c.device_kind = bad;
      break;
  }
}

// The C ABI's view of a layer configuration, filled as a C caller would.
inline fusedmoe_layer_config to_c(const LayerConfig& c) {
  fusedmoe_layer_config cc;
  fusedmoe_layer_config_init(&cc);
  cc.hidden = c.hidden;
  cc.intermediate = c.intermediate;
  cc.experts = c.experts;
  cc.top_k = c.top_k;
  cc.routing_kind = static_cast<std::int32_t>(c.routing.kind);
  cc.renormalize = c.routing.renormalize;
  cc.n_group = c.routing.n_group;
  cc.topk_group = c.routing.topk_group;
  cc.scaling = c.routing.scaling;
  cc.router_bias = c.routing.router_bias;
  cc.correction_bias = c.routing.correction_bias;
  cc.activation = static_cast<std::int32_t>(c.activation);
  cc.swiglu_limit = c.swiglu_limit;
  cc.swiglu_alpha = c.swiglu_alpha;
  cc.expert_bias = c.expert_bias;
  cc.shared_intermediate = c.shared.intermediate;
  cc.shared_gated = c.shared.gated;
  cc.dtype = static_cast<std::int32_t>(c.dtype);
  return cc;
}

}  // namespace fusedmoe::fuzz
