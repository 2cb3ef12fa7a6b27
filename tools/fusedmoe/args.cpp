#include "args.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <system_error>

#include "fusedmoe/presets.hpp"

namespace fusedmoe::cli {
namespace {

enum class Flag : std::uint8_t {
  preset,
  hidden,
  intermediate,
  experts,
  top_k,
  shared_intermediate,
  shared_gated,
  no_shared_expert,
  expert_bias,
  routing,
  activation,
  tokens,
  skew,
  backend,
  dtype,
  seed,
  reps,
  warmup,
  layout,
  no_graph,
  reference,
  reference_all,
  json,
  quiet,
  weights,
  layer,
  arch,
};

// Which commands accept a flag, as a bit set.
constexpr unsigned kRun = 1u << static_cast<unsigned>(Command::run);
constexpr unsigned kVerify = 1u << static_cast<unsigned>(Command::verify);
constexpr unsigned kBench = 1u << static_cast<unsigned>(Command::bench);
constexpr unsigned kLayerCommands = kRun | kVerify | kBench;

struct FlagSpec {
  std::string_view name;
  Flag flag;
  bool takes_value;
  unsigned commands;
};

constexpr std::array kFlags = {
    FlagSpec{"--preset", Flag::preset, true, kLayerCommands},
    FlagSpec{"--hidden", Flag::hidden, true, kLayerCommands},
    FlagSpec{"--intermediate", Flag::intermediate, true, kLayerCommands},
    FlagSpec{"--experts", Flag::experts, true, kLayerCommands},
    FlagSpec{"--top-k", Flag::top_k, true, kLayerCommands},
    FlagSpec{"--shared-intermediate", Flag::shared_intermediate, true, kLayerCommands},
    FlagSpec{"--shared-gated", Flag::shared_gated, false, kLayerCommands},
    FlagSpec{"--no-shared-expert", Flag::no_shared_expert, false, kLayerCommands},
    FlagSpec{"--expert-bias", Flag::expert_bias, false, kLayerCommands},
    FlagSpec{"--routing", Flag::routing, true, kLayerCommands},
    FlagSpec{"--activation", Flag::activation, true, kLayerCommands},
    FlagSpec{"--tokens", Flag::tokens, true, kLayerCommands},
    FlagSpec{"--skew", Flag::skew, true, kLayerCommands},
    FlagSpec{"--backend", Flag::backend, true, kLayerCommands},
    FlagSpec{"--dtype", Flag::dtype, true, kLayerCommands},
    FlagSpec{"--seed", Flag::seed, true, kLayerCommands},
    FlagSpec{"--reps", Flag::reps, true, kRun | kBench},
    FlagSpec{"--warmup", Flag::warmup, true, kRun | kBench},
    FlagSpec{"--layout", Flag::layout, true, kLayerCommands},
    FlagSpec{"--no-graph", Flag::no_graph, false, kRun | kBench},
    FlagSpec{"--reference", Flag::reference, false, kBench},
    FlagSpec{"--reference-all", Flag::reference_all, false, kBench},
    FlagSpec{"--json", Flag::json, true, kRun | kBench},
    FlagSpec{"--quiet", Flag::quiet, false, kRun | kBench},
    FlagSpec{"--weights", Flag::weights, true, kRun | kVerify},
    FlagSpec{"--layer", Flag::layer, true, kRun | kVerify},
    FlagSpec{"--arch", Flag::arch, true, kRun | kVerify},
};

template <class T>
struct Named {
  std::string_view name;
  T value;
};

constexpr std::array kCommands = {
    Named<Command>{"run", Command::run},     Named<Command>{"verify", Command::verify},
    Named<Command>{"bench", Command::bench}, Named<Command>{"presets", Command::presets},
    Named<Command>{"help", Command::help},
};

constexpr std::array kBackends = {
    Named<BackendChoice>{"best", BackendChoice::best},
    Named<BackendChoice>{"cpu", BackendChoice::cpu},
    Named<BackendChoice>{"reference", BackendChoice::reference},
    Named<BackendChoice>{"cuda", BackendChoice::cuda},
};

constexpr std::array kDTypes = {
    Named<DType>{"bf16", DType::bf16},
    Named<DType>{"f16", DType::f16},
    Named<DType>{"f32", DType::f32},
};

constexpr std::array kLayouts = {
    Named<WeightLayout>{"gate-up", WeightLayout::gate_up_rows},
    Named<WeightLayout>{"up-gate", WeightLayout::up_gate_rows},
    Named<WeightLayout>{"interleaved", WeightLayout::interleaved_cols},
    Named<WeightLayout>{"separate", WeightLayout::separate},
};

constexpr Routing make_routing(RoutingKind kind, bool renormalize, int n_group = 1,
                               int topk_group = 1, float scaling = 1.0f,
                               bool correction_bias = false) {
  Routing r;
  r.kind = kind;
  r.renormalize = renormalize;
  r.n_group = n_group;
  r.topk_group = topk_group;
  r.scaling = scaling;
  r.correction_bias = correction_bias;
  return r;
}

// The routing schemes of MODELS.md by the names the help text uses.
constexpr std::array kRoutings = {
    Named<Routing>{"softmax", make_routing(RoutingKind::softmax_topk, false)},
    Named<Routing>{"softmax-norm", make_routing(RoutingKind::softmax_topk, true)},
    Named<Routing>{"sigmoid", make_routing(RoutingKind::sigmoid_topk, true)},
    Named<Routing>{"deepseek", make_routing(RoutingKind::sigmoid_topk, true, 8, 4, 2.5f, true)},
    Named<Routing>{"topk-softmax", make_routing(RoutingKind::topk_softmax, false)},
    Named<Routing>{"precomputed", make_routing(RoutingKind::precomputed, false)},
};

constexpr std::array kActivations = {
    Named<Activation>{"swiglu", Activation::swiglu},
    Named<Activation>{"geglu", Activation::geglu},
    Named<Activation>{"swiglu-oss", Activation::swiglu_oss},
};

// "a, b or c" from a table's names.
template <class T, std::size_t N>
std::string choices(const std::array<Named<T>, N>& table) {
  std::string s;
  for (std::size_t i = 0; i < N; ++i) {
    if (i > 0) s += i + 1 == N ? " or " : ", ";
    s += table[i].name;
  }
  return s;
}

template <class T, std::size_t N>
std::optional<T> lookup(const std::array<Named<T>, N>& table, std::string_view name) {
  for (const auto& entry : table) {
    if (entry.name == name) return entry.value;
  }
  return std::nullopt;
}

std::vector<std::string_view> split_list(std::string_view text) {
  std::vector<std::string_view> items;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    items.push_back(text.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

// An argument as an error message echoes it: in single quotes, with control bytes escaped (\n, \r
// and \t by name, the other bytes below 0x20 and 0x7f as \xNN), so that the error stays one line
// and cannot move a terminal's cursor whatever the argument holds. Other bytes (UTF-8 included)
// and backslashes are kept as they are.
std::string quoted(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string q;
  q.reserve(s.size() + 2);
  q += '\'';
  for (const char ch : s) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte >= 0x20 && byte != 0x7f) {
      q += ch;
      continue;
    }
    q += '\\';
    switch (ch) {
      case '\n':
        q += 'n';
        break;
      case '\r':
        q += 'r';
        break;
      case '\t':
        q += 't';
        break;
      default:
        q += 'x';
        q += kHex[byte >> 4];
        q += kHex[byte & 0xf];
        break;
    }
  }
  q += '\'';
  return q;
}

// Parsers return an error message, empty on success.
std::string parse_int(std::string_view flag, std::string_view text, std::int64_t lo,
                      std::int64_t hi, std::int64_t* out) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || end != text.data() + text.size() ||
      (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    return "bad value " + quoted(text) + " for " + std::string(flag) + ": expected an integer";
  }
  if (ec == std::errc::result_out_of_range || v < lo || v > hi) {
    return std::string(flag) + " " + std::string(text) + " is out of range: expected " +
           std::to_string(lo) + ".." + std::to_string(hi);
  }
  *out = v;
  return {};
}

std::string parse_int(std::string_view flag, std::string_view text, int lo, int hi, int* out) {
  std::int64_t v = 0;
  std::string error = parse_int(flag, text, std::int64_t{lo}, std::int64_t{hi}, &v);
  if (error.empty()) *out = static_cast<int>(v);
  return error;
}

std::string parse_optional_int(std::string_view flag, std::string_view text, int lo, int hi,
                               std::optional<int>* out) {
  int v = 0;
  std::string error = parse_int(flag, text, lo, hi, &v);
  if (error.empty()) *out = v;
  return error;
}

std::string parse_u64(std::string_view flag, std::string_view text, std::uint64_t* out) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || end != text.data() + text.size()) {
    return "bad value " + quoted(text) + " for " + std::string(flag) +
           ": expected a non-negative integer";
  }
  if (ec != std::errc()) {
    return std::string(flag) + " " + std::string(text) + " is out of range: expected 0..2^64-1";
  }
  *out = v;
  return {};
}

