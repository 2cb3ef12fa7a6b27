#include "fusedmoe_bench/timing.hpp"

#include <algorithm>

namespace fusedmoe::bench {

double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(pos);
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + frac * (sorted[hi] - sorted[lo]);
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return quantile(values, 0.5);
}

TimingStats summarize(std::vector<double> samples_us) {
  TimingStats s;
  s.reps = static_cast<int>(samples_us.size());
  if (samples_us.empty()) return s;
  std::sort(samples_us.begin(), samples_us.end());
  s.min_us = samples_us.front();
  s.max_us = samples_us.back();
  s.median_us = quantile(samples_us, 0.5);
  s.p10_us = quantile(samples_us, 0.1);
  s.p90_us = quantile(samples_us, 0.9);
  return s;
}

}  // namespace fusedmoe::bench
