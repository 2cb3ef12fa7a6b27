#include "core/check.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <string>
#include <utility>

namespace fusedmoe::core {

std::string shape_string(std::initializer_list<std::int64_t> shape) {
  std::string s = "[";
  bool first = true;
  for (std::int64_t d : shape) {
    if (!first) s += ", ";
    s += d < 0 ? std::string("*") : std::to_string(d);
    first = false;
  }
  return s + "]";
}

namespace {

// No two index tuples reach the same element: taken by increasing stride, every dimension of
// more than one element steps past the whole extent of the dimensions before it. (The extent is
// known to fit in int64 here.)
bool elements_distinct(const ConstTensorRef& t) {
  if (t.numel() <= 1) return true;
  std::array<std::pair<std::int64_t, std::int64_t>, kMaxRank> dims{};  // (stride, size)
  int n = 0;
  for (int d = 0; d < t.rank; ++d) {
    if (t.size(d) > 1) dims[static_cast<std::size_t>(n++)] = {t.stride(d), t.size(d)};
  }
  std::sort(dims.begin(), dims.begin() + n);
  std::int64_t extent = 1;  // elements spanned by the dimensions so far
  for (int i = 0; i < n; ++i) {
    const auto [stride, size] = dims[static_cast<std::size_t>(i)];
    if (stride < extent) return false;
    if (__builtin_mul_overflow(stride, size, &extent)) return false;
  }
  return true;
}

}  // namespace

Status check_tensor(const ConstTensorRef& t, const TensorSpec& spec) {
  const std::string name(spec.name);
  if (!t.present()) return {StatusCode::null_pointer, name + " is required but absent"};
  const int rank = static_cast<int>(spec.shape.size());
  bool shape_ok = t.rank == rank;
  int d = 0;
  for (std::int64_t want : spec.shape) {
    if (shape_ok && want >= 0 && t.size(d) != want) shape_ok = false;
    ++d;
  }
  if (shape_ok) {
    for (d = 0; d < t.rank; ++d) shape_ok = shape_ok && t.size(d) >= 0;
  }
  if (!shape_ok) {
    return {StatusCode::invalid_shape,
            name + " must be " + shape_string(spec.shape) + ", got " + describe(t)};
  }
  bool dtype_ok = false;
  std::string accepted;
  for (DType dt : spec.dtypes) {
    dtype_ok = dtype_ok || t.dtype == dt;
    if (!accepted.empty()) accepted += " or ";
    accepted += to_string(dt);
  }
  if (!dtype_ok) {
    return {StatusCode::invalid_dtype,
            name + " must be " + accepted + ", got " + std::string(to_string(t.dtype))};
  }
  if (!(t.device == spec.device)) {
    return {StatusCode::device_mismatch,
            name + " must be on " + to_string(spec.device) + ", got " + to_string(t.device)};
  }
  for (d = 0; d < t.rank; ++d) {
    if (t.stride(d) < 0) {
      return {StatusCode::invalid_shape, name + " has a negative stride in dimension " +
                                             std::to_string(d) + "; strides must be >= 0"};
    }
  }
  // The last element's byte offset must fit: no buffer is larger, and the kernels' address
  // arithmetic would overflow.
  std::int64_t last = 0;
  bool fits = true;
  for (d = 0; d < t.rank && fits && t.numel() > 0; ++d) {
    std::int64_t span = 0;
    fits = !__builtin_mul_overflow(t.size(d) - 1, t.stride(d), &span) &&
           !__builtin_add_overflow(last, span, &last);
  }
  if (!fits || last > std::numeric_limits<std::int64_t>::max() / 16) {
    return {StatusCode::invalid_shape,
            name + " " + describe(t) + " with these strides spans more memory than can exist"};
  }
  if (spec.distinct_elements && !elements_distinct(t)) {
    return {StatusCode::invalid_shape,
            name + " " + describe(t) +
                " has elements that share memory (a stride of 0, or overlapping rows): an output "
                "needs a place of its own for every element"};
  }
  if (spec.unit_inner_stride && rank > 0 && t.numel() > 0 && t.size(rank - 1) > 1 &&
      t.stride(rank - 1) != 1) {  // an empty tensor's strides mean nothing (DLPack may give 0)
    return {StatusCode::invalid_shape, name + " must have contiguous rows (stride(" +
                                           std::to_string(rank - 1) + ") == 1), got stride " +
                                           std::to_string(t.stride(rank - 1))};
  }
  if (t.numel() > 0 && t.data == nullptr) {
    return {StatusCode::null_pointer, name + " has " + describe(t) + " but a null data pointer"};
  }
  if (reinterpret_cast<std::uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
    return {StatusCode::misaligned, name + " data must be aligned to " +
                                        std::to_string(dtype_size(t.dtype)) + " bytes (" +
                                        std::string(to_string(t.dtype)) + ")"};
  }
  return {};
}

Status check_optional_tensor(const ConstTensorRef& t, const TensorSpec& spec) {
  return t.present() ? check_tensor(t, spec) : Status{};
}

Status check_absent(const ConstTensorRef& t, std::string_view name, std::string_view why) {
  if (!t.present()) return {};
  return {StatusCode::invalid_argument,
          std::string(name) + " was given but is not used: " + std::string(why)};
}

}  // namespace fusedmoe::core