std::string parse_double(std::string_view flag, std::string_view text, double lo, double hi,
                         double* out) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || end != text.data() + text.size() || ec != std::errc() || !std::isfinite(v)) {
    return "bad value " + quoted(text) + " for " + std::string(flag) + ": expected a number";
  }
  if (v < lo || v > hi) {
    char range[64];
    std::snprintf(range, sizeof(range), "%g..%g", lo, hi);
    return std::string(flag) + " " + std::string(text) + " is out of range: expected " + range;
  }
  *out = v;
  return {};
}

template <class T, std::size_t N>
std::string parse_choice(std::string_view flag, std::string_view text,
                         const std::array<Named<T>, N>& table, T* out) {
  const std::optional<T> v = lookup(table, text);
  if (!v) {
    return "bad value " + quoted(text) + " for " + std::string(flag) + ": expected " +
           choices(table);
  }
  *out = *v;
  return {};
}

// The explicit layer as the flags give it, before it is checked and turned into a LayerConfig.
struct LayerFlags {
  std::optional<std::int64_t> hidden, intermediate, experts, top_k;
  std::int64_t shared_intermediate = 0;
  bool shared_gated = false;
  bool expert_bias = false;
  Routing routing = kRoutings[1].value;  // softmax-norm: Mixtral / Qwen3 style
  Activation activation = Activation::swiglu;
  std::string first_flag;  // the first layer flag seen, for error messages
};

