// One entry point per ISA translation unit, each a DotTileFn (see dot_tile.hpp). Each is
// compiled with its own -m flags, so it may only be called once dot_tile.cpp has checked that
// the running CPU supports that ISA.
#pragma once

#include <cstdint>

#include "cpu/kernels/dot_tile.hpp"

namespace fusedmoe::cpu::detail {

void dot_tile_portable(DType a_dtype, const void* const* a_rows, int m, DType b_dtype,
                       const void* b, std::int64_t ldb, int n, std::int64_t k, float* c,
                       std::int64_t ldc);
void dot_tile_avx2(DType a_dtype, const void* const* a_rows, int m, DType b_dtype, const void* b,
                   std::int64_t ldb, int n, std::int64_t k, float* c, std::int64_t ldc);
void dot_tile_avx512(DType a_dtype, const void* const* a_rows, int m, DType b_dtype, const void* b,
                     std::int64_t ldb, int n, std::int64_t k, float* c, std::int64_t ldc);
void dot_tile_avx512bf16(DType a_dtype, const void* const* a_rows, int m, DType b_dtype,
                         const void* b, std::int64_t ldb, int n, std::int64_t k, float* c,
                         std::int64_t ldc);

}  // namespace fusedmoe::cpu::detail
