// Random layers and inputs from a seed: what the tests, the benchmarks and `fusedmoe run` feed
// the layer. Host memory only. Values come from a counter-based generator, so the same seed gives
// the same data whatever the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fusedmoe/config.hpp"
#include "fusedmoe/tensor.hpp"
#include "fusedmoe/weights.hpp"

namespace fusedmoe {

enum class Fill : std::uint8_t {
  gaussian,  // N(0, scale²)
  integer,   // integers in [-4, 4] (GEMMs exact in fp32): for layout bugs, any difference is one
};

// A host buffer with a tensor view; move-only.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, std::initializer_list<std::int64_t> shape);
  HostTensor(const HostTensor&) = delete;
  HostTensor& operator=(const HostTensor&) = delete;
  HostTensor(HostTensor&& other) noexcept;
  HostTensor& operator=(HostTensor&& other) noexcept;
  ~HostTensor() = default;
  TensorRef ref() { return view_; }
  ConstTensorRef ref() const { return view_; }
  ConstTensorRef cref() const { return view_; }
  std::byte* bytes() { return storage_.data(); }
  std::size_t size_bytes() const { return storage_.size(); }
  // Fills with `fill`; `stream` separates tensors drawn from one seed.
  void randomize(Fill fill, std::uint64_t seed, std::uint64_t stream, float scale = 1.0f);
  // Sets every byte to 0xFF (a NaN pattern for f16, bf16 and f32): for "no poison survives".
  void poison();

 private:
  std::vector<std::byte> storage_;
  TensorRef view_;
};

struct WorkloadOptions {
  std::uint64_t seed = 1;
  Fill fill = Fill::gaussian;
  WeightLayout layout = WeightLayout::gate_up_rows;
};

// Random weights for a layer, in a chosen user layout. Move-only (view() points into it). Gaussian
// weights are scaled by 1/sqrt(fan_in) so that activations stay O(1) through the layer.
class HostWeights {
 public:
  static HostWeights random(const LayerConfig& config, const WorkloadOptions& options);
  HostWeights() = default;
  HostWeights(const HostWeights&) = delete;
  HostWeights& operator=(const HostWeights&) = delete;
  HostWeights(HostWeights&&) noexcept = default;
  HostWeights& operator=(HostWeights&&) noexcept = default;
  ~HostWeights() = default;
  // Views valid while this object lives.
  WeightSet view() const;
  std::size_t bytes() const;

  HostTensor router, router_bias, correction_bias;
  HostTensor gate_up, down, gate_up_bias, down_bias;
  std::vector<HostTensor> w1, w3, w2;  // separate layout
  HostTensor shared_gate, shared_up, shared_down, shared_gate_weight;

 private:
  WeightLayout layout_ = WeightLayout::gate_up_rows;
  std::vector<ConstTensorRef> w1_refs_, w3_refs_, w2_refs_;
};

// Routing that sends expert e a share proportional to 1 / rank(e)^s (s = 0: uniform), ranks a
// random permutation of the experts; each token gets k distinct experts. ids [T, k] int32,
// weights [T, k] f32 (positive, summing to 1 per token).
void zipf_routing(std::int64_t tokens, std::int64_t experts, std::int64_t k, double s,
                  std::uint64_t seed, TensorRef ids, TensorRef weights);

}  // namespace fusedmoe
