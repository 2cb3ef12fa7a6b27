// The read-bandwidth probe of PERF.md: every 16-byte word of a buffer read once, summed so that
// the loads cannot be elided; read-only on purpose (a copy would count writes too).
#pragma once

#include <cstdint>

namespace fusedmoe::cuda {

__global__ void read_sum(const uint4* __restrict__ data, std::int64_t words,
                         unsigned* __restrict__ sink) {
  unsigned acc = 0;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // four independent loads in flight per thread
  for (; i + 3 * stride < words; i += 4 * stride) {
    const uint4 a = data[i], b = data[i + stride], c = data[i + 2 * stride],
                d = data[i + 3 * stride];
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^
           d.w;
  }
  for (; i < words; i += stride) {
    const uint4 a = data[i];
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;  // practically never: keeps the loads alive
}

}  // namespace fusedmoe::cuda
