#include "fusedmoe_bench/timing.hpp"

#include <algorithm>

namespace fusedmoe::bench {

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

TimingStats summarize(std::vector<double> samples_us) {
  TimingStats s;
  s.reps = static_cast<int>(samples_us.size());
  if (samples_us.empty()) return s;
  const auto [lo, hi] = std::minmax_element(samples_us.begin(), samples_us.end());
  s.min_us = *lo;
  s.max_us = *hi;
  s.median_us = median(std::move(samples_us));
  return s;
}

}  // namespace fusedmoe::bench
