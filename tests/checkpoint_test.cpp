// Loading one layer from Hugging Face safetensors checkpoints. Each architecture's tensor names
// are written by a small writer here from random weights, loaded back, packed and run on the CPU
// backend, and compared with the reference backend given the same weights directly (and bit for
// bit with the CPU backend given them directly). Then every kind of bad file, header, index,
// config and tensor: each must give its status and a message naming the problem, never a crash
// (this suite also runs under ASan and UBSan).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/json.hpp"
#include "core/safetensors.hpp"
#include "fusedmoe/checkpoint.hpp"
#include "test_util.hpp"

namespace fusedmoe {
namespace {

namespace fs = std::filesystem;

// ---- a tiny safetensors writer ----------------------------------------------------------------

struct StTensor {
  std::string name;
  std::string dtype;  // "BF16", "F32", ...
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;
};

std::string header_json(const std::vector<StTensor>& tensors) {
  std::ostringstream h;
  h << "{\"__metadata__\":{\"format\":\"pt\"}";
  std::uint64_t offset = 0;
  for (const StTensor& t : tensors) {
    h << ",\"" << t.name << "\":{\"dtype\":\"" << t.dtype << "\",\"shape\":[";
    for (std::size_t d = 0; d < t.shape.size(); ++d) h << (d ? "," : "") << t.shape[d];
    h << "],\"data_offsets\":[" << offset << "," << offset + t.data.size() << "]}";
    offset += t.data.size();
  }
  h << "}";
  return h.str();
}

std::string file_bytes(const std::string& header, const std::vector<StTensor>& tensors) {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>(n >> (8 * i));
  out += header;
  for (const StTensor& t : tensors) {
    out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size());
  }
  return out;
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void write_safetensors(const fs::path& path, const std::vector<StTensor>& tensors) {
  write_file(path, file_bytes(header_json(tensors), tensors));
}

std::vector<std::byte> tensor_bytes(const HostTensor& t) {
  const ConstTensorRef r = t.cref();
  const auto* p = static_cast<const std::byte*>(r.data);
  return {p, p + static_cast<std::size_t>(r.numel()) * dtype_size(r.dtype)};
}

StTensor from_host(std::string name, const HostTensor& t) {
  const ConstTensorRef r = t.cref();
  return {std::move(name),
          std::string(core::safetensors_name(r.dtype)),
          {r.shape.begin(), r.shape.begin() + r.rank},
          tensor_bytes(t)};
}

// A fresh folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    path_ = fs::temp_directory_path() /
            ("fusedmoe_ckpt_" + name + "_" + std::to_string(static_cast<long long>(::getpid())));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// ---- each architecture as its checkpoints store it ----------------------------------------------

struct ArchCase {
  std::string label;
  Architecture arch;
  LayerConfig config;
  std::string config_json;
  bool fused_v5 = false;  // transformers v5's experts.gate_up_proj / down_proj
};

constexpr std::int64_t kH = 64, kI = 40, kE = 8, kK = 2, kShared = 24;

std::string dtype_json(DType d) {
  return d == DType::f32 ? "float32" : d == DType::f16 ? "float16" : "bfloat16";
}

ArchCase mixtral(DType d = DType::bf16, bool fused = false) {
  LayerConfig c = test::make_config(kH, kI, kE, kK, d);
  return {"mixtral", Architecture::mixtral, c,
          R"({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 64,
              "intermediate_size": 40, "num_local_experts": 8, "num_experts_per_tok": 2,
              "num_hidden_layers": 2, "torch_dtype": ")" +
              dtype_json(d) + "\"}",
          fused};
}

ArchCase qwen2_moe() {
  LayerConfig c = test::make_config(kH, kI, kE, kK);
  c.routing.renormalize = false;
  c.shared = {kShared, true};
  return {"qwen2_moe", Architecture::qwen2_moe, c,
          R"({"model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 100,
              "moe_intermediate_size": 40, "num_experts": 8, "num_experts_per_tok": 2,
              "norm_topk_prob": false, "shared_expert_intermediate_size": 24,
              "decoder_sparse_step": 1, "mlp_only_layers": [], "num_hidden_layers": 2,
              "torch_dtype": "bfloat16"})"};
}

ArchCase qwen3_moe(DType d = DType::bf16, bool fused = false) {
  LayerConfig c = test::make_config(kH, kI, kE, kK, d);
  return {"qwen3_moe", Architecture::qwen3_moe, c,
          R"({"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 100,
              "moe_intermediate_size": 40, "num_experts": 8, "num_experts_per_tok": 2,
              "norm_topk_prob": true, "num_hidden_layers": 2, "torch_dtype": ")" +
              dtype_json(d) + "\"}",
          fused};
}

ArchCase olmoe() {
  LayerConfig c = test::make_config(kH, kI, kE, kK);
  c.routing.renormalize = false;
  // No model_type: the architecture comes from "architectures".
  return {"olmoe", Architecture::olmoe, c,
          R"({"architectures": ["OlmoeForCausalLM"], "hidden_size": 64, "intermediate_size": 40,
              "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": false})"};
}

