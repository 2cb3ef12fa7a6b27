#include "cuda/plan.hpp"

#include <algorithm>
#include <cstdlib>
#include <string_view>

namespace fusedmoe::cuda {

int tile_rows(GemmTile tile) {
  switch (tile) {
    case GemmTile::m16n64:
      return 16;
    case GemmTile::m64n128:
      return 64;
    case GemmTile::m96n128:
    case GemmTile::m96n256:
      return 96;
    case GemmTile::m128n128:
      return 128;
  }
  return 16;
}

int tile_cols(GemmTile tile) {
  switch (tile) {
    case GemmTile::m16n64:
      return 64;
    case GemmTile::m96n256:
      return 256;
    default:
      return 128;
  }
}

GemmTile choose_tile(std::int64_t rows, std::int64_t groups, std::int64_t short_k, bool wgmma) {
  // Weights dominate until a tile is tens of rows tall: then the narrowest tile that covers an
  // expert's rows streams each weight block about once, with the most blocks in flight. On the
  // sm_90a mainloop a 64-row tile streams its weights by TMA faster than the 16-row sm_80 tile
  // does by cp.async, from 2 rows per expert on (H100, bench/NOTES.md: mixtral T = 16 and 64 -7%,
  // qwen2 -3..-6%); with 1 row per expert it has too few blocks (mixtral T = 1 +33%).
  const std::int64_t per_group = rows / std::max<std::int64_t>(1, std::min(groups, rows));
  if (per_group <= (wgmma ? 1 : 24)) return GemmTile::m16n64;
  if (wgmma) {
    // From about 64 rows per expert, half of the experts overflow a 64-row tile and stream their
    // weights twice; a 96-row tile streams them once for up to 96 rows (mixtral T = 256 -10% on
    // the H100), and three of its blocks per 256 rows beat two 128-row ones (T = 1024 -12%,
    // T = 4096 -16%). Its blocks are twice as wide and two share an SM where three 64-row ones do,
    // which costs more than it saves where a block's K is short (qwen3-30b-a3b, I = 768: +7% at
    // T = 1024; qwen2-57b-a14b, I = 2560: +14%). The 128-row sm_90a tile, one block per SM, lost
    // to the 64-row one in every cell measured (qwen2 T = 1024 +18%, qwen3 T = 4096 +4%).
    return per_group > kM96MinRows && short_k >= kM96MinK ? GemmTile::m96n128 : GemmTile::m64n128;
  }
  if (per_group <= 96) return GemmTile::m64n128;
  return GemmTile::m128n128;
}

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

bool takes_narrow_tile(std::int64_t rows, int narrow_rows) {
  return rows > 0 && rows <= narrow_rows;
}

std::int64_t row_tiles(std::int64_t rows, std::int64_t bm, int narrow_rows) {
  return takes_narrow_tile(rows, narrow_rows) ? 0 : (rows + bm - 1) / bm;
}

bool narrow_tiles_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("FUSEDMOE_CUDA_NARROW");
    return env == nullptr || std::string_view(env) != "0";
  }();
  return enabled;
}

std::optional<GemmTile> parse_tile(std::string_view name) {
  for (GemmTile t : kGemmTiles) {
    if (name == to_string(t)) return t;
  }
  return std::nullopt;
}

std::string_view to_string(GemmTile tile) {
  switch (tile) {
    case GemmTile::m16n64:
      return "m16n64";
    case GemmTile::m64n128:
      return "m64n128";
    case GemmTile::m96n128:
      return "m96n128";
    case GemmTile::m128n128:
      return "m128n128";
    case GemmTile::m96n256:
      return "m96n256";
  }
  return "unknown";
}

bool fits_m96n256(std::int64_t hidden_pad, std::int64_t inter_pad) {
  const std::int64_t bn = tile_cols(GemmTile::m96n256);
  return 2 * inter_pad % bn == 0 && hidden_pad % bn == 0;
}

GemmTile fit_forced_tile(GemmTile forced, bool wgmma, std::int64_t hidden_pad,
                         std::int64_t inter_pad) {
  if (!wgmma && !has_sm80_kernel(forced)) return GemmTile::m64n128;
  if (forced == GemmTile::m96n256 && !fits_m96n256(hidden_pad, inter_pad)) return GemmTile::m96n128;
  return forced;
}

std::optional<GemmTile> forced_tile() {
  static const std::optional<GemmTile> tile = [] {
    const char* env = std::getenv("FUSEDMOE_CUDA_TILE");
    return env != nullptr ? parse_tile(env) : std::nullopt;
  }();
  return tile;
}

namespace {

class Carver {
 public:
  std::size_t take(std::int64_t count, std::size_t element_bytes) {
    constexpr std::size_t kAlign = 256;
    const std::size_t at = bytes;
    bytes += (static_cast<std::size_t>(count) * element_bytes + kAlign - 1) / kAlign * kAlign;
    return at;
  }
  std::size_t bytes = 0;
};

}  // namespace

