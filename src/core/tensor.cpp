#include "fusedmoe/tensor.hpp"

namespace fusedmoe {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 4;
    case DType::f16:
      return 2;
    case DType::bf16:
      return 2;
    case DType::i32:
      return 4;
  }
  return 0;
}

std::string_view to_string(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "f32";
    case DType::f16:
      return "f16";
    case DType::bf16:
      return "bf16";
    case DType::i32:
      return "i32";
  }
  return "unknown_dtype";
}

std::string to_string(Device device) {
  if (device.kind == DeviceKind::cpu) return "cpu";
  return "cuda:" + std::to_string(device.index);
}

std::string describe(const ConstTensorRef& t) {
  if (!t.present()) return "absent";
  if (t.rank < 0 || t.rank > kMaxRank) return "rank " + std::to_string(t.rank) + " (not in [0, 4])";
  std::string s = "[";
  for (int d = 0; d < t.rank; ++d) {
    if (d > 0) s += ", ";
    s += std::to_string(t.size(d));
  }
  s += "] ";
  s += to_string(t.dtype);
  s += " on ";
  s += to_string(t.device);
  return s;
}

}  // namespace fusedmoe