class Parser {
 public:
  Parser(Command command, std::span<const std::string_view> args) : command_(command), args_(args) {
    options_.command = command;
  }

  ParseResult parse() {
    for (std::size_t i = 0; i < args_.size(); ++i) {
      const std::string_view arg = args_[i];
      const std::size_t eq = arg.find('=');
      const bool has_inline_value = arg.rfind("--", 0) == 0 && eq != std::string_view::npos;
      const std::string_view name = has_inline_value ? arg.substr(0, eq) : arg;
      if (name.empty() || name[0] != '-') return fail("unexpected argument " + quoted(arg) + see());
      const FlagSpec* spec = find_flag(name);
      if (spec == nullptr) return fail("unknown flag " + quoted(name) + see());
      std::string_view value;
      if (spec->takes_value) {
        if (has_inline_value) {
          value = arg.substr(eq + 1);
        } else if (i + 1 < args_.size()) {
          value = args_[++i];
        } else {
          return fail("missing value for " + quoted(name) + see());
        }
      } else if (has_inline_value) {
        return fail("flag " + quoted(name) + " takes no value" + see());
      }
      if (std::string error = apply(*spec, value); !error.empty()) return fail(error);
    }
    if (std::string error = finish(); !error.empty()) return fail(error);
    return {std::move(options_), {}};
  }

 private:
  static ParseResult fail(std::string error) { return {std::nullopt, std::move(error)}; }

  std::string see() const {
    return " (see fusedmoe " + std::string(command_name(command_)) + " --help)";
  }

  const FlagSpec* find_flag(std::string_view name) const {
    const unsigned bit = 1u << static_cast<unsigned>(command_);
    for (const FlagSpec& f : kFlags) {
      if (f.name == name && (f.commands & bit) != 0) return &f;
    }
    return nullptr;
  }

  bool single_value_command() const { return command_ == Command::run; }

