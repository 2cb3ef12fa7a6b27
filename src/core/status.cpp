#include "fusedmoe/status.hpp"

namespace fusedmoe {

std::string_view to_string(StatusCode code) {
  switch (code) {
    case StatusCode::ok:
      return "ok";
    case StatusCode::invalid_argument:
      return "invalid_argument";
    case StatusCode::invalid_shape:
      return "invalid_shape";
    case StatusCode::invalid_dtype:
      return "invalid_dtype";
    case StatusCode::misaligned:
      return "misaligned";
    case StatusCode::null_pointer:
      return "null_pointer";
    case StatusCode::device_mismatch:
      return "device_mismatch";
    case StatusCode::unsupported_arch:
      return "unsupported_arch";
    case StatusCode::workspace_too_small:
      return "workspace_too_small";
    case StatusCode::unsupported_config:
      return "unsupported_config";
    case StatusCode::cuda_error:
      return "cuda_error";
    case StatusCode::out_of_memory:
      return "out_of_memory";
    case StatusCode::io_error:
      return "io_error";
  }
  return "unknown_status";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  std::string s(fusedmoe::to_string(code_));
  if (!message_.empty()) s += ": " + message_;
  return s;
}

}  // namespace fusedmoe
