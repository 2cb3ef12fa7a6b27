#include "fusedmoe/checkpoint.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <new>
#include <set>
#include <utility>

#include "core/json.hpp"
#include "core/safetensors.hpp"

namespace fusedmoe {

namespace {

using core::JsonValue;
using core::quoted;

// config.json and index files are small; anything larger is not one.
constexpr std::uint64_t kMaxJsonFile = std::uint64_t{64} << 20;

Status io_error(std::string message) { return {StatusCode::io_error, std::move(message)}; }

std::string errno_text() { return std::strerror(errno); }

// ---- files -------------------------------------------------------------------------------------

// A read-only file descriptor, closed on destruction.
class File {
 public:
  static Result<File> open(const std::string& path) {
    File f;
    f.path_ = path;
    f.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f.fd_ < 0) return io_error("cannot open " + quoted(path) + ": " + errno_text());
    struct stat st {};
    if (::fstat(f.fd_, &st) != 0)
      return io_error("cannot stat " + quoted(path) + ": " + errno_text());
    if (!S_ISREG(st.st_mode)) return io_error(quoted(path) + " is not a regular file");
    f.size_ = static_cast<std::uint64_t>(st.st_size);
    return f;
  }
  File() = default;
  File(File&& o) noexcept
      : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)), size_(o.size_) {}
  File& operator=(File&& o) noexcept {
    std::swap(path_, o.path_);
    std::swap(fd_, o.fd_);
    std::swap(size_, o.size_);
    return *this;
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }

  std::uint64_t size() const { return size_; }

  // Exactly `n` bytes at `offset`; a file that ends first (truncated since it was opened) is an
  // error, not a short read.
  Status read(std::uint64_t offset, void* dst, std::uint64_t n) const {
    auto* out = static_cast<std::byte*>(dst);
    while (n > 0) {
      const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(n, 1u << 30));
      const ssize_t got = ::pread(fd_, out, chunk, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return io_error("cannot read " + quoted(path_) + ": " + errno_text());
      if (got == 0) {
        return io_error(quoted(path_) + " ends at byte " + std::to_string(offset) +
                        ", before the data its header describes (truncated?)");
      }
      out += got;
      offset += static_cast<std::uint64_t>(got);
      n -= static_cast<std::uint64_t>(got);
    }
    return {};
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string parent_directory(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string join(const std::string& dir, std::string_view name) {
  if (!dir.empty() && dir.back() == '/') return dir + std::string(name);
  return dir + "/" + std::string(name);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

Result<std::string> read_text_file(const std::string& path) {
  Result<File> f = File::open(path);
  if (!f.ok()) return f.status();
  if (f->size() > kMaxJsonFile) {
    return io_error(quoted(path) + " is " + std::to_string(f->size()) +
                    " bytes, more than a JSON file fusedmoe reads");
  }
  std::string text(static_cast<std::size_t>(f->size()), '\0');
  if (Status s = f->read(0, text.data(), f->size()); !s.ok()) return s;
  return text;
}

// The header of one shard, as entries of the checkpoint's tensor list.
Status read_shard(const std::string& path, std::vector<CheckpointTensor>& out) {
  Result<File> f = File::open(path);
  if (!f.ok()) return f.status();
  std::array<std::byte, 8> first8{};
  if (f->size() >= 8) {
    if (Status s = f->read(0, first8.data(), 8); !s.ok()) return s;
  }
  Result<std::uint64_t> n = core::safetensors_header_length(first8, f->size());
  if (!n.ok()) return io_error(path + ": " + n.status().message());
  std::vector<std::byte> head(static_cast<std::size_t>(8 + n.value()));
  if (Status s = f->read(0, head.data(), head.size()); !s.ok()) return s;
  Result<core::SafetensorsHeader> h = core::parse_safetensors_header(head, f->size());
  if (!h.ok()) return io_error(path + ": " + h.status().message());
  for (core::SafetensorsEntry& e : h->tensors) {
    CheckpointTensor t;
    t.name = std::move(e.name);
    t.dtype = std::move(e.dtype);
    t.shape = std::move(e.shape);
    t.file = path;
    t.offset = h->data_start + e.begin;
    t.bytes = e.end - e.begin;
    out.push_back(std::move(t));
  }
  return {};
}

std::optional<DType> layer_dtype_of(std::string_view safetensors_dtype) {
  if (safetensors_dtype == "BF16") return DType::bf16;
  if (safetensors_dtype == "F16") return DType::f16;
  if (safetensors_dtype == "F32") return DType::f32;
  return std::nullopt;
}

std::string shape_text(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace

// ---- architectures -----------------------------------------------------------------------------

namespace {

struct ArchitectureInfo {
  Architecture architecture;
  std::string_view model_type;
  std::string_view hf_class;  // its entry in config.json's "architectures"
};

constexpr std::array kArchitectures = {
    ArchitectureInfo{Architecture::mixtral, "mixtral", "MixtralForCausalLM"},
    ArchitectureInfo{Architecture::qwen2_moe, "qwen2_moe", "Qwen2MoeForCausalLM"},
    ArchitectureInfo{Architecture::qwen3_moe, "qwen3_moe", "Qwen3MoeForCausalLM"},
    ArchitectureInfo{Architecture::olmoe, "olmoe", "OlmoeForCausalLM"},
    ArchitectureInfo{Architecture::deepseek_v3, "deepseek_v3", "DeepseekV3ForCausalLM"},
    ArchitectureInfo{Architecture::gpt_oss, "gpt_oss", "GptOssForCausalLM"},
};

}  // namespace

std::string_view to_string(Architecture architecture) {
  for (const ArchitectureInfo& a : kArchitectures) {
    if (a.architecture == architecture) return a.model_type;
  }
  return "?";
}

std::optional<Architecture> parse_architecture(std::string_view name) {
  for (const ArchitectureInfo& a : kArchitectures) {
    if (a.model_type == name || a.hf_class == name) return a.architecture;
  }
  return std::nullopt;
}

std::optional<Architecture> preset_architecture(std::string_view preset) {
  constexpr std::array<std::pair<std::string_view, Architecture>, 6> kPrefixes = {{
      {"mixtral-", Architecture::mixtral},
      {"qwen1.5-moe-", Architecture::qwen2_moe},
      {"qwen2-", Architecture::qwen2_moe},
      {"qwen3-", Architecture::qwen3_moe},
      {"olmoe-", Architecture::olmoe},
      {"deepseek-v3", Architecture::deepseek_v3},
  }};
  if (preset.rfind("gpt-oss-", 0) == 0) return Architecture::gpt_oss;
  for (const auto& [prefix, arch] : kPrefixes) {
    if (preset.rfind(prefix, 0) == 0) return arch;
  }
  return std::nullopt;
}

// ---- the checkpoint ----------------------------------------------------------------------------

Result<Checkpoint> Checkpoint::open(const std::string& path) {
  if (path.empty()) return io_error("no checkpoint path given");
  std::string index_path, single_path;
  Checkpoint c;
  if (is_directory(path)) {
    c.directory_ = path;
    if (exists(join(path, "model.safetensors.index.json"))) {
      index_path = join(path, "model.safetensors.index.json");
    } else if (exists(join(path, "model.safetensors"))) {
      single_path = join(path, "model.safetensors");
    } else {
      return io_error(quoted(path) +
                      " has neither model.safetensors nor model.safetensors.index.json");
    }
  } else {
    if (!exists(path)) return io_error(quoted(path) + " does not exist");
    c.directory_ = parent_directory(path);
    (ends_with(path, ".json") ? index_path : single_path) = path;
  }

  if (!single_path.empty()) {
    if (Status s = read_shard(single_path, c.tensors_); !s.ok()) return s;
  } else {
    Result<std::string> text = read_text_file(index_path);
    if (!text.ok()) return text.status();
    auto map = core::parse_safetensors_index(text.value());
    if (!map.ok()) return io_error(index_path + ": " + map.status().message());
    // Each shard's header once, in name order.
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& [name, shard] : map.value()) by_shard[shard].push_back(name);
    for (auto& [shard, names] : by_shard) {
      std::vector<CheckpointTensor> held;
      if (Status s = read_shard(join(c.directory_, shard), held); !s.ok()) return s;
      std::sort(names.begin(), names.end());
      for (const CheckpointTensor& t : held) {
        if (std::binary_search(names.begin(), names.end(), t.name)) c.tensors_.push_back(t);
      }
      for (const std::string& name : names) {
        const bool found = std::any_of(held.begin(), held.end(),
                                       [&](const CheckpointTensor& t) { return t.name == name; });
        if (!found) {
          return io_error(index_path + " puts tensor " + quoted(name) + " in " + quoted(shard) +
                          ", whose header does not have it");
        }
      }
    }
  }
  std::sort(c.tensors_.begin(), c.tensors_.end(),
            [](const CheckpointTensor& a, const CheckpointTensor& b) { return a.name < b.name; });
  for (std::size_t i = 1; i < c.tensors_.size(); ++i) {
    if (c.tensors_[i].name == c.tensors_[i - 1].name) {
      return io_error("tensor " + quoted(c.tensors_[i].name) + " is in " +
                      quoted(c.tensors_[i - 1].file) + " and " + quoted(c.tensors_[i].file));
    }
  }

  const std::string config_path = join(c.directory_, "config.json");
  if (exists(config_path)) {
    Result<std::string> text = read_text_file(config_path);
    if (!text.ok()) return text.status();
    c.config_json_ = std::move(text).value();
  }
  return c;
}

const CheckpointTensor* Checkpoint::find(std::string_view name) const {
  const auto it =
      std::lower_bound(tensors_.begin(), tensors_.end(), name,
                       [](const CheckpointTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

// ---- config.json -------------------------------------------------------------------------------

namespace {

// config.json's keys, read with the defaults of the model's transformers config class.
class ConfigReader {
 public:
  explicit ConfigReader(const JsonValue& root) : root_(root) {}

  // The first key present among `keys`, which must be a positive integer.
  Result<std::int64_t> size(std::initializer_list<std::string_view> keys) const {
    for (std::string_view key : keys) {
      const JsonValue* v = root_.find(key);
      if (v == nullptr || v->is_null()) continue;
      if (!v->is_number() || !v->is_integer || v->integer <= 0) {
        return invalid("config.json: " + std::string(key) + " must be a positive integer");
      }
      return v->integer;
    }
    std::string names;
    for (std::string_view key : keys) names += (names.empty() ? "" : " or ") + std::string(key);
    return invalid("config.json has no " + names);
  }

  Result<std::int64_t> integer(std::string_view key, std::int64_t fallback) const {
    const JsonValue* v = root_.find(key);
    if (v == nullptr || v->is_null()) return fallback;
    if (!v->is_number() || !v->is_integer || v->integer < 0 || v->integer > (1 << 30)) {
      return invalid("config.json: " + std::string(key) + " must be a non-negative integer");
    }
    return v->integer;
  }

  Result<bool> boolean(std::string_view key, bool fallback) const {
    const JsonValue* v = root_.find(key);
    if (v == nullptr || v->is_null()) return fallback;
    if (!v->is_bool())
      return invalid("config.json: " + std::string(key) + " must be true or false");
    return v->boolean;
  }

  Result<double> number(std::string_view key, double fallback) const {
    const JsonValue* v = root_.find(key);
    if (v == nullptr || v->is_null()) return fallback;
    if (!v->is_number() || !std::isfinite(v->number)) {
      return invalid("config.json: " + std::string(key) + " must be a finite number");
    }
    return v->number;
  }

  Result<std::vector<int>> int_list(std::string_view key) const {
    const JsonValue* v = root_.find(key);
    std::vector<int> out;
    if (v == nullptr || v->is_null()) return out;
    if (!v->is_array()) return invalid("config.json: " + std::string(key) + " must be a list");
    for (const JsonValue& item : v->array) {
      if (!item.is_number() || !item.is_integer || item.integer < 0 || item.integer > (1 << 30)) {
        return invalid("config.json: " + std::string(key) + " must list layer numbers");
      }
      out.push_back(static_cast<int>(item.integer));
    }
    return out;
  }

  std::string string(std::string_view key) const {
    const JsonValue* v = root_.find(key);
    return v != nullptr && v->is_string() ? v->string : std::string();
  }

  static Status invalid(std::string message) {
    return {StatusCode::invalid_argument, std::move(message)};
  }

 private:
  const JsonValue& root_;
};

// Unwraps a Result<T> into `var` or returns its status from the enclosing function.
#define FUSEDMOE_ASSIGN_OR_RETURN(var, expr)            \
  auto var##_result = (expr);                           \
  if (!var##_result.ok()) return var##_result.status(); \
  auto var = std::move(var##_result).value()

std::optional<Architecture> architecture_of(const JsonValue& root) {
  if (const JsonValue* t = root.find("model_type"); t != nullptr && t->is_string()) {
    if (auto a = parse_architecture(t->string)) return a;
  }
  if (const JsonValue* list = root.find("architectures"); list != nullptr && list->is_array()) {
    for (const JsonValue& name : list->array) {
      if (!name.is_string()) continue;
      if (auto a = parse_architecture(name.string)) return a;
    }
  }
  return std::nullopt;
}

}  // namespace

Result<ModelConfig> parse_model_config(std::string_view config_json,
                                       std::optional<Architecture> architecture) {
  Result<JsonValue> parsed = core::parse_json(config_json);
  if (!parsed.ok()) return io_error("config.json: " + parsed.status().message());
  const JsonValue& root = parsed.value();
  if (!root.is_object()) return io_error("config.json: not a JSON object");
  // Multimodal configs keep the language model's settings in text_config.
  const JsonValue* text = root.find("text_config");
  const JsonValue& cfg = text != nullptr && text->is_object() ? *text : root;
  if (!architecture) architecture = architecture_of(cfg);
  if (!architecture) architecture = architecture_of(root);
  if (!architecture) {
    return ConfigReader::invalid(
        "config.json: model_type " + quoted(ConfigReader(root).string("model_type")) +
        " is not an MoE architecture fusedmoe knows (mixtral, qwen2_moe, qwen3_moe, olmoe, "
        "deepseek_v3, gpt_oss)");
  }
  const ConfigReader r(cfg);
  ModelConfig m;
  m.architecture = *architecture;
  LayerConfig& c = m.layer;
  FUSEDMOE_ASSIGN_OR_RETURN(hidden, r.size({"hidden_size"}));
  FUSEDMOE_ASSIGN_OR_RETURN(top_k, r.size({"num_experts_per_tok", "experts_per_token"}));
  FUSEDMOE_ASSIGN_OR_RETURN(layers, r.integer("num_hidden_layers", 0));
  c.hidden = hidden;
  c.top_k = top_k;
  m.num_layers = layers;
  c.routing.kind = RoutingKind::softmax_topk;
  std::vector<int> dense;

  switch (*architecture) {
    case Architecture::mixtral: {
      FUSEDMOE_ASSIGN_OR_RETURN(inter, r.size({"intermediate_size"}));
      FUSEDMOE_ASSIGN_OR_RETURN(experts, r.size({"num_local_experts"}));
      c.intermediate = inter;
      c.experts = experts;
      c.routing.renormalize = true;  // Mixtral's softmax over the top-k logits
      break;
    }
    case Architecture::qwen2_moe:
    case Architecture::qwen3_moe: {
      const bool qwen2 = *architecture == Architecture::qwen2_moe;
      FUSEDMOE_ASSIGN_OR_RETURN(inter, r.size({"moe_intermediate_size"}));
      FUSEDMOE_ASSIGN_OR_RETURN(experts, r.size({"num_experts"}));
      FUSEDMOE_ASSIGN_OR_RETURN(norm, r.boolean("norm_topk_prob", false));
      FUSEDMOE_ASSIGN_OR_RETURN(step, r.integer("decoder_sparse_step", 1));
      FUSEDMOE_ASSIGN_OR_RETURN(mlp_only, r.int_list("mlp_only_layers"));
      c.intermediate = inter;
      c.experts = experts;
      c.routing.renormalize = norm;
      if (qwen2) {
        FUSEDMOE_ASSIGN_OR_RETURN(shared, r.integer("shared_expert_intermediate_size", 0));
        c.shared = {shared, shared > 0};
      }
      // transformers: layer i is sparse unless listed in mlp_only_layers, and when
      // (i + 1) % decoder_sparse_step == 0.
      for (std::int64_t i = 0; i < layers; ++i) {
        const bool listed = std::find(mlp_only.begin(), mlp_only.end(), i) != mlp_only.end();
        if (listed || step == 0 || (i + 1) % step != 0) dense.push_back(static_cast<int>(i));
      }
      m.dense_reason = "decoder_sparse_step = " + std::to_string(step) + ", mlp_only_layers";
      break;
    }
    case Architecture::olmoe: {
      FUSEDMOE_ASSIGN_OR_RETURN(inter, r.size({"intermediate_size"}));
      FUSEDMOE_ASSIGN_OR_RETURN(experts, r.size({"num_experts"}));
      FUSEDMOE_ASSIGN_OR_RETURN(norm, r.boolean("norm_topk_prob", false));
      c.intermediate = inter;
      c.experts = experts;
      c.routing.renormalize = norm;
      break;
    }
    case Architecture::deepseek_v3: {
      FUSEDMOE_ASSIGN_OR_RETURN(inter, r.size({"moe_intermediate_size"}));
      FUSEDMOE_ASSIGN_OR_RETURN(experts, r.size({"n_routed_experts"}));
      FUSEDMOE_ASSIGN_OR_RETURN(shared, r.integer("n_shared_experts", 1));
      FUSEDMOE_ASSIGN_OR_RETURN(n_group, r.integer("n_group", 1));
      FUSEDMOE_ASSIGN_OR_RETURN(topk_group, r.integer("topk_group", 1));
      FUSEDMOE_ASSIGN_OR_RETURN(scaling, r.number("routed_scaling_factor", 1.0));
      FUSEDMOE_ASSIGN_OR_RETURN(norm, r.boolean("norm_topk_prob", true));
      FUSEDMOE_ASSIGN_OR_RETURN(first_dense, r.integer("first_k_dense_replace", 0));
      FUSEDMOE_ASSIGN_OR_RETURN(freq, r.integer("moe_layer_freq", 1));
      const std::string scoring = r.string("scoring_func");
      if (!scoring.empty() && scoring != "sigmoid") {
        return ConfigReader::invalid("config.json: scoring_func " + quoted(scoring) +
                                     " (fusedmoe computes DeepSeek-V3's sigmoid routing)");
      }
      c.intermediate = inter;
      c.experts = experts;
      c.routing = {RoutingKind::sigmoid_topk,
                   norm,
                   static_cast<int>(std::max<std::int64_t>(n_group, 1)),
                   static_cast<int>(std::max<std::int64_t>(topk_group, 1)),
                   static_cast<float>(scaling),
                   false,
                   true};
      c.shared = {shared * inter, false};
      for (std::int64_t i = 0; i < layers; ++i) {
        if (i < first_dense || freq == 0 || i % freq != 0) dense.push_back(static_cast<int>(i));
      }
      m.dense_reason = "first_k_dense_replace = " + std::to_string(first_dense) +
                       ", moe_layer_freq = " + std::to_string(freq);
      break;
    }
    case Architecture::gpt_oss: {
      FUSEDMOE_ASSIGN_OR_RETURN(inter, r.size({"intermediate_size"}));
      FUSEDMOE_ASSIGN_OR_RETURN(experts, r.size({"num_local_experts"}));
      FUSEDMOE_ASSIGN_OR_RETURN(limit, r.number("swiglu_limit", 7.0));
      c.intermediate = inter;
      c.experts = experts;
      c.routing.kind = RoutingKind::topk_softmax;
      c.routing.renormalize = false;
      c.routing.router_bias = true;
      c.activation = Activation::swiglu_oss;
      c.swiglu_limit = static_cast<float>(limit);
      c.expert_bias = true;
      break;
    }
  }
  m.dense_layers = std::move(dense);

  std::string dtype = r.string("torch_dtype");
  if (dtype.empty()) dtype = r.string("dtype");
  c.dtype = dtype == "float16" ? DType::f16 : dtype == "float32" ? DType::f32 : DType::bf16;
  if (Status s = validate(c); !s.ok()) {
    return ConfigReader::invalid("config.json describes a layer fusedmoe cannot build: " +
                                 s.to_string());
  }
  return m;
}

Result<ModelConfig> read_model_config(const Checkpoint& checkpoint,
                                      std::optional<Architecture> architecture) {
  if (!checkpoint.config_json()) {
    return io_error("no config.json in " + quoted(checkpoint.directory()));
  }
  return parse_model_config(*checkpoint.config_json(), architecture);
}

// ---- loading one layer -------------------------------------------------------------------------

struct LayerWeights::Storage {
  std::vector<std::unique_ptr<std::byte[]>> buffers;
  std::vector<ConstTensorRef> w1, w3, w2;
  std::size_t bytes = 0;
};

LayerWeights::LayerWeights() = default;
LayerWeights::LayerWeights(LayerWeights&&) noexcept = default;
LayerWeights& LayerWeights::operator=(LayerWeights&&) noexcept = default;
LayerWeights::~LayerWeights() = default;
std::size_t LayerWeights::bytes() const { return storage_ ? storage_->bytes : 0; }

namespace {

// Where an architecture keeps one layer's MoE tensors.
struct LayerNames {
  std::string moe;  // "model.layers.N.mlp." or "model.layers.N.block_sparse_moe."
  std::string router, router_bias, correction_bias;
  std::string gate, up, down;  // per-expert names around the expert index: moe + "experts." ...
  std::string fused_gate_up, fused_down, fused_gate_up_bias, fused_down_bias;
  std::string shared_gate, shared_up, shared_down, shared_gate_weight;
};

LayerNames names_for(Architecture a, const std::string& moe) {
  LayerNames n;
  n.moe = moe;
  const bool oss = a == Architecture::gpt_oss;
  n.router = moe + (oss ? "router.weight" : "gate.weight");
  if (oss) n.router_bias = moe + "router.bias";
  if (a == Architecture::deepseek_v3) n.correction_bias = moe + "gate.e_score_correction_bias";
  if (a == Architecture::mixtral) {
    n.gate = "w1", n.up = "w3", n.down = "w2";
  } else {
    n.gate = "gate_proj", n.up = "up_proj", n.down = "down_proj";
  }
  n.fused_gate_up = moe + "experts.gate_up_proj";
  n.fused_down = moe + "experts.down_proj";
  n.fused_gate_up_bias = moe + "experts.gate_up_proj_bias";
  n.fused_down_bias = moe + "experts.down_proj_bias";
  std::string shared;
  if (a == Architecture::qwen2_moe) {
    shared = moe + "shared_expert.";
    n.shared_gate_weight = moe + "shared_expert_gate.weight";
  } else if (a == Architecture::deepseek_v3) {
    shared = moe + "shared_experts.";
  }
  if (!shared.empty()) {
    n.shared_gate = shared + "gate_proj.weight";
    n.shared_up = shared + "up_proj.weight";
    n.shared_down = shared + "down_proj.weight";
  }
  return n;
}

std::string expert_name(const LayerNames& n, std::int64_t e, const std::string& proj) {
  return n.moe + "experts." + std::to_string(e) + "." + proj + ".weight";
}

class LayerLoader {
 public:
  LayerLoader(const Checkpoint& checkpoint, LayerWeights::Storage& storage, DType layer_dtype)
      : checkpoint_(checkpoint), storage_(storage), layer_dtype_(layer_dtype) {}

  // Reads tensor `name`, which must have `shape` and the layer dtype (or f32 when `f32_ok`).
  Result<ConstTensorRef> load(const std::string& name, std::initializer_list<std::int64_t> shape,
                              bool f32_ok) {
    const CheckpointTensor* t = checkpoint_.find(name);
    if (t == nullptr) {
      return Status{StatusCode::invalid_shape, "the checkpoint has no tensor " + quoted(name)};
    }
    const std::vector<std::int64_t> want(shape);
    if (t->shape != want) {
      return Status{StatusCode::invalid_shape, "tensor " + quoted(name) + " is " +
                                                   shape_text(t->shape) + ", expected " +
                                                   shape_text(want)};
    }
    const std::optional<DType> dtype = layer_dtype_of(t->dtype);
    if (!dtype || (*dtype != layer_dtype_ && !(f32_ok && *dtype == DType::f32))) {
      std::string expected(core::safetensors_name(layer_dtype_));
      if (f32_ok && layer_dtype_ != DType::f32) expected += " or F32";
      std::string why = dtype ? " (the layer dtype is " + std::string(to_string(layer_dtype_)) + ")"
                              : " (fusedmoe loads bf16, f16 or f32 weights; quantised "
                                "checkpoints need a dequantised copy)";
      return Status{StatusCode::invalid_dtype,
                    "tensor " + quoted(name) + " is " + t->dtype + ", expected " + expected + why};
    }
    Result<const File*> file = open_file(t->file);
    if (!file.ok()) return file.status();
    std::unique_ptr<std::byte[]> buffer;
    try {
      buffer.reset(new std::byte[std::max<std::uint64_t>(t->bytes, 1)]);
    } catch (const std::bad_alloc&) {
      return Status{StatusCode::out_of_memory, "no memory for tensor " + quoted(name) + " (" +
                                                   std::to_string(t->bytes) + " bytes)"};
    }
    if (Status s = file.value()->read(t->offset, buffer.get(), t->bytes); !s.ok()) {
      return Status{s.code(), s.message() + " (reading " + quoted(name) + ")"};
    }
    ConstTensorRef ref;
    ref.data = buffer.get();
    ref.dtype = *dtype;
    ref.rank = static_cast<int>(want.size());
    std::int64_t stride = 1;
    for (int d = ref.rank - 1; d >= 0; --d) {
      ref.shape[static_cast<std::size_t>(d)] = want[static_cast<std::size_t>(d)];
      ref.strides[static_cast<std::size_t>(d)] = stride;
      stride *= want[static_cast<std::size_t>(d)];
    }
    storage_.bytes += t->bytes;
    storage_.buffers.push_back(std::move(buffer));
    return ref;
  }

 private:
  Result<const File*> open_file(const std::string& path) {
    auto it = files_.find(path);
    if (it == files_.end()) {
      Result<File> f = File::open(path);
      if (!f.ok()) return f.status();
      it = files_.emplace(path, std::move(f).value()).first;
    }
    return &it->second;
  }

  const Checkpoint& checkpoint_;
  LayerWeights::Storage& storage_;
  DType layer_dtype_;
  std::map<std::string, File> files_;
};

// "model.layers.N.mlp." (or Mixtral's block_sparse_moe, where that is what the file uses).
std::string moe_prefix(const Checkpoint& checkpoint, Architecture a, int layer) {
  const std::string base = "model.layers." + std::to_string(layer) + ".";
  if (a == Architecture::mixtral &&
      checkpoint.find(base + "block_sparse_moe.gate.weight") != nullptr) {
    return base + "block_sparse_moe.";
  }
  if (a == Architecture::mixtral && checkpoint.find(base + "mlp.gate.weight") == nullptr) {
    return base + "block_sparse_moe.";  // the name the messages give when neither is there
  }
  return base + "mlp.";
}

// Why a layer has no router, when the checkpoint shows it: a dense MLP, or no such layer.
Status missing_router(const Checkpoint& checkpoint, const LayerNames& n, int layer) {
  const std::string base = "model.layers." + std::to_string(layer) + ".";
  if (checkpoint.find(base + "mlp.gate_proj.weight") != nullptr) {
    return {StatusCode::invalid_shape, "layer " + std::to_string(layer) + " has a dense MLP (" +
                                           base + "mlp.gate_proj.weight), not MoE experts"};
  }
  const auto it =
      std::lower_bound(checkpoint.tensors().begin(), checkpoint.tensors().end(), base,
                       [](const CheckpointTensor& t, const std::string& b) { return t.name < b; });
  if (it == checkpoint.tensors().end() || it->name.rfind(base, 0) != 0) {
    return {StatusCode::invalid_shape,
            "the checkpoint has no layer " + std::to_string(layer) + " (no tensor " + base + "*)"};
  }
  if (checkpoint.find(n.fused_gate_up + "_blocks") != nullptr) {
    return {StatusCode::invalid_dtype, quoted(n.fused_gate_up + "_blocks") +
                                           ": MXFP4-quantised experts; fusedmoe loads bf16, f16 "
                                           "or f32 weights (use a dequantised checkpoint)"};
  }
  return {StatusCode::invalid_shape, "the checkpoint has no tensor " + quoted(n.router)};
}

}  // namespace

Result<LayerWeights> load_moe_layer(const Checkpoint& checkpoint, Architecture a,
                                    const LayerConfig& config, int layer) {
  if (layer < 0) {
    return Status{StatusCode::invalid_argument, "layer " + std::to_string(layer) + " is negative"};
  }
  if (Status s = validate(config); !s.ok()) return s;
  if (config.routing.kind == RoutingKind::precomputed) {
    return Status{StatusCode::invalid_argument,
                  "the layer config's routing is precomputed; a checkpoint's layer has a router"};
  }
  const LayerNames n = names_for(a, moe_prefix(checkpoint, a, layer));
  if (checkpoint.find(n.router) == nullptr) return missing_router(checkpoint, n, layer);
  if (a == Architecture::gpt_oss && checkpoint.find(n.fused_gate_up) == nullptr &&
      checkpoint.find(n.fused_gate_up + "_blocks") != nullptr) {
    return missing_router(checkpoint, n, layer);  // names the MXFP4 tensors
  }

  LayerWeights out;
  out.architecture = a;
  out.layer = layer;
  out.config = config;
  out.storage_ = std::make_unique<LayerWeights::Storage>();
  LayerWeights::Storage& st = *out.storage_;
  LayerLoader loader(checkpoint, st, config.dtype);
  WeightSet& w = out.weights;
  const std::int64_t e = config.experts, h = config.hidden, i = config.intermediate;

// Loads tensor `name` of shape __VA_ARGS__ into `dst`, or returns the status from here.
#define FUSEDMOE_LOAD(dst, name, f32_ok, ...)                                  \
  do {                                                                         \
    Result<ConstTensorRef> loaded_ = loader.load(name, {__VA_ARGS__}, f32_ok); \
    if (!loaded_.ok()) return loaded_.status();                                \
    (dst) = loaded_.value();                                                   \
  } while (0)

  FUSEDMOE_LOAD(w.router.weight, n.router, true, e, h);
  if (config.routing.router_bias) {
    if (n.router_bias.empty()) {
      return Status{StatusCode::unsupported_config,
                    std::string(to_string(a)) + " checkpoints have no router bias"};
    }
    FUSEDMOE_LOAD(w.router.bias, n.router_bias, true, e);
  }
  if (config.routing.correction_bias) {
    if (n.correction_bias.empty()) {
      return Status{StatusCode::unsupported_config,
                    std::string(to_string(a)) + " checkpoints have no routing correction bias"};
    }
    FUSEDMOE_LOAD(w.router.correction_bias, n.correction_bias, true, e);
  }

  if (a == Architecture::gpt_oss) {
    // gpt-oss: [E, H, 2I] with gate and up in alternate columns, down [E, I, H].
    w.experts.layout = WeightLayout::interleaved_cols;
    FUSEDMOE_LOAD(w.experts.gate_up, n.fused_gate_up, false, e, h, 2 * i);
    FUSEDMOE_LOAD(w.experts.down, n.fused_down, false, e, i, h);
  } else if (checkpoint.find(n.fused_gate_up) != nullptr) {
    // transformers v5's fused experts: [E, 2I, H] gate rows then up rows, down [E, H, I].
    w.experts.layout = WeightLayout::gate_up_rows;
    FUSEDMOE_LOAD(w.experts.gate_up, n.fused_gate_up, false, e, 2 * i, h);
    FUSEDMOE_LOAD(w.experts.down, n.fused_down, false, e, h, i);
  } else {
    w.experts.layout = WeightLayout::separate;
    for (std::int64_t x = 0; x < e; ++x) {
      ConstTensorRef gate, up, down;
      FUSEDMOE_LOAD(gate, expert_name(n, x, n.gate), false, i, h);
      FUSEDMOE_LOAD(up, expert_name(n, x, n.up), false, i, h);
      FUSEDMOE_LOAD(down, expert_name(n, x, n.down), false, h, i);
      st.w1.push_back(gate);
      st.w3.push_back(up);
      st.w2.push_back(down);
    }
    w.experts.w1 = st.w1;
    w.experts.w3 = st.w3;
    w.experts.w2 = st.w2;
  }
  if (config.expert_bias) {
    if (a != Architecture::gpt_oss) {
      return Status{StatusCode::unsupported_config,
                    std::string(to_string(a)) + " checkpoints have no expert biases"};
    }
    FUSEDMOE_LOAD(w.experts.gate_up_bias, n.fused_gate_up_bias, true, e, 2 * i);
    FUSEDMOE_LOAD(w.experts.down_bias, n.fused_down_bias, true, e, h);
  }

  const std::int64_t is = config.shared.intermediate;
  if (is > 0) {
    if (n.shared_gate.empty()) {
      return Status{StatusCode::unsupported_config,
                    std::string(to_string(a)) + " checkpoints have no shared expert"};
    }
    FUSEDMOE_LOAD(w.shared.gate, n.shared_gate, false, is, h);
    FUSEDMOE_LOAD(w.shared.up, n.shared_up, false, is, h);
    FUSEDMOE_LOAD(w.shared.down, n.shared_down, false, h, is);
    if (config.shared.gated) {
      if (n.shared_gate_weight.empty()) {
        return Status{StatusCode::unsupported_config,
                      std::string(to_string(a)) + " checkpoints have no shared expert gate"};
      }
      FUSEDMOE_LOAD(w.shared.gate_weight, n.shared_gate_weight, true, 1, h);
    }
  }
#undef FUSEDMOE_LOAD
  return out;
}

Result<LayerWeights> load_moe_layer(const Checkpoint& checkpoint, const ModelConfig& model,
                                    int layer) {
  if (model.num_layers > 0 && layer >= model.num_layers) {
    return Status{StatusCode::invalid_argument,
                  "layer " + std::to_string(layer) + " is past the model's " +
                      std::to_string(model.num_layers) + " layers (num_hidden_layers)"};
  }
  if (std::binary_search(model.dense_layers.begin(), model.dense_layers.end(), layer)) {
    return Status{StatusCode::invalid_argument, "layer " + std::to_string(layer) + " of this " +
                                                    std::string(to_string(model.architecture)) +
                                                    " model is a dense MLP (" + model.dense_reason +
                                                    "), not MoE"};
  }
  return load_moe_layer(checkpoint, model.architecture, model.layer, layer);
}

std::optional<DType> stored_expert_dtype(const Checkpoint& checkpoint, Architecture a, int layer) {
  if (layer < 0) return std::nullopt;
  const LayerNames n = names_for(a, moe_prefix(checkpoint, a, layer));
  for (const std::string& name : {n.fused_gate_up, expert_name(n, 0, n.gate)}) {
    if (const CheckpointTensor* t = checkpoint.find(name)) return layer_dtype_of(t->dtype);
  }
  return std::nullopt;
}

Result<LayerWeights> load_moe_layer(const Checkpoint& checkpoint, int layer) {
  Result<ModelConfig> model = read_model_config(checkpoint);
  if (!model.ok()) return model.status();
  ModelConfig m = std::move(model).value();
  // The stored expert weights decide the layer dtype: config.json's torch_dtype only says what
  // the model was saved in, and a quantised checkpoint's experts differ from it (load_moe_layer
  // then names the tensor and its dtype).
  if (auto dtype = stored_expert_dtype(checkpoint, m.architecture, layer)) m.layer.dtype = *dtype;
  return load_moe_layer(checkpoint, m, layer);
}

}  // namespace fusedmoe
