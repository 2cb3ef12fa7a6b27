#include "fusedmoe_bench/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace fusedmoe::bench {
namespace {

constexpr int kBarWidth = 20;

int terminal_columns() {
  winsize ws{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 100;
}

}  // namespace

std::string format_duration(double seconds) {
  char buf[32];
  if (!(seconds >= 0)) seconds = 0;
  if (seconds < 1) {
    std::snprintf(buf, sizeof(buf), "%.0f ms", seconds * 1e3);
  } else if (seconds < 60) {
    std::snprintf(buf, sizeof(buf), "%.0f s", seconds);
  } else if (seconds < 3600) {
    const long s = std::lround(seconds);
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    const long m = std::lround(seconds / 60);
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", m / 60, m % 60);
  }
  return buf;
}

Progress::Progress(std::size_t steps, std::vector<double> step_weights, bool quiet)
    : weights_(std::move(step_weights)), quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0) {
  if (weights_.size() != steps) weights_.assign(steps, 1.0);
  for (double w : weights_) total_weight_ += w;
}

Progress::~Progress() { clear(); }

std::string Progress::eta() const {
  if (done_weight_ <= 0 || done_ >= weights_.size()) return "ETA ?";
  const double rate = watch_.elapsed_s() / done_weight_;
  return "ETA " + format_duration(rate * (total_weight_ - done_weight_));
}

void Progress::draw(const std::string& text) {
  if (quiet_) return;
  if (!tty_) {
    std::fprintf(stderr, "%s\n", text.c_str());
    return;
  }
  // Truncated to the terminal width: a wrapped line cannot be redrawn in place with \r.
  const auto cols = static_cast<std::size_t>(terminal_columns());
  const std::string shown = text.size() >= cols ? text.substr(0, cols - 1) : text;
  std::fprintf(stderr, "\r%s\x1b[K", shown.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::start(const std::string& label) {
  const std::size_t n = weights_.size();
  const std::string count = std::to_string(done_ + 1) + "/" + std::to_string(n);
  if (!tty_) {
    draw("[" + count + "] " + label + ", " + eta());
    return;
  }
  const double frac = total_weight_ > 0 ? done_weight_ / total_weight_ : 0;
  const int filled = static_cast<int>(std::lround(frac * kBarWidth));
  std::string bar(static_cast<std::size_t>(kBarWidth), '.');
  for (int i = 0; i < filled && i < kBarWidth; ++i) bar[static_cast<std::size_t>(i)] = '#';
  draw("[" + bar + "] " + count + " " + label + ", " + eta());
}

void Progress::finish_step() {
  if (done_ < weights_.size()) done_weight_ += weights_[done_];
  ++done_;
}

void Progress::clear() {
  if (quiet_ || !tty_ || !drawn_) return;
  std::fprintf(stderr, "\r\x1b[K");
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace fusedmoe::bench