ArchCase deepseek_v3() {
  LayerConfig c = test::deepseek_like(kH, kI, kE, kK, 4, 2);
  c.shared = {kI, false};  // n_shared_experts x moe_intermediate_size
  return {"deepseek_v3", Architecture::deepseek_v3, c,
          R"({"model_type": "deepseek_v3", "hidden_size": 64, "intermediate_size": 100,
              "moe_intermediate_size": 40, "n_routed_experts": 8, "n_shared_experts": 1,
              "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2,
              "routed_scaling_factor": 2.5, "norm_topk_prob": true, "scoring_func": "sigmoid",
              "topk_method": "noaux_tc", "first_k_dense_replace": 1, "moe_layer_freq": 1,
              "num_hidden_layers": 2, "torch_dtype": "bfloat16"})"};
}

ArchCase gpt_oss() {
  LayerConfig c = test::gpt_oss_like(kH, kI, kE, kK);
  return {"gpt_oss", Architecture::gpt_oss, c,
          R"({"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 40,
              "num_local_experts": 8, "experts_per_token": 2, "swiglu_limit": 7.0,
              "num_hidden_layers": 2, "torch_dtype": "bfloat16"})"};
}

// Interleaves two [rows, n] byte matrices of `es`-byte elements column by column: [rows, 2n].
std::vector<std::byte> interleave_cols(const std::byte* a, const std::byte* b, std::int64_t rows,
                                       std::int64_t n, std::size_t es) {
  std::vector<std::byte> out(static_cast<std::size_t>(rows * 2 * n) * es);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t j = 0; j < n; ++j) {
      const std::size_t src = static_cast<std::size_t>(r * n + j) * es;
      const std::size_t dst = static_cast<std::size_t>(r * 2 * n + 2 * j) * es;
      std::memcpy(&out[dst], a + src, es);
      std::memcpy(&out[dst + es], b + src, es);
    }
  }
  return out;
}

// Transposes a [rows, cols] matrix of `es`-byte elements.
std::vector<std::byte> transpose(const std::byte* m, std::int64_t rows, std::int64_t cols,
                                 std::size_t es) {
  std::vector<std::byte> out(static_cast<std::size_t>(rows * cols) * es);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      std::memcpy(&out[static_cast<std::size_t>(c * rows + r) * es],
                  m + static_cast<std::size_t>(r * cols + c) * es, es);
    }
  }
  return out;
}

void append(std::vector<std::byte>& dst, const std::vector<std::byte>& src) {
  dst.insert(dst.end(), src.begin(), src.end());
}

