#include "fusedmoe_bench/run_info.hpp"

#include <ctime>

#include "fusedmoe_bench/build_info.hpp"

namespace fusedmoe::bench {
namespace {

bool shell_safe(std::string_view arg) {
  if (arg.empty()) return false;
  for (char c : arg) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == ',' || c == '/' || c == '=' ||
                    c == ':' || c == '+' || c == '@';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string_view build_commit() { return generated::kCommit; }
std::string_view build_version() { return generated::kVersion; }

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

std::string command_line(int argc, const char* const* argv) {
  std::string line;
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i > 0) line += ' ';
    if (shell_safe(arg)) {
      line += arg;
      continue;
    }
    // Single quotes keep everything literal; a single quote itself is closed, escaped, reopened.
    line += '\'';
    for (char c : arg) {
      if (c == '\'') {
        line += "'\\''";
      } else {
        line += c;
      }
    }
    line += '\'';
  }
  return line;
}

}  // namespace fusedmoe::bench
