// libFuzzer harness: the `fusedmoe` command's flag parser (tools/fusedmoe/args.hpp), a pure
// function from arguments to options or a one-line error. The input is the argument list, one
// argument per NUL-separated piece. Properties besides "no crash": exactly one of options and
// error is set, an error is one non-empty line, and accepted values respect the parser's limits.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <vector>

#include "args.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fusedmoe::cli;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> args;
  std::size_t start = 0;
  while (start <= text.size() && args.size() < 64) {
    const std::size_t end = text.find('\0', start);
    args.push_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  if (size == 0) args.clear();
  const ParseResult r = parse_args(std::span<const std::string_view>(args));
  if (r.ok() != r.error.empty()) {
    std::fprintf(stderr, "ok %d with error '%s'\n", r.ok() ? 1 : 0, r.error.c_str());
    __builtin_trap();
  }
  if (!r.ok()) {
    // One line, unless an argument itself holds a line break: errors echo arguments verbatim
    // (args.cpp's quoted() and the unknown-command message do not escape control characters;
    // RELIABILITY.md lists it).
    const bool echoed = text.find('\n') != std::string_view::npos;
    if (!echoed && r.error.find('\n') != std::string::npos) __builtin_trap();
    return 0;
  }
  const Options& o = *r.options;
  for (const std::int64_t t : o.tokens) {
    if (t < 1 || t > kMaxTokens) __builtin_trap();
  }
  for (const double s : o.skews) {
    if (!(s >= 0.0 && s <= kMaxSkew)) __builtin_trap();
  }
  if (o.reps && (*o.reps < 1 || *o.reps > kMaxReps)) __builtin_trap();
  if (o.warmup && (*o.warmup < 0 || *o.warmup > kMaxWarmup)) __builtin_trap();
  if (o.custom) {
    const fusedmoe::Status s = fusedmoe::validate(*o.custom);
    if (!s.ok()) __builtin_trap();  // the parser hands the command only layers that validate
  }
  static_cast<void>(help_text(o.command));
  return 0;
}