// Layer `layer`'s tensors under `a`'s names, from weights drawn in the separate layout.
std::vector<StTensor> layer_tensors(const ArchCase& ac, const HostWeights& w, int layer) {
  const LayerConfig& c = ac.config;
  const std::int64_t e = c.experts, h = c.hidden, i = c.intermediate;
  const std::size_t es = dtype_size(c.dtype);
  const std::string base = "model.layers." + std::to_string(layer) + ".";
  const std::string moe = base + (ac.arch == Architecture::mixtral ? "block_sparse_moe." : "mlp.");
  const std::string dt(core::safetensors_name(c.dtype));
  std::vector<StTensor> out;
  if (ac.arch == Architecture::gpt_oss) {
    out.push_back(from_host(moe + "router.weight", w.router));
    out.push_back(from_host(moe + "router.bias", w.router_bias));
    StTensor gate_up{moe + "experts.gate_up_proj", dt, {e, h, 2 * i}, {}};
    StTensor down{moe + "experts.down_proj", dt, {e, i, h}, {}};
    for (std::int64_t x = 0; x < e; ++x) {
      const auto at = static_cast<std::size_t>(x);
      // gate and up are [I, H]; gpt-oss stores x · W, so [H, I] each, interleaved to [H, 2I].
      const auto g = transpose(tensor_bytes(w.w1[at]).data(), i, h, es);
      const auto u = transpose(tensor_bytes(w.w3[at]).data(), i, h, es);
      append(gate_up.data, interleave_cols(g.data(), u.data(), h, i, es));
      append(down.data, transpose(tensor_bytes(w.w2[at]).data(), h, i, es));
    }
    // Biases: the separate layout holds [E, 2I] as gate then up; gpt-oss interleaves them.
    const auto gub = tensor_bytes(w.gate_up_bias);
    StTensor bias{moe + "experts.gate_up_proj_bias", "F32", {e, 2 * i}, {}};
    for (std::int64_t x = 0; x < e; ++x) {
      const std::byte* row = gub.data() + static_cast<std::size_t>(x * 2 * i) * 4;
      append(bias.data, interleave_cols(row, row + i * 4, 1, i, 4));
    }
    out.push_back(std::move(gate_up));
    out.push_back(std::move(bias));
    out.push_back(std::move(down));
    out.push_back(from_host(moe + "experts.down_proj_bias", w.down_bias));
    return out;
  }
  out.push_back(from_host(moe + "gate.weight", w.router));
  if (ac.arch == Architecture::deepseek_v3) {
    out.push_back(from_host(moe + "gate.e_score_correction_bias", w.correction_bias));
  }
  if (ac.fused_v5) {
    StTensor gate_up{moe + "experts.gate_up_proj", dt, {e, 2 * i, h}, {}};
    StTensor down{moe + "experts.down_proj", dt, {e, h, i}, {}};
    for (std::int64_t x = 0; x < e; ++x) {
      const auto at = static_cast<std::size_t>(x);
      append(gate_up.data, tensor_bytes(w.w1[at]));
      append(gate_up.data, tensor_bytes(w.w3[at]));
      append(down.data, tensor_bytes(w.w2[at]));
    }
    out.push_back(std::move(gate_up));
    out.push_back(std::move(down));
  } else {
    const bool mix = ac.arch == Architecture::mixtral;
    for (std::int64_t x = 0; x < e; ++x) {
      const auto at = static_cast<std::size_t>(x);
      const std::string p = moe + "experts." + std::to_string(x) + ".";
      out.push_back(from_host(p + (mix ? "w1" : "gate_proj") + ".weight", w.w1[at]));
      out.push_back(from_host(p + (mix ? "w3" : "up_proj") + ".weight", w.w3[at]));
      out.push_back(from_host(p + (mix ? "w2" : "down_proj") + ".weight", w.w2[at]));
    }
  }
  if (c.shared.intermediate > 0) {
    const std::string s =
        moe + (ac.arch == Architecture::qwen2_moe ? "shared_expert." : "shared_experts.");
    out.push_back(from_host(s + "gate_proj.weight", w.shared_gate));
    out.push_back(from_host(s + "up_proj.weight", w.shared_up));
    out.push_back(from_host(s + "down_proj.weight", w.shared_down));
    if (c.shared.gated)
      out.push_back(from_host(moe + "shared_expert_gate.weight", w.shared_gate_weight));
  }
  return out;
}

// The same names with other contents, for a layer that must not be the one loaded.
std::vector<StTensor> decoy(std::vector<StTensor> tensors) {
  for (StTensor& t : tensors) {
    for (std::byte& b : t.data) b ^= std::byte{0x40};
  }
  return tensors;
}

