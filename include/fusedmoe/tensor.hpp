// Non-owning tensor references: a pointer, a dtype, a device, a shape and strides (in elements).
// fusedmoe never takes ownership of caller memory; a default-constructed reference is "absent".
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>

namespace fusedmoe {

enum class DType : std::uint8_t { f32, f16, bf16, i32 };

std::size_t dtype_size(DType dtype);
std::string_view to_string(DType dtype);

enum class DeviceKind : std::uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;  // CUDA ordinal; 0 for the CPU

  static constexpr Device cpu() { return {}; }
  static constexpr Device cuda(int ordinal = 0) { return {DeviceKind::cuda, ordinal}; }
  friend constexpr bool operator==(Device, Device) = default;
};

std::string to_string(Device device);

inline constexpr int kMaxRank = 4;

template <class Ptr>
struct BasicTensorRef {
  Ptr data = nullptr;
  DType dtype = DType::f32;
  Device device{};
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::array<std::int64_t, kMaxRank> strides{};  // in elements, not bytes

  // A mutable reference is usable wherever a const one is expected.
  operator BasicTensorRef<const void*>() const  // NOLINT(google-explicit-constructor)
      requires(!std::is_same_v<Ptr, const void*>) {
    return {data, dtype, device, rank, shape, strides};
  }

  bool present() const { return data != nullptr || rank > 0; }
  std::int64_t size(int dim) const { return shape[static_cast<std::size_t>(dim)]; }
  std::int64_t stride(int dim) const { return strides[static_cast<std::size_t>(dim)]; }
  // Saturates at INT64_MAX: sizes are caller input and their product may not fit.
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int d = 0; d < rank && d < kMaxRank; ++d) {
      if (__builtin_mul_overflow(n, size(d), &n)) return INT64_MAX;
    }
    return n;
  }
  bool is_contiguous() const {
    std::int64_t expected = 1;
    for (int d = rank - 1; d >= 0; --d) {
      if (size(d) != 1 && stride(d) != expected) return false;
      expected *= size(d);
    }
    return true;
  }
};

using TensorRef = BasicTensorRef<void*>;
using ConstTensorRef = BasicTensorRef<const void*>;

// A contiguous (row-major) reference of the given shape.
template <class Ptr>
BasicTensorRef<Ptr> make_tensor(Ptr data, DType dtype, std::initializer_list<std::int64_t> shape,
                                Device device = {}) {
  BasicTensorRef<Ptr> t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.rank = static_cast<int>(shape.size() < kMaxRank ? shape.size() : kMaxRank);
  int d = 0;
  for (std::int64_t s : shape) {
    if (d == t.rank) break;
    t.shape[static_cast<std::size_t>(d++)] = s;
  }
  std::int64_t stride = 1;
  for (d = t.rank - 1; d >= 0; --d) {
    t.strides[static_cast<std::size_t>(d)] = stride;
    stride *= t.shape[static_cast<std::size_t>(d)];
  }
  return t;
}

// A 2-D reference whose rows are `row_stride` elements apart (row_stride >= cols).
template <class Ptr>
BasicTensorRef<Ptr> make_strided_rows(Ptr data, DType dtype, std::int64_t rows, std::int64_t cols,
                                      std::int64_t row_stride, Device device = {}) {
  BasicTensorRef<Ptr> t = make_tensor(data, dtype, {rows, cols}, device);
  t.strides[0] = row_stride;
  return t;
}

// "[3, 4096] bf16 on cpu"; "absent" for a default reference.
std::string describe(const ConstTensorRef& t);

}  // namespace fusedmoe
