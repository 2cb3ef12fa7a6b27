// Command-line parsing for the `fusedmoe` tool, kept apart from everything that runs a layer:
// a pure function from arguments to options or to a one-line error, so it can be unit-tested
// and fuzzed without touching memory, threads or files.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fusedmoe/checkpoint.hpp"
#include "fusedmoe/config.hpp"
#include "fusedmoe/tensor.hpp"
#include "fusedmoe/weights.hpp"

namespace fusedmoe::cli {

enum class Command : std::uint8_t { run, verify, bench, presets, help, version };

std::string_view command_name(Command command);

// `best` is resolved when the command runs (fusedmoe::best_backend()), not while parsing.
enum class BackendChoice : std::uint8_t { best, reference, cpu, cuda };

// The name of a layer given by explicit sizes instead of --preset.
inline constexpr std::string_view kCustomLayerName = "custom";

// Limits on values, so a typo cannot ask for terabytes or a loop of 2^63 repetitions.
inline constexpr std::int64_t kMaxTokens = std::int64_t{1} << 20;
inline constexpr std::int64_t kMaxHidden = std::int64_t{1} << 17;  // also I and shared I
inline constexpr std::int64_t kMaxExperts = std::int64_t{1} << 14;
inline constexpr int kMaxReps = 100000;
inline constexpr int kMaxWarmup = 1000;
inline constexpr int kMaxLayer = 100000;  // --layer
inline constexpr double kMaxSkew = 16.0;

// Repetitions when the command line gives none. CUDA-event timings are cheap and short, so the GPU
// takes many more: PERF.md asks for the median of at least 20.
inline constexpr int kDefaultReps = 20;
inline constexpr int kDefaultWarmup = 3;
inline constexpr int kDefaultGpuReps = 100;
inline constexpr int kDefaultGpuWarmup = 10;
// On the GPU, batches of at most this many tokens are timed as CUDA graph replays: that is how
// decoders run them, and a launch gap would otherwise be a large part of a few-µs layer.
inline constexpr std::int64_t kGraphMaxTokens = 64;

struct Options {
  Command command = Command::run;
  bool help = false;  // print the help of `command` and do nothing else

  // The layers: preset names (checked against fusedmoe::presets()) or one explicit layer. The
  // explicit layer's dtype is `dtype` below.
  std::vector<std::string> presets;
  std::optional<LayerConfig> custom;

  // run, verify: one layer of a Hugging Face checkpoint instead of random weights. Its config
  // comes from the checkpoint's config.json unless a preset or explicit sizes are given; its
  // architecture (tensor names) from --arch, else config.json, else the preset's model.
  std::string weights_path;
  int layer = -1;  // with weights_path: the layer to load (>= 0)
  std::optional<Architecture> arch;
  bool dtype_given = false;  // --dtype was on the line (else a checkpoint's own dtype is used)

  std::vector<std::int64_t> tokens;
  std::vector<double> skews;  // 0: the layer's own router; > 0: Zipf-skewed precomputed routing
  BackendChoice backend = BackendChoice::best;
  DType dtype = DType::bf16;
  bool no_shared_expert = false;  // drop the presets' shared expert (PERF.md's grid)
  std::uint64_t seed = 1;
  std::optional<int> reps;    // default: kDefaultReps, or kDefaultGpuReps on the GPU
  std::optional<int> warmup;  // default: kDefaultWarmup, or kDefaultGpuWarmup on the GPU
  bool graph = true;          // GPU: time T <= kGraphMaxTokens as CUDA graph replays
  WeightLayout layout = WeightLayout::gate_up_rows;
  bool reference = false;      // bench: also time Backend::reference
  bool reference_all = false;  // bench: ... at every T, not only T <= 256
  std::string json_path;       // run, bench: append JSON Lines results here
  bool quiet = false;          // run, bench: no progress on stderr
};

struct ParseResult {
  std::optional<Options> options;
  std::string error;  // one line, without the "fusedmoe: " prefix; empty when options is set
  bool ok() const { return options.has_value(); }
};

// `args` are the arguments after the program name. With none: `run` with its defaults.
ParseResult parse_args(std::span<const std::string_view> args);
// The usual entry: argv[1 .. argc).
ParseResult parse_args(int argc, const char* const* argv);

// The --help text of a command (Command::help: the top-level overview).
std::string help_text(Command command);

}  // namespace fusedmoe::cli
