// Comparing an output with a reference under CONTRACT.md's tolerances.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe {

// CONTRACT.md states tolerances for O(1) data: atol is for data of magnitude 1 and grows with the
// data's magnitude above that. An element that cancels to ~0 keeps the rounding error of the terms
// it came from, so the magnitude that scales atol is, per element, the sum of the absolute values
// of its terms when the reference reports it (ForwardArgs::magnitude_out), and never less than the
// reference's RMS.
struct Tolerance {
  double atol = 0;
  double rtol = 0;
  double global = 0;  // bound on ||out - ref|| / ||ref||
};

// CONTRACT.md's tolerance for results computed with `dtype` inputs and outputs.
Tolerance tolerance_for(DType dtype);

struct Comparison {
  std::int64_t elements = 0;
  std::int64_t failures = 0;    // elements outside atol + rtol·|ref|, NaN included
  std::int64_t non_finite = 0;  // NaN or Inf in `out` where `ref` is finite
  double max_abs_error = 0;
  double max_rel_error = 0;       // max |out - ref| / |ref| over |ref| > atol
  double global_rel_error = 0;    // ||out - ref||_2 / ||ref||_2
  std::int64_t worst_index = -1;  // flat index of the largest violation, -1 if none
  // The per-element atol: tolerance.atol x max(1, the reference's RMS), or, for an element whose
  // term magnitude m is given and larger, tolerance.atol x m (see element_atol).
  double atol = 0;
  bool passed = false;  // no failure and global_rel_error <= tolerance.global
  std::string summary() const;
};

// Both tensors on the CPU, same shape; `out` of any float dtype, `ref` f32 or the same.
// Rows listed in `skip_rows` (when non-null, [rows] of uint8) are left out. `magnitude`, when
// present, is f32 of the same shape: each element's term magnitude (ForwardArgs::magnitude_out).
Result<Comparison> compare(ConstTensorRef out, ConstTensorRef ref, Tolerance tolerance,
                           const std::uint8_t* skip_rows = nullptr, ConstTensorRef magnitude = {});

// The absolute tolerance of an element of term magnitude `magnitude` (0 if unknown) under a
// comparison whose base atol is `base_atol` (Comparison::atol). A magnitude that is not finite
// (overflowed to f32 infinity, or NaN) allows nothing beyond the base.
inline double element_atol(double base_atol, const Tolerance& tolerance, double magnitude) {
  const double scaled = tolerance.atol * magnitude;
  return scaled > base_atol && scaled < HUGE_VAL ? scaled : base_atol;
}

}  // namespace fusedmoe