  std::string apply(const FlagSpec& spec, std::string_view value) {
    const std::string_view flag = spec.name;
    switch (spec.flag) {
      case Flag::preset:
        if (value.empty()) return "bad value '' for --preset: expected a preset name" + see();
        preset_text_ = std::string(value);
        return {};
      case Flag::hidden:
        return layer_int(flag, value, 1, kMaxHidden, &layer_.hidden);
      case Flag::intermediate:
        return layer_int(flag, value, 1, kMaxHidden, &layer_.intermediate);
      case Flag::experts:
        return layer_int(flag, value, 1, kMaxExperts, &layer_.experts);
      case Flag::top_k:
        return layer_int(flag, value, 1, kMaxExperts, &layer_.top_k);
      case Flag::shared_intermediate: {
        std::optional<std::int64_t> v;
        std::string error = layer_int(flag, value, 0, kMaxHidden, &v);
        if (v) layer_.shared_intermediate = *v;
        return error;
      }
      case Flag::shared_gated:
        note_layer_flag(flag);
        layer_.shared_gated = true;
        return {};
      case Flag::no_shared_expert:
        options_.no_shared_expert = true;
        return {};
      case Flag::expert_bias:
        note_layer_flag(flag);
        layer_.expert_bias = true;
        return {};
      case Flag::routing:
        note_layer_flag(flag);
        return parse_choice(flag, value, kRoutings, &layer_.routing);
      case Flag::activation:
        note_layer_flag(flag);
        return parse_choice(flag, value, kActivations, &layer_.activation);
      case Flag::tokens:
        return parse_tokens(flag, value);
      case Flag::skew:
        return parse_skews(flag, value);
      case Flag::backend:
        return parse_choice(flag, value, kBackends, &options_.backend);
      case Flag::dtype:
        options_.dtype_given = true;
        return parse_choice(flag, value, kDTypes, &options_.dtype);
      case Flag::seed:
        return parse_u64(flag, value, &options_.seed);
      case Flag::reps:
        return parse_optional_int(flag, value, 1, kMaxReps, &options_.reps);
      case Flag::warmup:
        return parse_optional_int(flag, value, 0, kMaxWarmup, &options_.warmup);
      case Flag::layout:
        return parse_choice(flag, value, kLayouts, &options_.layout);
      case Flag::no_graph:
        options_.graph = false;
        return {};
      case Flag::reference:
        options_.reference = true;
        return {};
      case Flag::reference_all:
        options_.reference = options_.reference_all = true;
        return {};
      case Flag::json:
        if (value.empty()) return "bad value '' for --json: expected a file name";
        options_.json_path = std::string(value);
        return {};
      case Flag::quiet:
        options_.quiet = true;
        return {};
      case Flag::weights:
        if (value.empty()) return "bad value '' for --weights: expected a checkpoint path";
        options_.weights_path = std::string(value);
        return {};
      case Flag::layer:
        return parse_int(flag, value, 0, kMaxLayer, &options_.layer);
      case Flag::arch:
        options_.arch = parse_architecture(value);
        if (!options_.arch) {
          return "bad value " + quoted(value) +
                 " for --arch: expected mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v3 or "
                 "gpt_oss";
        }
        return {};
    }
    return "internal error: unhandled flag " + std::string(flag);
  }

  void note_layer_flag(std::string_view flag) {
    if (layer_.first_flag.empty()) layer_.first_flag = std::string(flag);
  }

  std::string layer_int(std::string_view flag, std::string_view value, std::int64_t lo,
                        std::int64_t hi, std::optional<std::int64_t>* out) {
    note_layer_flag(flag);
    std::int64_t v = 0;
    std::string error = parse_int(flag, value, lo, hi, &v);
    if (error.empty()) *out = v;
    return error;
  }

  std::string parse_tokens(std::string_view flag, std::string_view value) {
    const auto items = split_list(value);
    if (single_value_command() && items.size() > 1) {
      return std::string(flag) + " takes one value here, got " + quoted(value) + see();
    }
    options_.tokens.clear();
    for (std::string_view item : items) {
      std::int64_t t = 0;
      if (std::string error = parse_int(flag, item, 1, kMaxTokens, &t); !error.empty()) {
        return error;
      }
      options_.tokens.push_back(t);
    }
    return {};
  }

  std::string parse_skews(std::string_view flag, std::string_view value) {
    const auto items = split_list(value);
    if (single_value_command() && items.size() > 1) {
      return std::string(flag) + " takes one value here, got " + quoted(value) + see();
    }
    options_.skews.clear();
    for (std::string_view item : items) {
      double s = 0;
      if (std::string error = parse_double(flag, item, 0.0, kMaxSkew, &s); !error.empty()) {
        return error;
      }
      options_.skews.push_back(s);
    }
    return {};
  }

