// The floor of one MoE layer forward (PERF.md): the time the bytes it must read take at the
// measured read bandwidth, or the time its flops take at the measured compute ceiling, whichever
// is longer.
#pragma once

#include <cstdint>
#include <string_view>

#include "fusedmoe/config.hpp"

namespace fusedmoe::bench {

struct LayerWork {
  double bytes = 0;  // expert weights of the experts hit + shared expert + x and out + router
  double flops = 0;  // routed GEMMs + shared expert + router, an FMA counted as 2
};

// `experts_hit` is the number of distinct routed experts the batch selects (may be a mean over
// several batches). The router counts only when the layer computes it (not precomputed routing).
LayerWork layer_work(const LayerConfig& config, std::int64_t tokens, double experts_hit);

struct Floor {
  double us = 0;
  bool memory_bound = true;
  std::string_view bound() const { return memory_bound ? "memory" : "compute"; }
};

Floor floor_of(const LayerWork& work, double read_gbps, double compute_gflops);

// Experts a batch of `tokens` is expected to hit under uniform routing, for estimates made before
// anything ran (progress weights): E · (1 − (1 − k/E)^tokens).
double expected_experts_hit(const LayerConfig& config, std::int64_t tokens);

}  // namespace fusedmoe::bench
