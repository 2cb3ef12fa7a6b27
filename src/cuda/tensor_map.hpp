// Tensor maps (TMA descriptors) for the expert GEMMs' weights, encoded on the host through the
// driver entry point the runtime hands out (no link against libcuda).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe::cuda {

// Whether the driver provides the encoder (cuTensorMapEncodeTiled, CUDA 12.0 and later).
bool tensor_maps_available();

// A 2-D map over `rows` rows of `cols` 16-bit elements (contiguous, `cols` a multiple of
// `box_cols`), read in boxes of `box_cols` columns (128 bytes at most) x `box_rows` rows with the
// 128-byte swizzle: the layout of the GEMM mainloops' shared tiles. Rows past `rows` read as
// zeros. The kernels address rows with 32-bit coordinates: more than INT_MAX rows is refused.
Status encode_rows_map(CUtensorMap& map, DType dtype, const void* base, std::int64_t rows,
                       std::int64_t cols, int box_cols, int box_rows);

}  // namespace fusedmoe::cuda
