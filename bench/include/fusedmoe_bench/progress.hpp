// Progress of a long sweep on stderr: "[#####.....] 12/40 qwen3-30b-a3b T=64, ETA 1m20s".
// On a terminal the bar is redrawn in place; otherwise (a log file, CI) each step is one plain
// line; quiet prints nothing. stdout is left alone, so a table or JSON on stdout stays clean.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "fusedmoe_bench/timing.hpp"

namespace fusedmoe::bench {

class Progress {
 public:
  // `step_weights`: the expected relative cost of each step, so that the ETA does not assume a
  // T=4096 step costs as much as a T=1 step. All equal when empty (then `steps` is the count).
  Progress(std::size_t steps, std::vector<double> step_weights, bool quiet);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // The next step begins; `label` says what it runs.
  void start(const std::string& label);
  // The step begun last has ended.
  void finish_step();
  // Erases the bar on a terminal, so the caller can print a line; the next start() redraws.
  void clear();

 private:
  std::string eta() const;
  void draw(const std::string& text);

  std::vector<double> weights_;
  std::size_t done_ = 0;
  double done_weight_ = 0;
  double total_weight_ = 0;
  bool quiet_;
  bool tty_;
  bool drawn_ = false;
  Stopwatch watch_;
};

// "850 ms", "12 s", "3m05s", "1h02m".
std::string format_duration(double seconds);

}  // namespace fusedmoe::bench
