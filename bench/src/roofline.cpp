#include "fusedmoe_bench/roofline.hpp"

#include <algorithm>
#include <cmath>

#include "fusedmoe/tensor.hpp"

namespace fusedmoe::bench {

LayerWork layer_work(const LayerConfig& c, std::int64_t tokens, double experts_hit) {
  const double es = static_cast<double>(dtype_size(c.dtype));
  const double t = static_cast<double>(tokens);
  const double h = static_cast<double>(c.hidden);
  const double i = static_cast<double>(c.intermediate);
  const double is = static_cast<double>(c.shared.intermediate);
  const double e = static_cast<double>(c.experts);
  const double k = static_cast<double>(c.top_k);
  LayerWork w;
  w.bytes = experts_hit * 3 * h * i * es + 3 * h * is * es + 2 * t * h * es;
  w.flops = 2 * t * k * 3 * h * i + 2 * t * 3 * h * is;
  if (c.routing.kind != RoutingKind::precomputed) {
    w.bytes += e * h * 4;  // fp32 router
    w.flops += 2 * t * h * e;
  }
  return w;
}

Floor floor_of(const LayerWork& work, double read_gbps, double compute_gflops) {
  // bytes / (GB/s · 1e9) seconds = bytes / (GB/s · 1e3) microseconds; likewise for flops.
  const double memory_us = read_gbps > 0 ? work.bytes / (read_gbps * 1e3) : 0;
  const double compute_us = compute_gflops > 0 ? work.flops / (compute_gflops * 1e3) : 0;
  return {std::max(memory_us, compute_us), memory_us >= compute_us};
}

double expected_experts_hit(const LayerConfig& c, std::int64_t tokens) {
  if (c.experts <= 0) return 0;
  const double e = static_cast<double>(c.experts);
  const double miss = 1.0 - static_cast<double>(std::min(c.top_k, c.experts)) / e;
  return e * (1.0 - std::pow(miss, static_cast<double>(tokens)));
}

}  // namespace fusedmoe::bench
