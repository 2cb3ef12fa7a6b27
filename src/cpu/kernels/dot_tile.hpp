// The CPU fast path's one compute kernel: a tile of dot products between activation rows and
// weight rows, fp32 accumulation, in the ISA the running CPU supports best (chosen at run time;
// nothing is compiled for the build machine).
//
// Batch invariance rests here: every output element is accumulated in an order that depends only
// on k and the ISA, never on m, n or where the pair sits in the tile.
#pragma once

#include <cstdint>
#include <string_view>

#include "fusedmoe/tensor.hpp"

namespace fusedmoe::cpu {

enum class Isa : std::uint8_t { portable, avx2, avx512, avx512_bf16 };

std::string_view to_string(Isa isa);

// c[i * ldc + j] = sum over h < k of a_rows[i][h] * b[j * ldb + h], for i < m, j < n.
// a_rows have a_dtype and b has b_dtype, each f32, f16 or bf16 in any combination (f32
// activations against bf16 weights, say); c is f32. m, n >= 0; k >= 0. Rows may be unaligned.
using DotTileFn = void (*)(DType a_dtype, const void* const* a_rows, int m, DType b_dtype,
                           const void* b, std::int64_t ldb, int n, std::int64_t k, float* c,
                           std::int64_t ldc);

struct Kernels {
  Isa isa;
  DotTileFn dot_tile;
};

// The best kernels this CPU runs. The environment variable FUSEDMOE_CPU_ISA (portable, avx2,
// avx512, avx512_bf16) caps the choice, for tests and comparisons.
const Kernels& kernels();
// The kernels of one ISA, or nullptr when this CPU (or this build) lacks it.
const Kernels* kernels_for(Isa isa);

}  // namespace fusedmoe::cpu