Plan make_plan(const LayerConfig& c, std::int64_t tokens, bool wgmma) {
  Plan p;
  p.tokens = tokens;
  p.slots = tokens * c.top_k;
  p.hidden_pad = round_up(c.hidden, kKAlign);
  p.inter_pad = round_up(c.intermediate, kIAlign);
  p.shared_pad = c.shared.intermediate > 0 ? round_up(c.shared.intermediate, kIAlign) : 0;
  p.logits =
      (c.routing.kind == RoutingKind::precomputed ? 0 : c.experts) + (c.shared.gated ? 1 : 0);
  p.router_slices = (c.hidden + kRouterSlice - 1) / kRouterSlice;
  // the 96-row tile against 256 weight rows where the packed sizes are whole blocks of it: the
  // token rows read half as often (mixtral-8x7b T = 256 -4.6%, 1024 -7.2%, 4096 -5.4% on the
  // H100, bench/NOTES.md)
  const auto widen = [&](GemmTile tile, std::int64_t inter_pad) {
    return tile == GemmTile::m96n128 && fits_m96n256(p.hidden_pad, inter_pad) ? GemmTile::m96n256
                                                                              : tile;
  };
  p.routed_tile = widen(choose_tile(p.slots, c.experts, std::min(c.hidden, c.intermediate), wgmma),
                        p.inter_pad);
  p.shared_tile =
      widen(choose_tile(tokens, 1, std::min(c.hidden, c.shared.intermediate), wgmma), p.shared_pad);
  if (const std::optional<GemmTile> forced = forced_tile()) {
    p.routed_tile = fit_forced_tile(*forced, wgmma, p.hidden_pad, p.inter_pad);
    p.shared_tile = fit_forced_tile(*forced, wgmma, p.hidden_pad, p.shared_pad);
  }
  // narrow tiles run beside the sm_90a 64-row tiles only
  const auto narrow = [&](GemmTile tile) {
    return wgmma && tile == GemmTile::m64n128 && narrow_tiles_enabled() ? kNarrowRows : 0;
  };
  p.narrow_rows = narrow(p.routed_tile);
  if (c.shared.intermediate > 0) {
    p.shared_narrow_rows = narrow(p.shared_tile);
    p.shared_capacity = row_tiles(tokens, tile_rows(p.shared_tile), p.shared_narrow_rows);
    p.shared_narrow_capacity = takes_narrow_tile(tokens, p.shared_narrow_rows) ? 1 : 0;
  }
  const std::int64_t bm = tile_rows(p.routed_tile);
  // every expert with rows adds at most one partial row tile, or takes one narrow tile
  p.tile_capacity = (p.slots + bm - 1) / bm + std::min<std::int64_t>(c.experts, p.slots);
  p.narrow_capacity = p.narrow_rows > 0 ? std::min<std::int64_t>(c.experts, p.slots) : 0;
  p.stage_x = c.hidden % 8 != 0;

  const std::size_t es = dtype_size(c.dtype);
  Carver w;
  WorkspaceLayout& l = p.workspace;
  if (p.logits > 0) l.partial = w.take(p.router_slices * tokens * p.logits, 4);
  l.ids = w.take(p.slots, 4);
  l.weights = w.take(p.slots, 4);
  if (c.shared.gated) l.shared_gate = w.take(tokens, 4);
  l.offsets = w.take(c.experts + 3, 4);
  l.tiles = w.take(p.tile_capacity + p.narrow_capacity, 8);
  l.perm = w.take(p.slots, 4);
  l.pos = w.take(p.slots, 4);
  if (p.stage_x) l.x_stage = w.take(tokens * p.hidden_pad, es);
  l.act = w.take(2 * p.slots * p.inter_pad, es);
  l.y = w.take(p.slots * p.hidden_pad, 4);
  if (p.shared_pad > 0) {
    l.shared_act = w.take(2 * tokens * p.shared_pad, es);
    l.shared_y = w.take(tokens * p.hidden_pad, 4);
  }
  l.bytes = w.bytes;
  return p;
}

std::string describe(const Plan& p, bool wgmma) {
  const auto set = [&](std::string_view name, GemmTile tile, int narrow_rows) {
    std::string s = std::string(name) + " " + std::string(to_string(tile));
    if (narrow_rows > 0) s += " + narrow n" + std::to_string(narrow_rows);
    return s + (wgmma && has_sm90_kernel(tile) ? " (wgmma)" : " (mma.sync)");
  };
  std::string s = set("routed", p.routed_tile, p.narrow_rows);
  if (p.shared_pad > 0) s += ", " + set("shared", p.shared_tile, p.shared_narrow_rows);
  return s;
}

}  // namespace fusedmoe::cuda
