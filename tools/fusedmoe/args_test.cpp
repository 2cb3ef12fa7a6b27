#include "args.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "fusedmoe/presets.hpp"

namespace fusedmoe::cli {
namespace {

ParseResult parse(std::vector<std::string_view> args) {
  return parse_args(std::span<const std::string_view>(args));
}

Options parse_ok(std::vector<std::string_view> args) {
  ParseResult r = parse(std::move(args));
  EXPECT_TRUE(r.ok()) << r.error;
  return r.ok() ? *r.options : Options{};
}

// Whether `s` holds a control byte (below 0x20, or 0x7f).
bool has_control_byte(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  });
}

std::string parse_error(std::vector<std::string_view> args) {
  ParseResult r = parse(std::move(args));
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(has_control_byte(r.error)) << "errors are one line of text: " << r.error;
  return r.error;
}

TEST(Args, NoArgumentsIsRunWithDefaults) {
  const Options o = parse_ok({});
  EXPECT_EQ(o.command, Command::run);
  EXPECT_FALSE(o.help);
  ASSERT_EQ(o.presets.size(), 1u);
  EXPECT_EQ(o.presets[0], "qwen3-30b-a3b");
  EXPECT_FALSE(o.custom.has_value());
  EXPECT_EQ(o.tokens, std::vector<std::int64_t>{16});
  EXPECT_EQ(o.skews, std::vector<double>{0.0});
  EXPECT_EQ(o.backend, BackendChoice::best);
  EXPECT_EQ(o.dtype, DType::bf16);
  // Repetitions are left to the backend (kDefaultReps on the CPU, kDefaultGpuReps on the GPU).
  EXPECT_FALSE(o.reps.has_value());
  EXPECT_FALSE(o.warmup.has_value());
  EXPECT_TRUE(o.graph);
  EXPECT_FALSE(o.no_shared_expert);
  EXPECT_EQ(o.layout, WeightLayout::gate_up_rows);
}

TEST(Args, RunFlagsInBothForms) {
  const Options o =
      parse_ok({"run",       "--preset", "mixtral-8x7b", "--tokens=64", "--backend",
                "reference", "--dtype",  "f16",          "--seed",      "18446744073709551615",
                "--reps",    "5",        "--warmup=0",   "--layout",    "separate",
                "--skew",    "1.2",      "--json",       "out.jsonl",   "--quiet"});
  EXPECT_EQ(o.command, Command::run);
  EXPECT_EQ(o.presets, std::vector<std::string>{"mixtral-8x7b"});
  EXPECT_EQ(o.tokens, std::vector<std::int64_t>{64});
  EXPECT_EQ(o.backend, BackendChoice::reference);
  EXPECT_EQ(o.dtype, DType::f16);
  EXPECT_EQ(o.seed, 18446744073709551615ull);
  EXPECT_EQ(o.reps, 5);
  EXPECT_EQ(o.warmup, 0);
  EXPECT_EQ(o.layout, WeightLayout::separate);
  EXPECT_EQ(o.skews, std::vector<double>{1.2});
  EXPECT_EQ(o.json_path, "out.jsonl");
  EXPECT_TRUE(o.quiet);
}

TEST(Args, GpuTimingFlags) {
  const Options o = parse_ok({"bench", "--backend", "cuda", "--no-graph", "--reps", "200"});
  EXPECT_EQ(o.backend, BackendChoice::cuda);
  EXPECT_FALSE(o.graph);
  EXPECT_EQ(o.reps, 200);
  EXPECT_FALSE(o.warmup.has_value());
  EXPECT_FALSE(parse_ok({"run", "--no-graph"}).graph);
  EXPECT_EQ(parse_error({"verify", "--no-graph"}),
            "unknown flag '--no-graph' (see fusedmoe verify --help)");
  EXPECT_NE(parse_error({"bench", "--no-graph=1"}).find("takes no value"), std::string::npos);
  EXPECT_NE(help_text(Command::bench).find("--no-graph"), std::string::npos);
  EXPECT_NE(help_text(Command::run).find("--no-graph"), std::string::npos);
}

