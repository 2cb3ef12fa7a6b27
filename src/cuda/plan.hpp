// The CUDA backend's plan for one forward: tile shapes, grids and the workspace layout. Plain host
// code (no CUDA), a pure function of (config, tokens), so that workspace_size() is too and the
// heuristics are unit-tested on any machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "fusedmoe/config.hpp"

namespace fusedmoe::cuda {

// The expert-GEMM tile shapes that ship (gemm/sm80/): rows x columns per block.
enum class GemmTile : std::uint8_t {
  m16n64,    // decode: a handful of rows per expert; many narrow blocks stream the weights
  m64n128,   // tens of rows per expert
  m128n128,  // prefill: hundreds of rows per expert
};

int tile_rows(GemmTile tile);
int tile_cols(GemmTile tile);

std::string_view to_string(GemmTile tile);
std::optional<GemmTile> parse_tile(std::string_view name);

// The tile for `rows` rows spread over `groups` experts (the expected rows per expert decides).
GemmTile choose_tile(std::int64_t rows, std::int64_t groups);

// FUSEDMOE_CUDA_TILE=m16n64|m64n128|m128n128 forces the routed experts' tile, for tuning runs
// (read once per process; workspace sizes follow it).
std::optional<GemmTile> forced_tile();

inline constexpr std::int64_t kKAlign =
    128;  // packed hidden size: a multiple of every tile's BN and BK
inline constexpr std::int64_t kIAlign = 64;  // packed intermediate size: a multiple of BK and BN/2
inline constexpr std::int64_t kRouterSlice =
    256;  // router H-slice (kernels/router/router_logits.cuh)

std::int64_t round_up(std::int64_t v, std::int64_t m);

// Byte offsets into the workspace (every region 256-byte aligned); `none` = not used.
struct WorkspaceLayout {
  static constexpr std::size_t none = ~std::size_t{0};
  std::size_t partial = none;      // f32 [slices, T, L] router partial sums
  std::size_t ids = none;          // i32 [T, k]
  std::size_t weights = none;      // f32 [T, k]
  std::size_t shared_gate = none;  // f32 [T]
  std::size_t offsets = none;      // i32 [E + 1], then the tile count
  std::size_t tiles = none;        // int2 [tile_capacity]
  std::size_t perm = none;         // i32 [T·k]
  std::size_t pos = none;          // i32 [T·k]
  std::size_t x_stage = none;      // elem [T, hidden_pad]: only when H is not a multiple of 8
  std::size_t act = none;          // elem [2][T·k, inter_pad]: hi and lo planes
  std::size_t y = none;            // f32 [T·k, hidden_pad]
  std::size_t shared_act = none;   // elem [2][T, shared_pad]
  std::size_t shared_y = none;     // f32 [T, hidden_pad]
  std::size_t bytes = 0;
};

struct Plan {
  std::int64_t tokens = 0, slots = 0;  // T, T·k
  std::int64_t hidden_pad = 0, inter_pad = 0, shared_pad = 0;
  std::int64_t logits = 0;  // router rows: E (0 when precomputed) + 1 for a gated shared expert
  std::int64_t router_slices = 0;
  GemmTile routed_tile = GemmTile::m16n64;
  GemmTile shared_tile = GemmTile::m16n64;
  std::int64_t tile_capacity = 0;  // upper bound on routed tiles: the GEMM grids' x
  bool stage_x = false;            // H % 8 != 0: x is copied to aligned rows first
  WorkspaceLayout workspace;
};

Plan make_plan(const LayerConfig& config, std::int64_t tokens);

}  // namespace fusedmoe::cuda
