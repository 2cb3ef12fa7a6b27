#include "fusedmoe/compare.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/check.hpp"
#include "core/half.hpp"

namespace fusedmoe {

Tolerance tolerance_for(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return {1e-5, 1e-5, 1e-6};
    case DType::f16:
      return {1e-5, 1e-3, 2e-3};
    case DType::bf16:
      return {1e-5, 1.6e-2, 1e-2};
    case DType::i32:
      return {0, 0, 0};
  }
  return {};
}

std::string Comparison::summary() const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%s: %lld/%lld elements out of tolerance, %lld non-finite, max abs %.3g, max rel "
                "%.3g, global rel %.3g",
                passed ? "pass" : "FAIL", static_cast<long long>(failures),
                static_cast<long long>(elements), static_cast<long long>(non_finite), max_abs_error,
                max_rel_error, global_rel_error);
  return buf;
}

Result<Comparison> compare(ConstTensorRef out, ConstTensorRef ref, Tolerance tol,
                           const std::uint8_t* skip_rows, ConstTensorRef magnitude) {
  if (out.rank < 1 || out.rank > 2 || ref.rank != out.rank || out.size(0) != ref.size(0) ||
      (out.rank == 2 && out.size(1) != ref.size(1))) {
    return Status{StatusCode::invalid_shape,
                  "compare needs two [rows] or [rows, cols] tensors of one shape, got " +
                      describe(out) + " and " + describe(ref)};
  }
  for (const auto* t : {&out, &ref}) {
    if (t->device.kind != DeviceKind::cpu) {
      return Status{StatusCode::device_mismatch, "compare reads host tensors only"};
    }
    if (t->dtype == DType::i32) return Status{StatusCode::invalid_dtype, "compare needs floats"};
    if (t->numel() > 0 && t->data == nullptr) {
      return Status{StatusCode::null_pointer, "compare got a null tensor"};
    }
  }
  if (magnitude.present()) {
    if (magnitude.rank != ref.rank || magnitude.size(0) != ref.size(0) ||
        (ref.rank == 2 && magnitude.size(1) != ref.size(1))) {
      return Status{StatusCode::invalid_shape,
                    "compare's magnitude must have the reference's "
                    "shape, got " +
                        describe(magnitude)};
    }
    if (magnitude.numel() > 0 && magnitude.data == nullptr) {
      return Status{StatusCode::null_pointer, "compare got a null magnitude tensor"};
    }
    if (magnitude.device.kind != DeviceKind::cpu) {
      return Status{StatusCode::device_mismatch, "compare reads host tensors only"};
    }
    if (magnitude.dtype != DType::f32) {
      return Status{StatusCode::invalid_dtype,
                    "compare's magnitude must be f32, got " + describe(magnitude)};
    }
  }
  Comparison c;
  const std::int64_t rows = out.size(0), cols = out.rank == 2 ? out.size(1) : 1;
  // element (r, col) of any of the [rows] or [rows, cols] tensors compared
  const auto at = [](const ConstTensorRef& t, std::int64_t r, std::int64_t col) -> double {
    return core::load_f32(t.dtype, t.data, r * t.stride(0) + (t.rank == 2 ? col * t.stride(1) : 0));
  };
  const auto ref_at = [&](std::int64_t r, std::int64_t col) { return at(ref, r, col); };
  // the reference's RMS over the compared, finite elements scales atol (see Tolerance)
  double sum2 = 0;
  std::int64_t counted = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (skip_rows != nullptr && skip_rows[r] != 0) continue;
    for (std::int64_t col = 0; col < cols; ++col) {
      const double f = ref_at(r, col);
      if (std::isfinite(f)) {
        sum2 += f * f;
        ++counted;
      }
    }
  }
  const double rms = counted > 0 ? std::sqrt(sum2 / static_cast<double>(counted)) : 0.0;
  const double atol = tol.atol * std::max(1.0, rms);
  c.atol = atol;
  double err2 = 0, ref2 = 0, worst = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (skip_rows != nullptr && skip_rows[r] != 0) continue;
    for (std::int64_t col = 0; col < cols; ++col) {
      const double o = at(out, r, col);
      const double f = ref_at(r, col);
      ++c.elements;
      if (!std::isfinite(f)) {
        // a non-finite reference (NaN input rows) must be matched in kind
        const bool same = (std::isnan(f) && std::isnan(o)) || o == f;
        if (!same) ++c.failures;
        continue;
      }
      if (!std::isfinite(o)) {
        ++c.non_finite;
        ++c.failures;
        c.worst_index = r * cols + col;
        worst = INFINITY;
        continue;
      }
      const double d = std::abs(o - f);
      const double m = magnitude.present() ? at(magnitude, r, col) : 0.0;
      const double allowed = element_atol(atol, tol, m) + tol.rtol * std::abs(f);
      err2 += d * d;
      ref2 += f * f;
      c.max_abs_error = std::max(c.max_abs_error, d);
      if (std::abs(f) > atol) c.max_rel_error = std::max(c.max_rel_error, d / std::abs(f));
      if (d > allowed) {
        ++c.failures;
        if (d / allowed > worst) {
          worst = d / allowed;
          c.worst_index = r * cols + col;
        }
      }
    }
  }
  c.global_rel_error = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  c.passed = c.failures == 0 && c.global_rel_error <= tol.global;
  return c;
}

}  // namespace fusedmoe
