// Tensor maps (TMA descriptors) for the expert GEMMs' weights, encoded on the host through the
// driver entry point the runtime hands out (no link against libcuda).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe::cuda {

// A 2-D map over `rows` rows of `cols` 16-bit elements (contiguous, `cols` a multiple of 64), read
// in boxes of 64 columns x `box_rows` rows with the 128-byte swizzle: the layout of the GEMM
// mainloops' shared tiles. Rows past `rows` read as zeros.
// Whether the driver provides the encoder (cuTensorMapEncodeTiled, CUDA 12.0 and later).
bool tensor_maps_available();

Status encode_rows_map(CUtensorMap& map, DType dtype, const void* base, std::int64_t rows,
                       std::int64_t cols, int box_rows);

}  // namespace fusedmoe::cuda