// A checkpoint of two layers in `dir`: layer 1 holds the problem's weights, layer 0 a decoy (or,
// for DeepSeek-V3, whose first layer is dense, a dense MLP).
std::vector<StTensor> model_tensors(const ArchCase& ac, const HostWeights& w) {
  std::vector<StTensor> all;
  if (ac.arch == Architecture::deepseek_v3) {
    const std::vector<std::byte> dense(static_cast<std::size_t>(kH * 100 * 2), std::byte{0});
    all.push_back({"model.layers.0.mlp.gate_proj.weight", "BF16", {100, kH}, dense});
    all.push_back({"model.layers.0.mlp.up_proj.weight", "BF16", {100, kH}, dense});
    all.push_back({"model.layers.0.mlp.down_proj.weight", "BF16", {kH, 100}, dense});
  } else {
    for (StTensor& t : decoy(layer_tensors(ac, w, 0))) all.push_back(std::move(t));
  }
  for (StTensor& t : layer_tensors(ac, w, 1)) all.push_back(std::move(t));
  all.push_back({"model.embed_tokens.weight",
                 "BF16",
                 {3, kH},
                 std::vector<std::byte>(static_cast<std::size_t>(3 * kH * 2), std::byte{1})});
  return all;
}

test::Problem make_problem(const LayerConfig& c) {
  test::Options o;
  o.layout = WeightLayout::separate;  // the per-expert matrices the writer stores
  return test::Problem(c, 7, o);
}

// Loads layer 1, runs it on the CPU backend, and checks it against the reference given the
// problem's weights directly, and bit for bit against the CPU backend given them directly.
void expect_layer_matches(const test::Problem& p, const LayerWeights& loaded) {
  SCOPED_TRACE(p.describe());
  EXPECT_EQ(loaded.config, p.config);
  Result<Layer> layer = test::make_layer(loaded.config, loaded.weights, Backend::cpu);
  ASSERT_TRUE(layer.ok()) << layer.status().to_string();
  const test::RunResult got = test::run_layer(layer.value(), p, p.config.dtype);
  const test::RunResult ref = test::run_backend(p, Backend::reference);
  test::check_against(p, ref, got);
  const test::RunResult direct = test::run_backend(p, Backend::cpu);
  ASSERT_TRUE(direct.status.ok()) << direct.status.to_string();
  EXPECT_EQ(test::output_bytes(got), test::output_bytes(direct))
      << "loaded weights give other bits than the same weights given directly";
}

class Architectures : public ::testing::TestWithParam<ArchCase> {};

TEST_P(Architectures, ConfigJsonGivesTheLayer) {
  const ArchCase& ac = GetParam();
  Result<ModelConfig> m = parse_model_config(ac.config_json);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->architecture, ac.arch);
  EXPECT_EQ(m->layer, ac.config) << test::describe_config(m->layer) << "\nexpected\n"
                                 << test::describe_config(ac.config);
}