  std::string resolve_presets() {
    if (preset_text_.empty()) {
      if (command_ == Command::verify)
        preset_text_ = "all";
      else
        preset_text_ = "qwen3-30b-a3b";
    }
    if (preset_text_ == "all") {
      if (single_value_command()) return "--preset all is for verify and bench; run takes one";
      for (const Preset& p : presets()) options_.presets.emplace_back(p.name);
      return {};
    }
    const auto items = split_list(preset_text_);
    if (single_value_command() && items.size() > 1) {
      return "--preset takes one name here, got " + quoted(preset_text_) + see();
    }
    for (std::string_view name : items) {
      if (find_preset(name) == nullptr) {
        return "unknown preset " + quoted(name) + " (see fusedmoe presets)";
      }
      options_.presets.emplace_back(name);
    }
    return {};
  }

  std::string resolve_custom_layer() {
    const LayerFlags& f = layer_;
    if (!preset_text_.empty()) {
      return "--preset and " + f.first_flag + " exclude each other: give a preset or explicit " +
             "sizes" + see();
    }
    std::string missing;
    const auto need = [&](const std::optional<std::int64_t>& v, std::string_view flag) {
      if (!v) missing += (missing.empty() ? "" : ", ") + std::string(flag);
    };
    need(f.hidden, "--hidden");
    need(f.intermediate, "--intermediate");
    need(f.experts, "--experts");
    need(f.top_k, "--top-k");
    if (!missing.empty()) {
      return "an explicit layer needs --hidden, --intermediate, --experts and --top-k; missing " +
             missing + see();
    }
    if (*f.top_k > *f.experts) {
      return "--top-k " + std::to_string(*f.top_k) + " exceeds --experts " +
             std::to_string(*f.experts);
    }
    if (f.shared_gated && f.shared_intermediate == 0) {
      return "--shared-gated needs --shared-intermediate N (N > 0)";
    }
    if (options_.no_shared_expert && f.shared_intermediate > 0) {
      return "--no-shared-expert and --shared-intermediate exclude each other" + see();
    }
    LayerConfig c;
    c.hidden = *f.hidden;
    c.intermediate = *f.intermediate;
    c.experts = *f.experts;
    c.top_k = *f.top_k;
    c.routing = f.routing;
    c.activation = f.activation;
    c.expert_bias = f.expert_bias;
    c.shared = {f.shared_intermediate, f.shared_gated};
    c.dtype = options_.dtype;
    // The library's own check, so that a layer it would refuse is a usage error here.
    if (const Status s = validate(c); !s.ok()) return "invalid layer: " + s.to_string();
    options_.custom = c;
    return {};
  }

  // --weights, --layer and --arch go together; the checkpoint's router replaces --skew.
  std::string check_checkpoint_flags() {
    const Options& o = options_;
    if (o.weights_path.empty()) {
      if (o.layer >= 0 || o.arch) {
        return std::string(o.layer >= 0 ? "--layer" : "--arch") + " needs --weights PATH" + see();
      }
      return {};
    }
    if (o.layer < 0) return "--weights needs --layer N (the layer to load)" + see();
    for (double skew : o.skews) {
      if (skew > 0)
        return "--skew replaces the router; with --weights the checkpoint's router runs";
    }
    return {};
  }

  std::string finish() {
    if (std::string error = check_checkpoint_flags(); !error.empty()) return error;
    // With --weights and neither a preset nor sizes, the layer comes from config.json later.
    const bool from_checkpoint = !options_.weights_path.empty() && preset_text_.empty();
    if (std::string error = !layer_.first_flag.empty() ? resolve_custom_layer()
                            : from_checkpoint          ? std::string()
                                                       : resolve_presets();
        !error.empty()) {
      return error;
    }
    if (options_.tokens.empty()) {
      if (command_ == Command::run)
        options_.tokens = {16};
      else if (command_ == Command::verify)
        options_.tokens = {1, 7, 64};
      else
        options_.tokens.assign(bench_token_counts().begin(), bench_token_counts().end());
    }
    if (options_.skews.empty()) options_.skews = {0.0};
    return {};
  }

  Command command_;
  std::span<const std::string_view> args_;
  Options options_;
  LayerFlags layer_;
  std::string preset_text_;
};

bool is_help(std::string_view arg) { return arg == "--help" || arg == "-h"; }

}  // namespace

