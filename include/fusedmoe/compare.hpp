// Comparing an output with a reference under CONTRACT.md's tolerances.
#pragma once

#include <cstdint>
#include <string>

#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe {

// CONTRACT.md states tolerances for O(1) data: atol is for a reference of RMS 1 and grows with
// the reference's RMS above that (an element that cancels to ~0 keeps the rounding error of the
// terms it came from, which scale with the data).
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
  double atol = 0;  // the per-element atol applied: tolerance.atol x max(1, the reference's RMS)
  bool passed = false;  // no failure and global_rel_error <= tolerance.global
  std::string summary() const;
};

// Both tensors on the CPU, same shape; `out` of any float dtype, `ref` f32 or the same.
// Rows listed in `skip_rows` (when non-null, [rows] of uint8) are left out.
Result<Comparison> compare(ConstTensorRef out, ConstTensorRef ref, Tolerance tolerance,
                           const std::uint8_t* skip_rows = nullptr);

}  // namespace fusedmoe