TEST(Args, NoSharedExpert) {
  // PERF.md's grid: qwen2-57b-a14b and deepseek-v3 with their routed experts only.
  const Options o =
      parse_ok({"bench", "--preset", "qwen2-57b-a14b,deepseek-v3", "--no-shared-expert"});
  EXPECT_TRUE(o.no_shared_expert);
  EXPECT_EQ(o.presets, (std::vector<std::string>{"qwen2-57b-a14b", "deepseek-v3"}));
  EXPECT_TRUE(parse_ok({"verify", "--no-shared-expert"}).no_shared_expert);
  EXPECT_TRUE(parse_ok({"run", "--no-shared-expert"}).no_shared_expert);
  // An explicit layer without a shared expert accepts it; one with a shared expert contradicts it.
  EXPECT_TRUE(parse_ok({"run", "--hidden", "64", "--intermediate", "64", "--experts", "8",
                        "--top-k", "2", "--no-shared-expert"})
                  .no_shared_expert);
  EXPECT_NE(parse_error({"run", "--hidden", "64", "--intermediate", "64", "--experts", "8",
                         "--top-k", "2", "--shared-intermediate", "32", "--no-shared-expert"})
                .find("exclude each other"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--no-shared-expert=yes"}).find("takes no value"),
            std::string::npos);
  EXPECT_NE(help_text(Command::verify).find("--no-shared-expert"), std::string::npos);
}

TEST(Args, FlagsWithoutCommandAreRunFlags) {
  const Options o = parse_ok({"--tokens", "4"});
  EXPECT_EQ(o.command, Command::run);
  EXPECT_EQ(o.tokens, std::vector<std::int64_t>{4});
}

TEST(Args, ExplicitLayer) {
  const Options o = parse_ok({"verify", "--hidden", "256", "--intermediate", "192", "--experts",
                              "8", "--top-k", "2", "--shared-intermediate", "64", "--shared-gated",
                              "--routing", "sigmoid", "--activation", "geglu", "--dtype", "f32"});
  ASSERT_TRUE(o.custom.has_value());
  EXPECT_TRUE(o.presets.empty());
  const LayerConfig& c = *o.custom;
  EXPECT_EQ(c.hidden, 256);
  EXPECT_EQ(c.intermediate, 192);
  EXPECT_EQ(c.experts, 8);
  EXPECT_EQ(c.top_k, 2);
  EXPECT_EQ(c.shared.intermediate, 64);
  EXPECT_TRUE(c.shared.gated);
  EXPECT_EQ(c.routing.kind, RoutingKind::sigmoid_topk);
  EXPECT_EQ(c.activation, Activation::geglu);
  EXPECT_EQ(c.dtype, DType::f32);
}

TEST(Args, DeepSeekRouting) {
  const Options o = parse_ok({"bench", "--hidden", "64", "--intermediate", "32", "--experts", "64",
                              "--top-k", "8", "--routing", "deepseek"});
  ASSERT_TRUE(o.custom.has_value());
  EXPECT_EQ(o.custom->routing.kind, RoutingKind::sigmoid_topk);
  EXPECT_EQ(o.custom->routing.n_group, 8);
  EXPECT_EQ(o.custom->routing.topk_group, 4);
  EXPECT_FLOAT_EQ(o.custom->routing.scaling, 2.5f);
  EXPECT_TRUE(o.custom->routing.correction_bias);
}

TEST(Args, VerifyDefaults) {
  const Options o = parse_ok({"verify"});
  EXPECT_EQ(o.command, Command::verify);
  EXPECT_EQ(o.presets.size(), presets().size());
  EXPECT_EQ(o.tokens, (std::vector<std::int64_t>{1, 7, 64}));
}

TEST(Args, BenchDefaultsAndLists) {
  const Options d = parse_ok({"bench"});
  EXPECT_EQ(d.presets, std::vector<std::string>{"qwen3-30b-a3b"});
  EXPECT_EQ(d.tokens,
            std::vector<std::int64_t>(bench_token_counts().begin(), bench_token_counts().end()));
  EXPECT_FALSE(d.reference);

  const Options o = parse_ok({"bench", "--preset", "mixtral-8x7b,olmoe-1b-7b", "--tokens",
                              "1,16,64", "--skew", "0,1.2", "--reference-all"});
  EXPECT_EQ(o.presets, (std::vector<std::string>{"mixtral-8x7b", "olmoe-1b-7b"}));
  EXPECT_EQ(o.tokens, (std::vector<std::int64_t>{1, 16, 64}));
  EXPECT_EQ(o.skews, (std::vector<double>{0.0, 1.2}));
  EXPECT_TRUE(o.reference);
  EXPECT_TRUE(o.reference_all);

  EXPECT_EQ(parse_ok({"bench", "--preset", "all"}).presets.size(), presets().size());
}

TEST(Args, HelpAndVersion) {
  EXPECT_EQ(parse_ok({"--help"}).command, Command::help);
  EXPECT_EQ(parse_ok({"-h"}).command, Command::help);
  EXPECT_EQ(parse_ok({"--version"}).command, Command::version);
  for (const char* cmd : {"run", "verify", "bench", "presets"}) {
    const Options o = parse_ok({cmd, "--help"});
    EXPECT_TRUE(o.help) << cmd;
    EXPECT_EQ(command_name(o.command), cmd);
    EXPECT_FALSE(help_text(o.command).empty());
  }
  // --help wins over a flag that would not parse.
  EXPECT_TRUE(parse_ok({"run", "--tokns", "-h"}).help);
  const Options topic = parse_ok({"help", "bench"});
  EXPECT_TRUE(topic.help);
  EXPECT_EQ(topic.command, Command::bench);
}

TEST(Args, UnknownFlags) {
  EXPECT_EQ(parse_error({"run", "--tokns", "3"}),
            "unknown flag '--tokns' (see fusedmoe run --help)");
  EXPECT_EQ(parse_error({"--tokns"}), "unknown flag '--tokns' (see fusedmoe run --help)");
  // A flag of another command is unknown here.
  EXPECT_EQ(parse_error({"run", "--reference"}),
            "unknown flag '--reference' (see fusedmoe run --help)");
  EXPECT_EQ(parse_error({"verify", "--reps", "3"}),
            "unknown flag '--reps' (see fusedmoe verify --help)");
  EXPECT_NE(parse_error({"presets", "--tokens", "3"}).find("unknown flag '--tokens'"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "-t"}).find("unknown flag '-t'"), std::string::npos);
  EXPECT_NE(parse_error({"frobnicate"}).find("unknown command 'frobnicate'"), std::string::npos);
  EXPECT_NE(parse_error({"run", "stray"}).find("unexpected argument 'stray'"), std::string::npos);
  EXPECT_NE(parse_error({"--version", "x"}).find("unexpected argument"), std::string::npos);
}

