// Timing of repeated calls: warm-up, then N individually timed repetitions (wall clock here, CUDA
// events through fusedmoe::device), reported as median, 10th/90th percentiles, min and max
// microseconds. The median is the headline figure because one descheduled repetition moves the
// mean but not the median; p10..p90 is the spread a second run is judged against.
#pragma once

#include <chrono>
#include <optional>
#include <vector>

namespace fusedmoe::bench {

struct TimingStats {
  double median_us = 0;
  double p10_us = 0;
  double p90_us = 0;
  double min_us = 0;
  double max_us = 0;
  int reps = 0;
};

// Median (mean of the middle two for an even count), p10, p90, min and max of `samples_us`.
TimingStats summarize(std::vector<double> samples_us);
// The median of any values (0 for none), as summarize() computes it.
double median(std::vector<double> values);
// The q-quantile (0 <= q <= 1) of `sorted` values, interpolated linearly between ranks (0 for
// none); quantile(v, 0.5) is the median.
double quantile(const std::vector<double>& sorted, double q);

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void restart() { start_ = std::chrono::steady_clock::now(); }
  double elapsed_us() const {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start_)
        .count();
  }
  double elapsed_s() const { return elapsed_us() * 1e-6; }

 private:
  std::chrono::steady_clock::time_point start_;
};

// Calls fn(i) for i = 0 .. warmup + reps - 1 and times each of the last `reps` calls. The index
// keeps counting through the warm-up so that callers rotating inputs by it never restart the
// rotation. fn returns false to stop (an error the caller has recorded); then nullopt.
template <class Fn>
std::optional<TimingStats> time_reps(int warmup, int reps, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) {
    if (!fn(i)) return std::nullopt;
  }
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(reps));
  for (int r = 0; r < reps; ++r) {
    const Stopwatch watch;
    if (!fn(warmup + r)) return std::nullopt;
    samples.push_back(watch.elapsed_us());
  }
  return summarize(std::move(samples));
}

}  // namespace fusedmoe::bench
