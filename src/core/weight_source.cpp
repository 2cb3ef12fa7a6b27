#include "core/weight_source.hpp"

#include <cstring>
#include <string>

#include "core/check.hpp"
#include "core/half.hpp"

namespace fusedmoe::core {

float MatrixView::at(std::int64_t r, std::int64_t c) const {
  return load_f32(dtype, base, r * row_stride + c * col_stride);
}

void MatrixView::copy_row(std::int64_t r, void* dst) const {
  const std::size_t es = dtype_size(dtype);
  const std::byte* src = base + static_cast<std::size_t>(r * row_stride) * es;
  if (col_stride == 1) {
    std::memcpy(dst, src, static_cast<std::size_t>(cols) * es);
    return;
  }
  auto* out = static_cast<std::byte*>(dst);
  for (std::int64_t c = 0; c < cols; ++c) {
    std::memcpy(out + static_cast<std::size_t>(c) * es,
                src + static_cast<std::size_t>(c * col_stride) * es, es);
  }
}

void MatrixView::row_f32(std::int64_t r, float* dst) const {
  for (std::int64_t c = 0; c < cols; ++c) dst[c] = at(r, c);
}

void MatrixView::copy_to(void* dst) const {
  const std::size_t row_bytes = static_cast<std::size_t>(cols) * dtype_size(dtype);
  for (std::int64_t r = 0; r < rows; ++r) {
    copy_row(r, static_cast<std::byte*>(dst) + static_cast<std::size_t>(r) * row_bytes);
  }
}

std::vector<float> MatrixView::to_f32() const {
  if (!present()) return {};
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r) row_f32(r, out.data() + r * cols);
  return out;
}

