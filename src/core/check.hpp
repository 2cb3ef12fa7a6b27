// Host-side argument checks shared by every entry point: each returns a Status whose message
// names the argument ("experts.down", "x") and says what was expected and what was given.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

// Returns the status of `expr` from the enclosing function when it is not ok.
#define FUSEDMOE_RETURN_IF_ERROR(expr)         \
  do {                                         \
    ::fusedmoe::Status fusedmoe_s_ = (expr);   \
    if (!fusedmoe_s_.ok()) return fusedmoe_s_; \
  } while (0)

namespace fusedmoe::core {

struct TensorSpec {
  std::string_view name;
  std::initializer_list<std::int64_t> shape;  // expected sizes; -1 matches any size
  std::initializer_list<DType> dtypes;        // accepted dtypes
  Device device;
  bool unit_inner_stride = false;  // the last dimension must be contiguous
  bool distinct_elements = false;  // an output: no two elements may share memory
};

// A present tensor matching `spec`: rank, sizes, dtype, device, non-negative strides, data
// aligned to its element size, and non-null data unless it has no elements.
Status check_tensor(const ConstTensorRef& t, const TensorSpec& spec);
// As check_tensor, but an absent tensor is fine.
Status check_optional_tensor(const ConstTensorRef& t, const TensorSpec& spec);
// The tensor must be absent: `why` says which setting makes it meaningless.
Status check_absent(const ConstTensorRef& t, std::string_view name, std::string_view why);

std::string shape_string(std::initializer_list<std::int64_t> shape);

}  // namespace fusedmoe::core