TEST_P(Architectures, LoadedLayerMatchesTheReference) {
  const ArchCase& ac = GetParam();
  const test::Problem p = make_problem(ac.config);
  TempDir dir;
  write_safetensors(dir / "model.safetensors", model_tensors(ac, p.weights()));
  write_file(dir / "config.json", ac.config_json);

  Result<Checkpoint> ckpt = Checkpoint::open(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  ASSERT_TRUE(ckpt->config_json().has_value());
  Result<LayerWeights> loaded = load_moe_layer(ckpt.value(), 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  EXPECT_EQ(loaded->architecture, ac.arch);
  EXPECT_EQ(loaded->layer, 1);
  EXPECT_GT(loaded->bytes(), 0u);
  // Moving keeps the references valid.
  LayerWeights moved = std::move(loaded).value();
  expect_layer_matches(p, moved);

  // Explicit architecture and config, without config.json, give the same layer.
  Result<LayerWeights> explicit_load = load_moe_layer(ckpt.value(), ac.arch, ac.config, 1);
  ASSERT_TRUE(explicit_load.ok()) << explicit_load.status().to_string();
  expect_layer_matches(p, explicit_load.value());
}

const ArchCase kArchCases[] = {
    mixtral(),
    mixtral(DType::f32),
    qwen2_moe(),
    qwen3_moe(),
    qwen3_moe(DType::f16, true),
    olmoe(),
    deepseek_v3(),
    gpt_oss(),
    mixtral(DType::bf16, true),
};

INSTANTIATE_TEST_SUITE_P(Checkpoint, Architectures, ::testing::ValuesIn(kArchCases),
                         [](const ::testing::TestParamInfo<ArchCase>& info) {
                           return info.param.label + "_" +
                                  std::string(to_string(info.param.config.dtype)) +
                                  (info.param.fused_v5 ? "_v5fused" : "");
                         });

TEST(Checkpoint, ShardedIndexAcrossTwoFiles) {
  const ArchCase ac = qwen2_moe();
  const test::Problem p = make_problem(ac.config);
  TempDir dir;
  std::vector<StTensor> all = model_tensors(ac, p.weights());
  std::vector<StTensor> first, second;
  std::ostringstream index;
  index << R"({"metadata": {"total_size": 1}, "weight_map": {)";
  for (std::size_t n = 0; n < all.size(); ++n) {
    const bool one = n % 2 == 0;
    const char* shard =
        one ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    index << (n ? ", " : "") << "\"" << all[n].name << "\": \"" << shard << "\"";
    (one ? first : second).push_back(all[n]);
  }
  index << "}}";
  write_safetensors(dir / "model-00001-of-00002.safetensors", first);
  write_safetensors(dir / "model-00002-of-00002.safetensors", second);
  write_file(dir / "model.safetensors.index.json", index.str());
  write_file(dir / "config.json", ac.config_json);

  for (const std::string& path : {dir.path().string(), dir / "model.safetensors.index.json"}) {
    Result<Checkpoint> ckpt = Checkpoint::open(path);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
    EXPECT_EQ(ckpt->tensors().size(), all.size());
    const CheckpointTensor* t = ckpt->find("model.layers.1.mlp.gate.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, "BF16");
    EXPECT_EQ(t->shape, (std::vector<std::int64_t>{kE, kH}));
    Result<LayerWeights> loaded = load_moe_layer(ckpt.value(), 1);
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    expect_layer_matches(p, loaded.value());
  }

  // A shard the index names that is not there; a tensor the index misplaces.
  fs::remove(dir / "model-00002-of-00002.safetensors");
  Result<Checkpoint> missing = Checkpoint::open(dir.path().string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::io_error);
  EXPECT_NE(missing.status().message().find("model-00002-of-00002.safetensors"), std::string::npos)
      << missing.status().message();
  write_safetensors(dir / "model-00002-of-00002.safetensors", first);
  Result<Checkpoint> misplaced = Checkpoint::open(dir.path().string());
  ASSERT_FALSE(misplaced.ok());
  EXPECT_NE(misplaced.status().message().find("whose header does not have it"), std::string::npos)
      << misplaced.status().message();
}

// ---- errors
// --------------------------------------------------------------------------------------

void expect_error(const Status& s, StatusCode code, const std::string& needle) {
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_NE(s.message().find(needle), std::string::npos)
      << "message lacks '" << needle << "': " << s.to_string();
}

Status open_status(const std::string& path) { return Checkpoint::open(path).status(); }

TEST(CheckpointErrors, MissingPaths) {
  TempDir dir;
  expect_error(open_status(dir / "nope.safetensors"), StatusCode::io_error, "does not exist");
  expect_error(open_status(dir.path().string()), StatusCode::io_error,
               "neither model.safetensors nor model.safetensors.index.json");
  expect_error(open_status(""), StatusCode::io_error, "no checkpoint path");
}

TEST(CheckpointErrors, BadFiles) {
  TempDir dir;
  const std::vector<StTensor> one = {
      {"a", "F32", {2, 3}, std::vector<std::byte>(24, std::byte{0})}};
  const std::string good = file_bytes(header_json(one), one);
  const std::string path = dir / "model.safetensors";
  const auto with = [&](const std::string& bytes) {
    write_file(path, bytes);
    return open_status(path);
  };
  ASSERT_TRUE(with(good).ok());
  expect_error(with(""), StatusCode::io_error, "shorter than the 8-byte header length");
  expect_error(with(good.substr(0, 5)), StatusCode::io_error, "shorter than the 8-byte");
  expect_error(with(good.substr(0, 20)), StatusCode::io_error, "runs past the end");
  expect_error(with(good.substr(0, good.size() - 1)), StatusCode::io_error, "file truncated?");
  std::string huge = good;
  huge[7] = '\x7f';
  expect_error(with(huge), StatusCode::io_error, "exceeds the limit");
  std::string garbage(4096, '\0');
  std::mt19937_64 rng(7);
  for (char& c : garbage) c = static_cast<char>(rng());
  EXPECT_FALSE(with(garbage).ok());
  // The header length itself is fine but the JSON is not.
  const auto header = [&](const std::string& json) { return with(file_bytes(json, one)); };
  expect_error(header("{\"a\": {\"dtype\": \"F32\""), StatusCode::io_error, "malformed JSON");
  expect_error(header("[1, 2]"), StatusCode::io_error, "not a JSON object");
  expect_error(header(R"({"a": {"dtype": "Q4", "shape": [2, 3], "data_offsets": [0, 24]}})"),
               StatusCode::io_error, "unknown dtype 'Q4'");
  expect_error(header(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 48]}})"),
               StatusCode::io_error, "run past the data section");
  expect_error(header(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})"),
               StatusCode::io_error, "needs 24");
  expect_error(header(R"({"a": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 24]}})"),
               StatusCode::io_error, "non-negative integers");
  expect_error(header(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [8, 4]}})"),
               StatusCode::io_error, "end before begin");
  expect_error(header(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                          "b": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}})"),
               StatusCode::io_error, "overlap");
  expect_error(header(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                          "a": {"dtype": "F32", "shape": [3], "data_offsets": [12, 24]}})"),
               StatusCode::io_error, "'a' twice");
  expect_error(header(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16],
                          "data_offsets": [0, 24]}})"),
               StatusCode::io_error, "more than the file holds");
  expect_error(header(R"({"__metadata__": {"k": 1}})"), StatusCode::io_error,
               "__metadata__ value 'k'");
}