std::string_view command_name(Command command) {
  switch (command) {
    case Command::run:
      return "run";
    case Command::verify:
      return "verify";
    case Command::bench:
      return "bench";
    case Command::presets:
      return "presets";
    case Command::help:
      return "help";
    case Command::version:
      return "version";
  }
  return "?";
}

ParseResult parse_args(std::span<const std::string_view> args) {
  if (args.empty()) return Parser(Command::run, args).parse();
  const std::string_view first = args[0];
  if (is_help(first) || first == "--version") {
    if (args.size() > 1) {
      return {std::nullopt, "unexpected argument " + quoted(args[1]) + " after " +
                                std::string(first) + " (see fusedmoe --help)"};
    }
    Options o;
    o.command = is_help(first) ? Command::help : Command::version;
    return {o, {}};
  }
  // Flags without a command are flags of `run`, the default command.
  Command command = Command::run;
  std::span<const std::string_view> rest = args;
  if (first.empty() || first[0] != '-') {
    const std::optional<Command> named = lookup(kCommands, first);
    if (!named) {
      return {std::nullopt, "unknown command " + quoted(first) + " (see fusedmoe --help)"};
    }
    command = *named;
    rest = args.subspan(1);
  }
  if (command == Command::help) {
    // `fusedmoe help [COMMAND]`
    Options o;
    o.command = Command::help;
    o.help = true;
    if (rest.empty()) return {o, {}};
    const std::optional<Command> topic = lookup(kCommands, rest[0]);
    if (!topic || rest.size() > 1) {
      return {std::nullopt, "unknown help topic " + quoted(rest[0]) + " (see fusedmoe --help)"};
    }
    o.command = *topic;
    return {o, {}};
  }
  // --help wins over everything else on the line, including flags that would not parse.
  for (std::string_view arg : rest) {
    if (is_help(arg)) {
      Options o;
      o.command = command;
      o.help = true;
      return {o, {}};
    }
  }
  if (command == Command::presets) {
    if (!rest.empty()) {
      const bool flag = !rest[0].empty() && rest[0][0] == '-';
      return {std::nullopt, std::string(flag ? "unknown flag " : "unexpected argument ") +
                                quoted(rest[0]) + " (see fusedmoe presets --help)"};
    }
    Options o;
    o.command = Command::presets;
    return {o, {}};
  }
  return Parser(command, rest).parse();
}

ParseResult parse_args(int argc, const char* const* argv) {
  std::vector<std::string_view> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parse_args(std::span<const std::string_view>(args));
}

namespace {

constexpr std::string_view kLayerHelp = R"(Layer (a preset, or explicit sizes):
  --preset NAME            a model preset (fusedmoe presets lists them)
  --hidden H --intermediate I --experts E --top-k K
                           an explicit layer instead of a preset; all four are needed
  --shared-intermediate N  add a shared expert of intermediate size N
  --shared-gated           gate the shared expert by sigmoid(x . g) (Qwen2-MoE)
  --no-shared-expert       drop the preset's shared expert: routed experts only, as in
                           PERF.md's grid (qwen2-57b-a14b, deepseek-v3)
  --routing R              softmax | softmax-norm (default) | sigmoid | deepseek (sigmoid,
                           8 groups, 4 kept, correction bias, x2.5) | topk-softmax | precomputed
  --activation A           swiglu (default) | geglu | swiglu-oss (gpt-oss clamped SwiGLU)
  --expert-bias            the expert GEMMs add biases (gpt-oss)
Inputs:
  --dtype D                bf16 (default) | f16 | f32: x, out and expert weights
  --layout L               how the random weights are stored before packing: gate-up (default,
                           vLLM/HF) | up-gate (FlashInfer) | interleaved (gpt-oss) | separate
  --seed N                 seed of the random weights, inputs and routing (default 1)
  --skew S                 S > 0: Zipf-skewed precomputed routing with exponent S instead of the
                           layer's router; 0 (default) keeps the router
  --backend B              best (default: cuda if present, else cpu) | cpu | reference | cuda;
                           cuda stages inputs and outputs in GPU memory (packing reads the host
                           weights)
)";

