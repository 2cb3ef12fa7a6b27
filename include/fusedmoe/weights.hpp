// Weights as users hold them, and pack_weights(), which turns any supported layout into the
// layout one backend's kernels want. Packing happens once, before the layer is created; the
// caller's tensors are only read and may be freed afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "fusedmoe/config.hpp"
#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe {

// How the routed experts' gate, up and down projections are stored. The gate/up order is always
// stated by the caller, never guessed from shapes.
enum class WeightLayout : std::uint8_t {
  gate_up_rows,      // gate_up [E, 2I, H], gate rows then up rows; down [E, H, I] (vLLM, HF v5)
  up_gate_rows,      // gate_up [E, 2I, H], up rows then gate rows; down [E, H, I] (FlashInfer)
  interleaved_cols,  // gate_up [E, H, 2I], column 2i gate, 2i+1 up; down [E, I, H] (gpt-oss)
  separate,          // per expert w1 (gate) [I, H], w3 (up) [I, H], w2 (down) [H, I] (older HF)
};

std::string_view to_string(WeightLayout layout);

struct ExpertWeights {
  WeightLayout layout = WeightLayout::gate_up_rows;
  ConstTensorRef gate_up;  // fused layouts
  ConstTensorRef down;     // fused layouts
  // separate layout: one tensor per expert in each span (E entries each)
  std::span<const ConstTensorRef> w1;
  std::span<const ConstTensorRef> w3;
  std::span<const ConstTensorRef> w2;
  // config.expert_bias only: [E, 2I] in the same gate/up order as gate_up (for `separate`, gate
  // then up), and [E, H].
  ConstTensorRef gate_up_bias;
  ConstTensorRef down_bias;
};

struct RouterWeights {
  ConstTensorRef weight;           // [E, H] (nn.Linear layout); f32 or the layer dtype
  ConstTensorRef bias;             // [E], routing.router_bias only
  ConstTensorRef correction_bias;  // [E], routing.correction_bias only (DeepSeek-V3)
};

struct SharedExpertWeights {
  ConstTensorRef gate;         // [Is, H]
  ConstTensorRef up;           // [Is, H]
  ConstTensorRef down;         // [H, Is]
  ConstTensorRef gate_weight;  // [1, H] or [H], shared.gated only; f32 or the layer dtype
};

struct WeightSet {
  RouterWeights router;  // not needed for RoutingKind::precomputed
  ExpertWeights experts;
  SharedExpertWeights shared;  // only when config.shared.intermediate > 0
};

enum class Backend : std::uint8_t {
  reference,  // naive loops, fp64 accumulation: the oracle, slow on purpose
  cpu,        // the fast CPU path: all cores, SIMD chosen at run time
  cuda,       // NVIDIA GPUs
};

std::string_view to_string(Backend backend);
// Whether this build, on this machine, can run the backend (CUDA: built in and a GPU present).
bool backend_available(Backend backend);
// The fastest available backend: cuda when available, else cpu.
Backend best_backend();

// Weights in one backend's own layout. Move-only; owns its memory.
class PackedWeights {
 public:
  struct Impl;
  PackedWeights();
  explicit PackedWeights(std::unique_ptr<Impl> impl);
  PackedWeights(PackedWeights&&) noexcept;
  PackedWeights& operator=(PackedWeights&&) noexcept;
  ~PackedWeights();

  Backend backend() const;
  std::size_t bytes() const;  // memory held
  const Impl* impl() const { return impl_.get(); }

 private:
  std::unique_ptr<Impl> impl_;
};

// Validates `weights` against `config` (shapes, dtypes, devices, presence) and repacks them for
// `backend`. Expert weights must have the layer dtype; router and gate weights may be f32.
// The weights are read from host memory for every backend (the CUDA backend packs on the host and
// copies the result to the current GPU, which forward then runs on); the caller's tensors are not
// kept. The CUDA backend computes in bf16 or f16 only.
Result<PackedWeights> pack_weights(const LayerConfig& config, const WeightSet& weights,
                                   Backend backend);

}  // namespace fusedmoe