TEST(CheckpointErrors, BadIndex) {
  TempDir dir;
  const std::string index = dir / "model.safetensors.index.json";
  const auto with = [&](const std::string& json) {
    write_file(index, json);
    return open_status(dir.path().string());
  };
  expect_error(with("{"), StatusCode::io_error, "malformed JSON");
  expect_error(with(R"({"metadata": {}})"), StatusCode::io_error, "no \"weight_map\"");
  expect_error(with(R"({"weight_map": {"a": 3}})"), StatusCode::io_error, "is not a string");
  expect_error(with(R"({"weight_map": {"a": "../../etc/passwd"}})"), StatusCode::io_error,
               "not a plain file name");
  expect_error(with(R"({"weight_map": {"a": "x.safetensors"}})"), StatusCode::io_error,
               "x.safetensors");
}

// A valid checkpoint of one layer, then tensors that are missing, mis-shaped or of another dtype.
class TensorErrors : public ::testing::Test {
 protected:
  void write(const std::vector<StTensor>& tensors) {
    write_safetensors(dir_ / "model.safetensors", tensors);
  }
  Status load(const LayerConfig& c, int layer = 1) {
    Result<Checkpoint> ckpt = Checkpoint::open(dir_.path().string());
    if (!ckpt.ok()) return ckpt.status();
    return load_moe_layer(ckpt.value(), Architecture::qwen3_moe, c, layer).status();
  }
  StTensor* find(std::vector<StTensor>& ts, const std::string& name) {
    for (StTensor& t : ts) {
      if (t.name == name) return &t;
    }
    ADD_FAILURE() << "no " << name;
    return &ts.front();
  }

  TempDir dir_;
  ArchCase ac_ = qwen3_moe();
  test::Problem p_ = make_problem(ac_.config);
  std::vector<StTensor> tensors_ = layer_tensors(ac_, p_.weights(), 1);
};

TEST_F(TensorErrors, MissingTensorIsNamed) {
  std::vector<StTensor> ts = tensors_;
  const std::string name = "model.layers.1.mlp.experts.5.up_proj.weight";
  std::erase_if(ts, [&](const StTensor& t) { return t.name == name; });
  write(ts);
  expect_error(load(ac_.config), StatusCode::invalid_shape, "no tensor '" + name + "'");
}