// An error echoes an argument with its control bytes escaped, wherever the argument stands, so
// that the error stays one line (an argument may hold a newline: fusedmoe "$(cat file)").
TEST(Args, ErrorsEscapeControlCharacters) {
  EXPECT_EQ(parse_error({"frob\nnicate"}), "unknown command 'frob\\nnicate' (see fusedmoe --help)");
  EXPECT_EQ(parse_error({"--version", "a\tb"}),
            "unexpected argument 'a\\tb' after --version (see fusedmoe --help)");
  EXPECT_EQ(parse_error({"help", "r\run"}), "unknown help topic 'r\\run' (see fusedmoe --help)");
  EXPECT_EQ(parse_error({"presets", "x\n"}),
            "unexpected argument 'x\\n' (see fusedmoe presets --help)");
  EXPECT_EQ(parse_error({"presets", "-\x1b[2J"}),
            "unknown flag '-\\x1b[2J' (see fusedmoe presets --help)");
  EXPECT_EQ(parse_error({"run", "--tok\nens", "3"}),
            "unknown flag '--tok\\nens' (see fusedmoe run --help)");
  EXPECT_EQ(parse_error({"run", std::string_view("a\0b\x01\x7f", 5)}),
            "unexpected argument 'a\\x00b\\x01\\x7f' (see fusedmoe run --help)");
  EXPECT_NE(parse_error({"run", "--dtype", "bf\n16"}).find("bad value 'bf\\n16' for --dtype"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--tokens=1,\n2"}).find("got '1,\\n2'"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--seed", "1\n"}).find("bad value '1\\n' for --seed"),
            std::string::npos);
  EXPECT_NE(parse_error({"bench", "--preset", "mixtral-8x7b,a\r\nb"}).find("preset 'a\\r\\nb'"),
            std::string::npos);
  // Printable bytes are kept as they are: UTF-8, quotes and backslashes.
  EXPECT_EQ(parse_error({"run", "--preset", "caf\xc3\xa9 'x' \\n"}),
            "unknown preset 'caf\xc3\xa9 'x' \\n' (see fusedmoe presets)");
}

