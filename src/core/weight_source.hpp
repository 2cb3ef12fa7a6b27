// A validated, layout-free view of the caller's weights: every backend's packer reads gate, up
// and down as matrices of rows, whatever layout (and strides) the caller stored them in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fusedmoe/config.hpp"
#include "fusedmoe/status.hpp"
#include "fusedmoe/weights.hpp"

namespace fusedmoe::core {

// rows x cols elements of one dtype at base + r * row_stride + c * col_stride (in elements).
struct MatrixView {
  const std::byte* base = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t row_stride = 0;
  std::int64_t col_stride = 0;
  DType dtype = DType::f32;

  bool present() const { return base != nullptr; }
  float at(std::int64_t r, std::int64_t c) const;
  // Copies row r's raw elements (same dtype) to dst, contiguous.
  void copy_row(std::int64_t r, void* dst) const;
  // Row r converted to f32.
  void row_f32(std::int64_t r, float* dst) const;
  // All rows, raw elements, contiguous [rows, cols].
  void copy_to(void* dst) const;
  // All rows converted to f32, contiguous [rows, cols]; empty when absent.
  std::vector<float> to_f32() const;
};

class WeightSource {
 public:
  // Checks every tensor the config needs (and that nothing it does not use is given).
  static Result<WeightSource> create(const LayerConfig& config, const WeightSet& weights,
                                     Device device);

  // Routed expert e: gate and up [I, H], down [H, I]; biases [1, I] / [1, H] (expert_bias).
  MatrixView gate(std::int64_t e) const;
  MatrixView up(std::int64_t e) const;
  MatrixView down(std::int64_t e) const;
  MatrixView gate_bias(std::int64_t e) const;
  MatrixView up_bias(std::int64_t e) const;
  MatrixView down_bias(std::int64_t e) const;
  // Router [E, H]; biases [1, E]; shared gate weight [1, H]. Absent views have base == nullptr.
  MatrixView router() const { return router_; }
  MatrixView router_bias() const { return router_bias_; }
  MatrixView correction_bias() const { return correction_bias_; }
  // Shared expert: gate and up [Is, H], down [H, Is], gate weight [1, H].
  MatrixView shared_gate() const { return shared_gate_; }
  MatrixView shared_up() const { return shared_up_; }
  MatrixView shared_down() const { return shared_down_; }
  MatrixView shared_gate_weight() const { return shared_gate_weight_; }

 private:
  LayerConfig config_;
  ExpertWeights experts_;
  std::vector<ConstTensorRef> w1_, w3_, w2_;
  MatrixView router_, router_bias_, correction_bias_;
  MatrixView shared_gate_, shared_up_, shared_down_, shared_gate_weight_;
};

}  // namespace fusedmoe::core