TEST_F(TensorErrors, MisShapedTensorSaysExpectedAndGot) {
  std::vector<StTensor> ts = tensors_;
  StTensor* t = find(ts, "model.layers.1.mlp.experts.3.down_proj.weight");
  t->shape = {kI, kH};  // transposed: the same bytes
  write(ts);
  expect_error(load(ac_.config), StatusCode::invalid_shape,
               "'model.layers.1.mlp.experts.3.down_proj.weight' is [40, 64], expected [64, 40]");
  // A config whose sizes the checkpoint does not have.
  write(tensors_);
  LayerConfig wider = ac_.config;
  wider.hidden = 72;
  expect_error(load(wider), StatusCode::invalid_shape, "expected [8, 72]");
}

TEST_F(TensorErrors, DTypeMismatchSaysWhat) {
  write(tensors_);
  LayerConfig f16 = ac_.config;
  f16.dtype = DType::f16;
  expect_error(load(f16), StatusCode::invalid_dtype,
               "is BF16, expected F16 or F32 (the layer dtype is f16)");
  std::vector<StTensor> fp8 = tensors_;
  StTensor* g = find(fp8, "model.layers.1.mlp.experts.0.gate_proj.weight");
  g->dtype = "F8_E4M3";  // an FP8 checkpoint: one byte per element
  g->data.resize(g->data.size() / 2);
  write(fp8);
  expect_error(load(ac_.config), StatusCode::invalid_dtype, "is F8_E4M3, expected BF16");
}

TEST_F(TensorErrors, WrongLayersAndDenseLayers) {
  write(tensors_);
  expect_error(load(ac_.config, 7), StatusCode::invalid_shape, "no layer 7");
  expect_error(load(ac_.config, -1), StatusCode::invalid_argument, "negative");

  const ArchCase ds = deepseek_v3();
  const test::Problem p = make_problem(ds.config);
  write_safetensors(dir_ / "model.safetensors", model_tensors(ds, p.weights()));
  write_file(dir_ / "config.json", ds.config_json);
  Result<Checkpoint> ckpt = Checkpoint::open(dir_.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  expect_error(load_moe_layer(ckpt.value(), 0).status(), StatusCode::invalid_argument,
               "dense MLP (first_k_dense_replace = 1");
  expect_error(load_moe_layer(ckpt.value(), 2).status(), StatusCode::invalid_argument,
               "past the model's 2 layers");
  expect_error(load_moe_layer(ckpt.value(), Architecture::deepseek_v3, ds.config, 0).status(),
               StatusCode::invalid_shape, "has a dense MLP");
}

TEST_F(TensorErrors, TruncatedAfterOpening) {
  write(tensors_);
  Result<Checkpoint> ckpt = Checkpoint::open(dir_.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  fs::resize_file(dir_.path() / "model.safetensors", 4096);
  expect_error(load_moe_layer(ckpt.value(), Architecture::qwen3_moe, ac_.config, 1).status(),
               StatusCode::io_error, "truncated?");
}

TEST(CheckpointErrors, ModelConfig) {
  expect_error(parse_model_config("{").status(), StatusCode::io_error, "malformed JSON");
  expect_error(parse_model_config(R"({"model_type": "llama"})").status(),
               StatusCode::invalid_argument, "'llama' is not an MoE architecture");
  expect_error(parse_model_config(R"({"model_type": "mixtral", "hidden_size": 64,
                                      "num_experts_per_tok": 2, "intermediate_size": 40})")
                   .status(),
               StatusCode::invalid_argument, "no num_local_experts");
  expect_error(parse_model_config(R"({"model_type": "mixtral", "hidden_size": "64"})").status(),
               StatusCode::invalid_argument, "hidden_size must be a positive integer");
  expect_error(parse_model_config(R"({"model_type": "olmoe", "hidden_size": 64,
                                      "num_experts_per_tok": 9, "intermediate_size": 40,
                                      "num_experts": 8})")
                   .status(),
               StatusCode::invalid_argument, "cannot build");
  // Qwen's sparse step and mlp_only_layers make the named layers dense.
  Result<ModelConfig> q = parse_model_config(R"({"model_type": "qwen2_moe", "hidden_size": 64,
      "moe_intermediate_size": 40, "num_experts": 8, "num_experts_per_tok": 2,
      "decoder_sparse_step": 2, "mlp_only_layers": [3], "num_hidden_layers": 6})");
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  EXPECT_EQ(q->dense_layers, (std::vector<int>{0, 2, 3, 4}));
  EXPECT_EQ(preset_architecture("qwen1.5-moe-a2.7b"), Architecture::qwen2_moe);
  EXPECT_EQ(preset_architecture("gpt-oss-20b"), Architecture::gpt_oss);
  EXPECT_EQ(preset_architecture("seed-deepseek-v3"), std::nullopt);
  EXPECT_EQ(parse_architecture("DeepseekV3ForCausalLM"), Architecture::deepseek_v3);
}