TEST(Args, MissingValues) {
  EXPECT_EQ(parse_error({"run", "--tokens"}),
            "missing value for '--tokens' (see fusedmoe run --help)");
  EXPECT_NE(parse_error({"bench", "--json"}).find("missing value for '--json'"), std::string::npos);
  EXPECT_NE(parse_error({"bench", "--quiet=yes"}).find("takes no value"), std::string::npos);
  EXPECT_NE(parse_error({"bench", "--tokens="}).find("bad value ''"), std::string::npos);
  EXPECT_NE(parse_error({"bench", "--preset="}).find("bad value ''"), std::string::npos);
}

TEST(Args, UnparsableNumbers) {
  for (const char* bad : {"abc", "12x", "1.5", "", " 3", "+3", "0x10", "1,,2", "1,"}) {
    const std::string e = parse_error({"bench", "--tokens", bad});
    EXPECT_NE(e.find("--tokens"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_NE(parse_error({"run", "--seed", "-1"}).find("bad value '-1' for --seed"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--skew", "nan"}).find("bad value 'nan' for --skew"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--skew", "inf"}).find("bad value"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--reps", "ten"}).find("expected an integer"), std::string::npos);
}

TEST(Args, NumbersOutOfRange) {
  EXPECT_EQ(parse_error({"run", "--tokens", "0"}),
            "--tokens 0 is out of range: expected 1..1048576");
  EXPECT_NE(parse_error({"run", "--tokens", "1048577"}).find("out of range"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--tokens", "-5"}).find("out of range"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--reps", "0"}).find("out of range"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--warmup", "-1"}).find("out of range"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--hidden", "99999999999999999999"}).find("out of range"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--seed", "99999999999999999999"}).find("out of range"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--skew", "-0.5"}).find("out of range"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--skew", "1e9"}).find("out of range"), std::string::npos);
  EXPECT_NE(parse_error(
                {"run", "--hidden", "64", "--intermediate", "64", "--experts", "8", "--top-k", "9"})
                .find("--top-k 9 exceeds --experts 8"),
            std::string::npos);
}

TEST(Args, BadChoices) {
  EXPECT_EQ(parse_error({"run", "--dtype", "bf8"}),
            "bad value 'bf8' for --dtype: expected bf16, f16 or f32");
  EXPECT_NE(parse_error({"run", "--backend", "tpu"}).find("--backend"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--layout", "rows"}).find("--layout"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--hidden", "8", "--intermediate", "8", "--experts", "2", "--top-k",
                         "1", "--routing", "argmax"})
                .find("--routing"),
            std::string::npos);
}

TEST(Args, PresetsAndLayers) {
  EXPECT_EQ(parse_error({"run", "--preset", "gpt-5"}),
            "unknown preset 'gpt-5' (see fusedmoe presets)");
  EXPECT_NE(parse_error({"bench", "--preset", "mixtral-8x7b,nope"}).find("unknown preset 'nope'"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--preset", "all"}).find("run takes one"), std::string::npos);
  EXPECT_NE(parse_error({"run", "--preset", "mixtral-8x7b,olmoe-1b-7b"}).find("one name"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--tokens", "1,2"}).find("takes one value"), std::string::npos);
  EXPECT_NE(
      parse_error({"run", "--preset", "mixtral-8x7b", "--hidden", "64"}).find("exclude each other"),
      std::string::npos);
  EXPECT_NE(parse_error({"run", "--hidden", "64", "--experts", "8"}).find("missing --intermediate"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--hidden", "64", "--intermediate", "64", "--experts", "8",
                         "--top-k", "2", "--shared-gated"})
                .find("--shared-intermediate"),
            std::string::npos);
  // The library's own validation, as a usage error: deepseek routing needs E divisible by 8.
  EXPECT_NE(parse_error({"run", "--hidden", "64", "--intermediate", "64", "--experts", "12",
                         "--top-k", "2", "--routing", "deepseek"})
                .find("invalid layer"),
            std::string::npos);
}

// Junk argument lists never crash the parser and always give options or a one-line error.
TEST(Args, RandomArgumentsAreHandled) {
  const std::vector<std::string> pieces = {"run",
                                           "verify",
                                           "bench",
                                           "presets",
                                           "--tokens",
                                           "--preset",
                                           "--skew",
                                           "--hidden",
                                           "--top-k",
                                           "--experts",
                                           "--intermediate",
                                           "1",
                                           "0",
                                           "-1",
                                           "1,2",
                                           "all",
                                           "qwen3-30b-a3b",
                                           "=",
                                           "--",
                                           "-",
                                           "",
                                           "--json=",
                                           "--quiet",
                                           "--reference",
                                           "1e400",
                                           "--routing",
                                           "deepseek",
                                           "--seed",
                                           "18446744073709551616",
                                           "--reps",
                                           "--no-graph",
                                           "--no-shared-expert",
                                           "--backend",
                                           "cuda",
                                           "--help"};
  std::mt19937 rng(12345);
  for (int iter = 0; iter < 5000; ++iter) {
    std::vector<std::string_view> args;
    const int n = static_cast<int>(rng() % 7);
    for (int i = 0; i < n; ++i) args.push_back(pieces[rng() % pieces.size()]);
    const ParseResult r = parse_args(std::span<const std::string_view>(args));
    EXPECT_NE(r.ok(), !r.error.empty());
    EXPECT_EQ(r.error.find('\n'), std::string::npos);
  }
}

}  // namespace
}  // namespace fusedmoe::cli

namespace fusedmoe::cli {
namespace {

TEST(ArgsCheckpoint, WeightsLayerAndArch) {
  const Options o = parse_ok({"run", "--weights", "/models/q", "--layer", "12"});
  EXPECT_EQ(o.weights_path, "/models/q");
  EXPECT_EQ(o.layer, 12);
  EXPECT_FALSE(o.arch.has_value());
  // The layer's config comes from config.json later: no default preset.
  EXPECT_TRUE(o.presets.empty());
  EXPECT_FALSE(o.custom.has_value());
  EXPECT_FALSE(o.dtype_given);

  const Options v = parse_ok({"verify", "--weights=/m", "--layer=0", "--arch", "qwen2_moe",
                              "--preset", "qwen1.5-moe-a2.7b", "--dtype", "f16"});
  EXPECT_EQ(v.arch, Architecture::qwen2_moe);
  EXPECT_EQ(v.presets, std::vector<std::string>{"qwen1.5-moe-a2.7b"});
  EXPECT_TRUE(v.dtype_given);
  EXPECT_EQ(
      parse_ok({"run", "--weights", "m", "--layer", "1", "--arch", "MixtralForCausalLM"}).arch,
      Architecture::mixtral);
}

TEST(ArgsCheckpoint, Errors) {
  EXPECT_NE(parse_error({"run", "--weights", "m"}).find("--weights needs --layer N"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--layer", "3"}).find("--layer needs --weights"),
            std::string::npos);
  EXPECT_NE(parse_error({"verify", "--arch", "olmoe"}).find("--arch needs --weights"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--weights", "m", "--layer", "-1"}).find("out of range"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--weights", "m", "--layer", "x"}).find("expected an integer"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--weights", "m", "--layer", "1", "--arch", "llama"})
                .find("bad value 'llama' for --arch"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--weights", "", "--layer", "1"}).find("expected a checkpoint"),
            std::string::npos);
  EXPECT_NE(parse_error({"run", "--weights", "m", "--layer", "1", "--skew", "1.2"})
                .find("checkpoint's router"),
            std::string::npos);
  EXPECT_NE(parse_error({"bench", "--weights", "m"}).find("unknown flag '--weights'"),
            std::string::npos);
}

TEST(ArgsCheckpoint, HelpNamesTheFlags) {
  for (Command c : {Command::run, Command::verify}) {
    const std::string h = help_text(c);
    for (const char* flag : {"--weights PATH", "--layer N", "--arch A"}) {
      EXPECT_NE(h.find(flag), std::string::npos) << command_name(c) << " lacks " << flag;
    }
  }
}

}  // namespace
}  // namespace fusedmoe::cli