namespace {

// The 2-D slice t[index, :, :] (rank 3) or t itself (rank 2) as a matrix. `transposed` swaps
// the two matrix dimensions; then rows row_offset, row_offset + row_step, ... (`rows` of them,
// -1: all) are kept.
MatrixView slice(const ConstTensorRef& t, std::int64_t index, bool transposed,
                 std::int64_t row_offset = 0, std::int64_t rows = -1, std::int64_t row_step = 1) {
  if (!t.present()) return {};
  const int r = t.rank == 3 ? 1 : 0;  // first of the two matrix dimensions
  std::int64_t row_stride = t.stride(r), col_stride = t.stride(r + 1);
  std::int64_t nrows = t.size(r), ncols = t.size(r + 1);
  if (transposed) {
    std::swap(row_stride, col_stride);
    std::swap(nrows, ncols);
  }
  const std::int64_t offset = (t.rank == 3 ? index * t.stride(0) : 0) + row_offset * row_stride;
  MatrixView m;
  m.base = static_cast<const std::byte*>(t.data) +
           offset * static_cast<std::int64_t>(dtype_size(t.dtype));
  m.rows = rows >= 0 ? rows : nrows;
  m.cols = ncols;
  m.row_stride = row_stride * row_step;
  m.col_stride = col_stride;
  m.dtype = t.dtype;
  return m;
}

// A vector [n] or [1, n], or row `index` of a matrix [E, n], as a [1, count] matrix of the
// elements offset, offset + step, ... (count -1: to the end).
MatrixView vector_view(const ConstTensorRef& t, std::int64_t index = 0, std::int64_t offset = 0,
                       std::int64_t count = -1, std::int64_t step = 1) {
  if (!t.present()) return {};
  MatrixView m;
  const int last = t.rank - 1;
  const std::int64_t row = t.rank == 2 && t.size(0) > 1 ? index * t.stride(0) : 0;
  m.base = static_cast<const std::byte*>(t.data) +
           (row + offset * t.stride(last)) * static_cast<std::int64_t>(dtype_size(t.dtype));
  m.rows = 1;
  m.cols = count >= 0 ? count : t.size(last);
  m.row_stride = 0;
  m.col_stride = t.stride(last) * step;
  m.dtype = t.dtype;
  return m;
}

Status check_experts(const LayerConfig& c, const ExpertWeights& w, Device dev) {
  const std::int64_t e = c.experts, h = c.hidden, i = c.intermediate;
  const DType dt = c.dtype;
  switch (w.layout) {
    case WeightLayout::gate_up_rows:
    case WeightLayout::up_gate_rows:
      FUSEDMOE_RETURN_IF_ERROR(
          check_tensor(w.gate_up, {"experts.gate_up", {e, 2 * i, h}, {dt}, dev}));
      FUSEDMOE_RETURN_IF_ERROR(check_tensor(w.down, {"experts.down", {e, h, i}, {dt}, dev}));
      break;
    case WeightLayout::interleaved_cols:
      FUSEDMOE_RETURN_IF_ERROR(
          check_tensor(w.gate_up, {"experts.gate_up", {e, h, 2 * i}, {dt}, dev}));
      FUSEDMOE_RETURN_IF_ERROR(check_tensor(w.down, {"experts.down", {e, i, h}, {dt}, dev}));
      break;
    case WeightLayout::separate: {
      for (auto [span, name] : {std::pair{w.w1, "experts.w1"}, std::pair{w.w3, "experts.w3"},
                                std::pair{w.w2, "experts.w2"}}) {
        if (static_cast<std::int64_t>(span.size()) != e) {
          return {StatusCode::invalid_shape,
                  std::string(name) + " must hold one tensor per expert (" + std::to_string(e) +
                      "), got " + std::to_string(span.size())};
        }
      }
      for (std::int64_t x = 0; x < e; ++x) {
        const std::string n = "[" + std::to_string(x) + "]";
        const auto at = static_cast<std::size_t>(x);
        FUSEDMOE_RETURN_IF_ERROR(check_tensor(w.w1[at], {"experts.w1" + n, {i, h}, {dt}, dev}));
        FUSEDMOE_RETURN_IF_ERROR(check_tensor(w.w3[at], {"experts.w3" + n, {i, h}, {dt}, dev}));
        FUSEDMOE_RETURN_IF_ERROR(check_tensor(w.w2[at], {"experts.w2" + n, {h, i}, {dt}, dev}));
      }
      break;
    }
    default:
      return {StatusCode::invalid_argument, "experts.layout is not a WeightLayout"};
  }
  if (w.layout == WeightLayout::separate) {
    FUSEDMOE_RETURN_IF_ERROR(check_absent(w.gate_up, "experts.gate_up", "layout is separate"));
    FUSEDMOE_RETURN_IF_ERROR(check_absent(w.down, "experts.down", "layout is separate"));
  } else if (!w.w1.empty() || !w.w3.empty() || !w.w2.empty()) {
    return {StatusCode::invalid_argument,
            "experts.w1/w3/w2 were given but the layout is " + std::string(to_string(w.layout))};
  }
  if (c.expert_bias) {
    FUSEDMOE_RETURN_IF_ERROR(
        check_tensor(w.gate_up_bias, {"experts.gate_up_bias", {e, 2 * i}, {DType::f32, dt}, dev}));
    FUSEDMOE_RETURN_IF_ERROR(
        check_tensor(w.down_bias, {"experts.down_bias", {e, h}, {DType::f32, dt}, dev}));
  } else {
    FUSEDMOE_RETURN_IF_ERROR(
        check_absent(w.gate_up_bias, "experts.gate_up_bias", "config.expert_bias is false"));
    FUSEDMOE_RETURN_IF_ERROR(
        check_absent(w.down_bias, "experts.down_bias", "config.expert_bias is false"));
  }
  return {};
}

Status check_router(const LayerConfig& c, const RouterWeights& r, Device dev) {
  const std::int64_t e = c.experts;
  const Routing& rt = c.routing;
  if (rt.kind == RoutingKind::precomputed) {
    FUSEDMOE_RETURN_IF_ERROR(check_absent(r.weight, "router.weight", "routing is precomputed"));
  } else {
    FUSEDMOE_RETURN_IF_ERROR(
        check_tensor(r.weight, {"router.weight", {e, c.hidden}, {DType::f32, c.dtype}, dev}));
  }
  if (rt.router_bias) {
    FUSEDMOE_RETURN_IF_ERROR(
        check_tensor(r.bias, {"router.bias", {e}, {DType::f32, c.dtype}, dev}));
  } else {
    FUSEDMOE_RETURN_IF_ERROR(check_absent(r.bias, "router.bias", "routing.router_bias is false"));
  }
  if (rt.correction_bias) {
    FUSEDMOE_RETURN_IF_ERROR(check_tensor(
        r.correction_bias, {"router.correction_bias", {e}, {DType::f32, c.dtype}, dev}));
  } else {
    FUSEDMOE_RETURN_IF_ERROR(check_absent(r.correction_bias, "router.correction_bias",
                                          "routing.correction_bias is false"));
  }
  return {};
}

Status check_shared(const LayerConfig& c, const SharedExpertWeights& s, Device dev) {
  const std::int64_t is = c.shared.intermediate, h = c.hidden;
  if (is == 0) {
    for (auto [t, name] :
         {std::pair{s.gate, "shared.gate"}, std::pair{s.up, "shared.up"},
          std::pair{s.down, "shared.down"}, std::pair{s.gate_weight, "shared.gate_weight"}}) {
      FUSEDMOE_RETURN_IF_ERROR(check_absent(t, name, "config has no shared expert"));
    }
    return {};
  }
  FUSEDMOE_RETURN_IF_ERROR(check_tensor(s.gate, {"shared.gate", {is, h}, {c.dtype}, dev}));
  FUSEDMOE_RETURN_IF_ERROR(check_tensor(s.up, {"shared.up", {is, h}, {c.dtype}, dev}));
  FUSEDMOE_RETURN_IF_ERROR(check_tensor(s.down, {"shared.down", {h, is}, {c.dtype}, dev}));
  if (!c.shared.gated) {
    return check_absent(s.gate_weight, "shared.gate_weight", "config.shared.gated is false");
  }
  if (s.gate_weight.rank == 1) {
    return check_tensor(s.gate_weight, {"shared.gate_weight", {h}, {DType::f32, c.dtype}, dev});
  }
  return check_tensor(s.gate_weight, {"shared.gate_weight", {1, h}, {DType::f32, c.dtype}, dev});
}

}  // namespace

