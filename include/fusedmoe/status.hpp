// Typed statuses returned by every public entry point. Nothing in fusedmoe aborts the process:
// bad input comes back as a Status whose message names the argument and what was expected.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace fusedmoe {

enum class StatusCode : int {
  ok = 0,
  invalid_argument = 1,     // a value out of its domain (unknown name, bad enum, NaN parameter)
  invalid_shape = 2,        // wrong rank or size of a tensor, or sizes that disagree
  invalid_dtype = 3,        // a dtype, or a mix of dtypes, that is not supported
  misaligned = 4,           // a pointer or stride not aligned as the kernels need
  null_pointer = 5,         // a required tensor has no data
  device_mismatch = 6,      // a tensor lives on another device than the backend computes on
  unsupported_arch = 7,     // the backend is not built in, or the GPU is too old
  workspace_too_small = 8,  // the caller's workspace is smaller than workspace_size()
  unsupported_config = 9,   // a layer configuration fusedmoe cannot compute (k > E, ...)
  cuda_error = 10,          // a CUDA runtime or driver call failed
  out_of_memory = 11,       // an allocation failed
  io_error = 12,            // a file could not be read or parsed
};

// The code's name, e.g. "invalid_shape".
std::string_view to_string(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::ok; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid_shape: x must be [T, 4096], got [3, 4095]"; "ok" when ok.
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::ok;
  std::string message_;
};

// Either a value or the Status that explains why there is none.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  // Precondition: ok(). Accessing the value of a failed result throws std::bad_optional_access.
  T& value() & { return value_.value(); }
  const T& value() const& { return value_.value(); }
  T&& value() && { return std::move(value_).value(); }
  T* operator->() { return &value_.value(); }
  const T* operator->() const { return &value_.value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace fusedmoe
