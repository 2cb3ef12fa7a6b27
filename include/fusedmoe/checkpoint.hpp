// One MoE layer's weights from a Hugging Face checkpoint (safetensors), ready for pack_weights:
//
//   auto ckpt = fusedmoe::Checkpoint::open("/models/Qwen3-30B-A3B");  // folder, file or index
//   auto model = fusedmoe::read_model_config(ckpt.value());            // its config.json
//   auto layer = fusedmoe::load_moe_layer(ckpt.value(), *model, 12);
//   auto packed = fusedmoe::pack_weights(layer->config, layer->weights, fusedmoe::Backend::cpu);
//
// Only the headers are read when a checkpoint is opened, and only the tensors of the one layer
// when it is loaded: a 60 GB checkpoint costs the few hundred MB of that layer. Bad files (short,
// garbage, offsets out of range, ...) are io_error; a tensor that is missing, mis-shaped or of the
// wrong dtype is invalid_shape or invalid_dtype with its full name in the message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fusedmoe/config.hpp"
#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"
#include "fusedmoe/weights.hpp"

namespace fusedmoe {

// The model families whose Hugging Face tensor names fusedmoe knows (MODELS.md).
enum class Architecture : std::uint8_t {
  mixtral,      // model_type "mixtral"
  qwen2_moe,    // "qwen2_moe" (Qwen1.5-MoE, Qwen2-MoE): sigmoid-gated shared expert
  qwen3_moe,    // "qwen3_moe"
  olmoe,        // "olmoe"
  deepseek_v3,  // "deepseek_v3": grouped sigmoid routing, correction bias, shared experts
  gpt_oss,      // "gpt_oss": router bias, fused interleaved experts with biases
};

// The Hugging Face model_type: "mixtral", "qwen2_moe", ...
std::string_view to_string(Architecture architecture);
// From a model_type ("qwen3_moe") or an architectures entry ("Qwen3MoeForCausalLM"); nullopt for
// anything else.
std::optional<Architecture> parse_architecture(std::string_view name);
// The architecture whose tensor names a fusedmoe preset's model uses ("mixtral-8x7b": mixtral);
// nullopt for the seed-paper presets, which name no checkpoint.
std::optional<Architecture> preset_architecture(std::string_view preset_name);

// One tensor of a checkpoint, as its header describes it.
struct CheckpointTensor {
  std::string name;
  std::string dtype;  // the safetensors name: "BF16", "F16", "F32", "F8_E4M3", ...
  std::vector<std::int64_t> shape;
  std::string file;          // the .safetensors file that holds it
  std::uint64_t offset = 0;  // of its first byte in that file
  std::uint64_t bytes = 0;
};

// An opened checkpoint: its tensor list, and config.json when one sits next to it. Holds no open
// files; load_moe_layer opens the shards it needs.
class Checkpoint {
 public:
  // `path`: a .safetensors file, a folder with model.safetensors or
  // model.safetensors.index.json, or such an index itself. Reads and checks every shard's header.
  static Result<Checkpoint> open(const std::string& path);

  // The folder the checkpoint is in.
  const std::string& directory() const { return directory_; }
  // Every tensor, sorted by name.
  std::span<const CheckpointTensor> tensors() const { return tensors_; }
  // nullptr when there is no tensor of that name.
  const CheckpointTensor* find(std::string_view name) const;
  // The text of config.json next to the checkpoint; nullopt when there is none.
  const std::optional<std::string>& config_json() const { return config_json_; }

 private:
  std::string directory_;
  std::vector<CheckpointTensor> tensors_;
  std::optional<std::string> config_json_;
};

// What config.json says about a model's MoE layers.
struct ModelConfig {
  Architecture architecture = Architecture::mixtral;
  // The MoE layer: sizes, routing, activation, shared expert. dtype is config.json's
  // torch_dtype (bf16 when it names none); load_moe_layer(Checkpoint, int) takes the weights'.
  LayerConfig layer;
  std::int64_t num_layers = 0;    // num_hidden_layers; 0 when not given
  std::vector<int> dense_layers;  // layers with a dense MLP instead of MoE, ascending
  std::string dense_reason;       // which settings make them dense, for messages
};

// Parses config.json's text: the architecture from model_type (or architectures), and
// hidden_size, moe_intermediate_size / intermediate_size, num_experts / num_local_experts /
// n_routed_experts, num_experts_per_tok, norm_topk_prob, n_group, topk_group,
// routed_scaling_factor, shared expert sizes, and the dense layers. `architecture` overrides
// model_type. Missing sizes are invalid_argument naming the key; malformed JSON is io_error.
Result<ModelConfig> parse_model_config(std::string_view config_json,
                                       std::optional<Architecture> architecture = std::nullopt);
// parse_model_config of the checkpoint's config.json; io_error when there is none.
Result<ModelConfig> read_model_config(const Checkpoint& checkpoint,
                                      std::optional<Architecture> architecture = std::nullopt);

// One layer's weights in host memory owned by this object, and a WeightSet that references it
// (valid while this object lives; moving it keeps the references valid).
class LayerWeights {
 public:
  LayerWeights();
  LayerWeights(LayerWeights&&) noexcept;
  LayerWeights& operator=(LayerWeights&&) noexcept;
  LayerWeights(const LayerWeights&) = delete;
  LayerWeights& operator=(const LayerWeights&) = delete;
  ~LayerWeights();

  Architecture architecture = Architecture::mixtral;
  int layer = 0;
  LayerConfig config;         // the configuration the weights were loaded for
  WeightSet weights;          // layout as stored: separate per-expert tensors, or fused
  std::size_t bytes() const;  // host memory held

  struct Storage;

 private:
  friend Result<LayerWeights> load_moe_layer(const Checkpoint&, Architecture, const LayerConfig&,
                                             int);
  std::unique_ptr<Storage> storage_;
};

// Loads layer `layer`'s router, routed experts (and shared expert, biases, correction bias as
// `config` asks) with `architecture`'s tensor names. Expert weights must have config.dtype (bf16,
// f16 or f32); router, biases and gate weights may also be f32. Reads only those tensors' bytes.
Result<LayerWeights> load_moe_layer(const Checkpoint& checkpoint, Architecture architecture,
                                    const LayerConfig& config, int layer);
// The dtype of layer `layer`'s stored routed expert weights under `architecture`'s names, when
// it is one a layer can have (bf16, f16, f32); nullopt otherwise or when they are not there.
std::optional<DType> stored_expert_dtype(const Checkpoint& checkpoint, Architecture architecture,
                                         int layer);
// The same with `model`'s architecture and layer config; refuses its dense layers by name.
Result<LayerWeights> load_moe_layer(const Checkpoint& checkpoint, const ModelConfig& model,
                                    int layer);
// The same from the checkpoint's config.json, with the layer dtype of the stored expert weights.
Result<LayerWeights> load_moe_layer(const Checkpoint& checkpoint, int layer);

}  // namespace fusedmoe
