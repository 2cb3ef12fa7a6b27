// A MoE layer: created once from a config and packed weights, then called with forward().
//
//   auto packed = fusedmoe::pack_weights(config, weights, fusedmoe::Backend::cpu);
//   auto layer = fusedmoe::Layer::create(config, std::move(packed.value()));
//   std::vector<std::byte> ws(layer->workspace_size(tokens));
//   fusedmoe::Status s = layer->forward({.x = x, .out = out, .workspace = {ws.data(), ws.size()}});
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fusedmoe/config.hpp"
#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"
#include "fusedmoe/weights.hpp"

namespace fusedmoe {

// Workspace memory must start at a multiple of this (operator new and cudaMalloc both do).
inline constexpr std::size_t kWorkspaceAlignment = 16;

struct Workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

struct ForwardArgs {
  // [T, H], layer dtype; rows may be strided (stride(1) must be 1). CUDA backend: when H is a
  // multiple of 8, x must start 16-byte aligned with a row stride that is a multiple of 8.
  ConstTensorRef x;
  TensorRef out;  // [T, H], layer dtype (or f32 on the reference backend); fully written
  Workspace
      workspace;  // workspace_size(T) bytes on the backend's device, kWorkspaceAlignment-aligned
  // RoutingKind::precomputed only: ids [T, k] int32 and weights [T, k] f32. An id outside
  // [0, E) contributes zero for its slot and is counted (see Layer::take_invalid_id_count).
  ConstTensorRef topk_ids;
  ConstTensorRef topk_weights;
  // Optional: the chosen ids [T, k] int32 and routing weights [T, k] f32, written when present.
  TensorRef ids_out;
  TensorRef weights_out;
  // Optional, reference backend only: [T, H] f32, for each output element the sum of the absolute
  // values of the terms it adds up (routing weight x activation x down weight over every slot and
  // intermediate column, the down biases, and the shared expert's terms times its gate). Rounding
  // of the activations, the weights and the down projection leaves an error proportional to it
  // (not rounding inside the gate and up dot products, which scales with their own terms), so it
  // is the scale that compare() judges an element's absolute error by. Other backends refuse it.
  TensorRef magnitude_out;
  void* stream = nullptr;  // CUDA backend: the cudaStream_t to run on (nullptr: default stream)
};

class Layer {
 public:
  struct Impl;

  static Result<Layer> create(const LayerConfig& config, PackedWeights&& weights);

  Layer(Layer&&) noexcept;
  Layer& operator=(Layer&&) noexcept;
  ~Layer();

  const LayerConfig& config() const;
  Backend backend() const;
  // Bytes of workspace forward() needs for `tokens` rows; a pure function of config and tokens.
  // SIZE_MAX when T · top_k >= 2^31 (forward refuses such a T with invalid_shape).
  std::size_t workspace_size(std::int64_t tokens) const;
  // What forward runs for `tokens` rows, in words, for logs and benchmark records: the CUDA
  // backend's GEMM tiles and mainloops, the CPU backend's instruction set. Not a stable format;
  // empty where workspace_size is 0 or SIZE_MAX.
  std::string describe(std::int64_t tokens) const;

  // Computes out = MoE(x). Deterministic, and a token's output does not depend on the other
  // tokens of the batch. Safe to call from several threads with distinct workspaces and outputs.
  // T = 0 returns ok and does nothing. On error the caller's tensors are left untouched.
  Status forward(const ForwardArgs& args) const;
  // Convenience: forward with a workspace owned by the layer (grown as needed). Not thread-safe.
  Status forward(ConstTensorRef x, TensorRef out);

  // Precomputed ids outside [0, E) seen since the last call; resets the count.
  std::int64_t take_invalid_id_count() const;

 private:
  explicit Layer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fusedmoe