// run and verify: a checkpoint's layer instead of random weights.
constexpr std::string_view kCheckpointHelp = R"(Checkpoint (instead of random weights):
  --weights PATH           a Hugging Face safetensors checkpoint: a folder with model.safetensors
                           or model.safetensors.index.json, such an index, or one .safetensors
                           file; only the one layer's tensors are read
  --layer N                the layer to load (needed with --weights)
  --arch A                 mixtral | qwen2_moe | qwen3_moe | olmoe | deepseek_v3 | gpt_oss: the
                           tensor names (default: config.json's model_type, else the preset's)
                           The layer's config comes from config.json next to the checkpoint, or
                           from --preset / explicit sizes when given; its dtype is the stored
                           weights' unless --dtype says otherwise (a mismatch is an error).
)";

// What run and bench share about timing.
constexpr std::string_view kTimingHelp = R"(Timing:
  --reps N                 timed repetitions (default 20 on the CPU, 100 on the GPU)
  --warmup N               untimed repetitions first (default 3 on the CPU, 10 on the GPU)
  --no-graph               GPU: launch every T on the stream; by default T <= 64 is captured in a
                           CUDA graph and timed as replays (how decoders run it)
)";

}  // namespace

std::string help_text(Command command) {
  switch (command) {
    case Command::help:
    case Command::version:
      return R"(fusedmoe: run, check and time Mixture-of-Experts layer forward passes

usage: fusedmoe [COMMAND] [FLAGS]

Commands:
  run        time one layer on random weights and inputs (the default command:
             `fusedmoe` alone runs qwen3-30b-a3b at T=16 on the best backend)
  verify     compare a backend's output and routing with the reference backend
  bench      sweep presets x token counts x skews; table on stdout, JSON Lines with --json
  presets    list the model presets
  help CMD   the flags of one command (also: fusedmoe CMD --help)

  --help, -h     this text
  --version      version and commit
)";
    case Command::run:
      return "usage: fusedmoe run [FLAGS]\n\n"
             "Times one MoE layer forward on random weights and Gaussian inputs, rotating\n"
             "several input batches so the experts hit change from call to call, and compares\n"
             "the median with the floor (measured in this run: on the CPU read bandwidth and FMA\n"
             "rate, on the GPU read bandwidth and cuBLAS bf16 rate; GPU times are CUDA "
             "events).\n\n" +
             std::string(kLayerHelp) + std::string(kCheckpointHelp) + std::string(kTimingHelp) +
             R"(Run:
  --tokens T               tokens per batch (default 16)
  --json FILE              append the result to FILE as one JSON line
  --quiet                  no progress on stderr
)";
    case Command::verify:
      return "usage: fusedmoe verify [FLAGS]\n\n"
             "For each preset and token count: the same random weights packed for the backend\n"
             "under test and for the reference; compares outputs with the contract's tolerance\n"
             "for the dtype, and routing exactly per token (near-ties reported, not failed).\n"
             "Layers too large for this machine's memory run with fewer routed experts (said so\n"
             "in the output). Exit status 1 if any case fails.\n\n" +
             std::string(kLayerHelp) + std::string(kCheckpointHelp) +
             R"(Verify:
  --preset NAME,...|all    presets to check (default all)
  --tokens T,...           token counts (default 1,7,64)
)";
    case Command::bench:
      return "usage: fusedmoe bench [FLAGS]\n\n"
             "Times every (preset, T, skew) and reports µs, GB/s, GFLOP/s and % of the floor.\n"
             "The ceilings are measured once at the start: read bandwidth and FMA rate on the\n"
             "CPU, read bandwidth and cuBLAS bf16 rate on the GPU. Small layers are packed\n"
             "several times and cycled so the weights are not cache-resident.\n\n" +
             std::string(kLayerHelp) + std::string(kTimingHelp) +
             R"(Bench:
  --preset NAME,...|all    presets (default qwen3-30b-a3b)
  --tokens T,...           token counts (default 1,16,64,256,1024,4096)
  --skew S,...             skews (default 0)
  --reference              also time the reference backend on the same inputs (at most 3
                           repetitions, and only for T <= 256)
  --reference-all          ... at every T
  --json FILE              append one JSON line per result to FILE: preset, tokens, skew, impl,
                           us_median, floor_us, bound, gpu, commit first, then the details
  --quiet                  no progress bar on stderr
)";
    case Command::presets:
      return R"(usage: fusedmoe presets

Lists the model presets: sizes, shared expert, routing, activation and bf16 weight size.
)";
  }
  return {};
}

}  // namespace fusedmoe::cli