// ---- the pure parsers on hostile input ---------------------------------------------------------

TEST(Json, ValuesEscapesAndNumbers) {
  Result<core::JsonValue> v = core::parse_json(
      R"( {"s": "a\"b\\c\/\n\u00e9\ud83d\ude00", "n": -12.5e1, "i": 9007199254740993,
           "t": true, "f": false, "z": null, "a": [1, [2, {}]], "e": []} )");
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->find("s")->string, "a\"b\\c/\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(v->find("n")->number, -125.0);
  EXPECT_FALSE(v->find("n")->is_integer);
  EXPECT_TRUE(v->find("i")->is_integer);
  EXPECT_EQ(v->find("i")->integer, 9007199254740993);
  EXPECT_TRUE(v->find("t")->boolean);
  EXPECT_TRUE(v->find("z")->is_null());
  EXPECT_EQ(v->find("a")->array.size(), 2u);
  EXPECT_EQ(v->find("missing"), nullptr);
}

TEST(Json, RejectsMalformedInput) {
  for (const char* bad :
       {"",      " ",      "{",       "}",         "[1,]",        "{\"a\" 1}",   "{\"a\":1,}",
        "01",    "1.",     "+1",      "-",         ".5",          "1e",          "tru",
        "nul",   "\"abc",  "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"a\nb\"",
        "[1] 2", "{1: 2}", "NaN",     "Infinity"}) {
    Result<core::JsonValue> v = core::parse_json(bad);
    EXPECT_FALSE(v.ok()) << "accepted: " << bad;
    if (!v.ok()) {
      EXPECT_EQ(v.status().code(), StatusCode::io_error);
      EXPECT_NE(v.status().message().find("malformed JSON at byte"), std::string::npos);
    }
  }
  // Deep nesting is refused, not a stack overflow.
  const std::string deep(1 << 20, '[');
  expect_error(core::parse_json(deep).status(), StatusCode::io_error, "nesting deeper");
  EXPECT_TRUE(core::parse_json(std::string(core::kMaxJsonDepth, '[') +
                               std::string(core::kMaxJsonDepth, ']'))
                  .ok());
  EXPECT_TRUE(core::parse_json("1e999").ok());
}

// Random bytes and random mutations of a valid header: an answer every time, never a crash.
TEST(Json, MutatedHeadersNeverCrash) {
  const std::vector<StTensor> ts = {{"x", "BF16", {2, 2}, std::vector<std::byte>(8, std::byte{0})},
                                    {"y", "F32", {1}, std::vector<std::byte>(4, std::byte{0})}};
  const std::string good = file_bytes(header_json(ts), ts);
  std::mt19937_64 rng(test::case_seed());
  int accepted = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string bytes = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      const std::size_t at = rng() % bytes.size();
      switch (rng() % 3) {
        case 0:
          bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          bytes.erase(at, 1 + rng() % 8);
          break;
        default:
          bytes.insert(at, 1, "{}[],:\"0123456789-e.\\u"[rng() % 23]);
          break;
      }
      if (bytes.empty()) bytes = "x";
    }
    const auto* p = reinterpret_cast<const std::byte*>(bytes.data());
    Result<core::SafetensorsHeader> h =
        core::parse_safetensors_header({p, bytes.size()}, bytes.size());
    if (h.ok()) {
      ++accepted;
      for (const core::SafetensorsEntry& e : h->tensors) EXPECT_LE(e.end, bytes.size());
    } else {
      EXPECT_EQ(h.status().code(), StatusCode::io_error);
    }
    (void)core::parse_json(bytes);
    (void)core::parse_safetensors_index(bytes);
    (void)parse_model_config(bytes);
  }
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace fusedmoe
