// The CUDA backend's plan for one forward: tile shapes, grids and the workspace layout. Plain host
// code (no CUDA), a pure function of (config, tokens, mainloop), so that workspace_size() is too
// and the heuristics are unit-tested on any machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fusedmoe/config.hpp"

namespace fusedmoe::cuda {

// The expert-GEMM tile shapes that ship: rows x columns per block.
enum class GemmTile : std::uint8_t {
  m16n64,    // decode: a handful of rows per expert; many narrow blocks stream the weights
  m64n128,   // tens of rows per expert (on sm_90a: any number, unless m96n128)
  m128n128,  // prefill on sm_80: hundreds of rows per expert (on sm_90a only when forced)
  // sm_90a only: up to 96 rows as the N of a swapped wgmma (the weights are its M), two
  // warpgroups of 64 weight rows each. An expert with 65..96 rows, which would take two 64-row
  // tiles, streams each block of its weights once; the tile for long-K layers from 49 rows per
  // expert.
  m96n128,
  // sm_90a only: the same 96 token rows against 256 weight rows, four warpgroups (512 threads,
  // one block per SM). A block reads its token rows once per 256 weight rows instead of once per
  // 128, halving the gathered rows' share of the L2-to-SM bytes. Where the plan would take
  // m96n128 and both GEMMs' packed rows are whole multiples of 256 (fits_m96n256).
  m96n256,
};

// Every tile, in the order of the enum.
inline constexpr GemmTile kGemmTiles[] = {GemmTile::m16n64, GemmTile::m64n128, GemmTile::m128n128,
                                          GemmTile::m96n128, GemmTile::m96n256};

// Narrow tiles (sm_90a, beside m64n128): an expert with 1..kNarrowRows rows runs them as the
// tokens of an n32 MMA against 128 weight rows, instead of padding a 64-row tile (half the MMAs and
// half the gathered rows). An expert with more rows takes 64-row tiles only: a narrow tile for its
// last few rows measured slower than padding them (bench/NOTES.md, mixtral T = 256).
inline constexpr int kNarrowRows = 32;

// On sm_90a, a 96-row tile is the one for more than kM96MinRows rows per expert in layers whose
// GEMMs both have K >= kM96MinK (hidden and intermediate size), m64n128 for the others from 2 rows
// per expert; m128n128 runs on sm_80 only unless forced. The 96-row tile is m96n256 where the
// layer's packed sizes fit it (make_plan), else m96n128.
inline constexpr int kM96MinRows = 48;
inline constexpr std::int64_t kM96MinK = 4096;

int tile_rows(GemmTile tile);
int tile_cols(GemmTile tile);

// Whether an expert with `rows` rows runs them as one narrow tile (narrow_rows: 0 without them),
// and the row tiles of height `bm` it takes otherwise. The align kernel decides the same way.
bool takes_narrow_tile(std::int64_t rows, int narrow_rows);
std::int64_t row_tiles(std::int64_t rows, std::int64_t bm, int narrow_rows);

// Whether the plan uses narrow tiles where it can: FUSEDMOE_CUDA_NARROW=0 turns them off, for
// tuning runs (read once per process).
bool narrow_tiles_enabled();

// Whether `tile` has an sm_80 (mma.sync) kernel: every tile but the swapped 96-row ones.
constexpr bool has_sm80_kernel(GemmTile tile) {
  return tile != GemmTile::m96n128 && tile != GemmTile::m96n256;
}

// Whether `tile` has an sm_90a (wgmma) kernel: every tile but the 16-row one.
constexpr bool has_sm90_kernel(GemmTile tile) { return tile != GemmTile::m16n64; }

std::string_view to_string(GemmTile tile);
std::optional<GemmTile> parse_tile(std::string_view name);

// The tile for `rows` rows spread over `groups` experts (the expected rows per expert decides),
// for GEMMs whose shorter K is `short_k` (min of hidden and intermediate size) and the mainloop
// the device runs: `wgmma` when its 64-row and wider tiles run the sm_90a one.
GemmTile choose_tile(std::int64_t rows, std::int64_t groups, std::int64_t short_k, bool wgmma);

// Whether a layer of packed sizes hidden_pad and inter_pad (that of the GEMMs' expert: routed or
// shared) is whole m96n256 blocks: GEMM1's 2 · inter_pad packed rows and GEMM2's hidden_pad.
bool fits_m96n256(std::int64_t hidden_pad, std::int64_t inter_pad);

// FUSEDMOE_CUDA_TILE=m16n64|m64n128|m96n128|m128n128|m96n256 forces the tile of every expert GEMM,
// routed and shared, for tuning runs and for tests of a tile the suites' layers would not choose
// (read once per process; workspace sizes follow it). The swapped tiles become m64n128 where the
// sm_90a mainloop does not run, and m96n256 becomes m96n128 where a GEMM's packed rows are not a
// multiple of 256.
std::optional<GemmTile> forced_tile();
// The tile a forced one becomes for a layer of packed sizes hidden_pad and inter_pad (the rules
// above): every tile but m96n256 fits every packed size.
GemmTile fit_forced_tile(GemmTile forced, bool wgmma, std::int64_t hidden_pad,
                         std::int64_t inter_pad);

inline constexpr std::int64_t kKAlign =
    128;  // packed hidden size: a multiple of BK and of every tile's BN but m96n256's
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
  std::size_t offsets = none;      // i32 [E + 1], then the row and narrow tile counts
  std::size_t tiles = none;        // int2 [tile_capacity + narrow_capacity]
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
  std::int64_t tile_capacity = 0;    // upper bound on routed row tiles: the GEMM grids' x
  int narrow_rows = 0;               // routed narrow tiles: kNarrowRows, or 0 without them
  std::int64_t narrow_capacity = 0;  // upper bound on routed narrow tiles (one per expert)
  int shared_narrow_rows = 0;        // the same for the shared expert's tiles
  // the shared expert's T rows (no tile list): ceil(T / BM) row tiles, or none and one narrow
  // tile when T <= shared_narrow_rows; 0 and 0 without a shared expert
  std::int64_t shared_capacity = 0, shared_narrow_capacity = 0;
  bool stage_x = false;  // H % 8 != 0: x is copied to aligned rows first
  WorkspaceLayout workspace;
};

// `wgmma`: as for choose_tile (gemm_maps_weights() on the device that runs the layer).
Plan make_plan(const LayerConfig& config, std::int64_t tokens, bool wgmma);

// The plan's expert GEMMs in words, for Layer::describe: each set's tile and mainloop, e.g.
// "routed m64n128 + narrow n32 (wgmma), shared m96n128 (wgmma)".
std::string describe(const Plan& plan, bool wgmma);

}  // namespace fusedmoe::cuda