Result<WeightSource> WeightSource::create(const LayerConfig& config, const WeightSet& weights,
                                          Device device) {
  FUSEDMOE_RETURN_IF_ERROR(validate(config));
  FUSEDMOE_RETURN_IF_ERROR(check_experts(config, weights.experts, device));
  FUSEDMOE_RETURN_IF_ERROR(check_router(config, weights.router, device));
  FUSEDMOE_RETURN_IF_ERROR(check_shared(config, weights.shared, device));
  WeightSource s;
  s.config_ = config;
  s.experts_ = weights.experts;
  // Keep our own copies of the per-expert reference lists: the spans may not outlive this call.
  s.w1_.assign(weights.experts.w1.begin(), weights.experts.w1.end());
  s.w3_.assign(weights.experts.w3.begin(), weights.experts.w3.end());
  s.w2_.assign(weights.experts.w2.begin(), weights.experts.w2.end());
  s.experts_.w1 = {};
  s.experts_.w3 = {};
  s.experts_.w2 = {};
  s.router_ = slice(weights.router.weight, 0, false);
  s.router_bias_ = vector_view(weights.router.bias);
  s.correction_bias_ = vector_view(weights.router.correction_bias);
  s.shared_gate_ = slice(weights.shared.gate, 0, false);
  s.shared_up_ = slice(weights.shared.up, 0, false);
  s.shared_down_ = slice(weights.shared.down, 0, false);
  s.shared_gate_weight_ = vector_view(weights.shared.gate_weight);
  return s;
}

MatrixView WeightSource::gate(std::int64_t e) const {
  const std::int64_t i = config_.intermediate;
  switch (experts_.layout) {
    case WeightLayout::gate_up_rows:
      return slice(experts_.gate_up, e, false, 0, i);
    case WeightLayout::up_gate_rows:
      return slice(experts_.gate_up, e, false, i, i);
    case WeightLayout::interleaved_cols:
      return slice(experts_.gate_up, e, true, 0, i, 2);
    case WeightLayout::separate:
      return slice(w1_[static_cast<std::size_t>(e)], 0, false);
  }
  return {};
}

MatrixView WeightSource::up(std::int64_t e) const {
  const std::int64_t i = config_.intermediate;
  switch (experts_.layout) {
    case WeightLayout::gate_up_rows:
      return slice(experts_.gate_up, e, false, i, i);
    case WeightLayout::up_gate_rows:
      return slice(experts_.gate_up, e, false, 0, i);
    case WeightLayout::interleaved_cols:
      return slice(experts_.gate_up, e, true, 1, i, 2);
    case WeightLayout::separate:
      return slice(w3_[static_cast<std::size_t>(e)], 0, false);
  }
  return {};
}

MatrixView WeightSource::down(std::int64_t e) const {
  switch (experts_.layout) {
    case WeightLayout::interleaved_cols:
      return slice(experts_.down, e, true);
    case WeightLayout::separate:
      return slice(w2_[static_cast<std::size_t>(e)], 0, false);
    default:
      return slice(experts_.down, e, false);
  }
}

MatrixView WeightSource::gate_bias(std::int64_t e) const {
  const std::int64_t i = config_.intermediate;
  switch (experts_.layout) {
    case WeightLayout::up_gate_rows:
      return vector_view(experts_.gate_up_bias, e, i, i);
    case WeightLayout::interleaved_cols:
      return vector_view(experts_.gate_up_bias, e, 0, i, 2);
    default:
      return vector_view(experts_.gate_up_bias, e, 0, i);
  }
}

MatrixView WeightSource::up_bias(std::int64_t e) const {
  const std::int64_t i = config_.intermediate;
  switch (experts_.layout) {
    case WeightLayout::up_gate_rows:
      return vector_view(experts_.gate_up_bias, e, 0, i);
    case WeightLayout::interleaved_cols:
      return vector_view(experts_.gate_up_bias, e, 1, i, 2);
    default:
      return vector_view(experts_.gate_up_bias, e, i, i);
  }
}

MatrixView WeightSource::down_bias(std::int64_t e) const {
  return vector_view(experts_.down_bias, e);
}

}  // namespace fusedmoe::core
