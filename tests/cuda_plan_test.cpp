// The CUDA backend's planner (src/cuda/plan.hpp) is plain host code: its tile choice, the upper
// bound that sizes the GEMM grids, and the workspace layout are checked here on any machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "cuda/plan.hpp"
#include "test_util.hpp"

namespace fusedmoe::cuda {
namespace {

constexpr std::int64_t kLongK = 4096;  // mixtral-8x7b's GEMMs: H 4096, I 14336

TEST(CudaPlan, TileGrowsWithRowsPerExpert) {
  // decode-sized rows per expert take the narrow tile, prefill the widest; never smaller as
  // rows per expert grow, on either mainloop
  for (bool wgmma : {false, true}) {
    EXPECT_EQ(choose_tile(1, 128, kLongK, wgmma), GemmTile::m16n64);
    EXPECT_EQ(choose_tile(2, 8, kLongK, wgmma), GemmTile::m16n64) << "one row per expert";
    EXPECT_EQ(choose_tile(256 * 2, 8, kLongK, wgmma),
              wgmma ? GemmTile::m96n128 : GemmTile::m64n128);
    EXPECT_EQ(choose_tile(4096 * 8, 128, kLongK, wgmma),
              wgmma ? GemmTile::m96n128 : GemmTile::m128n128);
    int last = 0;
    for (std::int64_t rows = 1; rows <= 1 << 16; rows *= 2) {
      const GemmTile tile = choose_tile(rows, 64, kLongK, wgmma);
      EXPECT_GE(tile_rows(tile), last) << "rows " << rows << (wgmma ? " (wgmma)" : "");
      EXPECT_TRUE(wgmma || has_sm80_kernel(tile)) << "an sm_90a-only tile on sm_80: " << rows;
      last = tile_rows(tile);
    }
  }
  // the 96-row tile (sm_90a) from kM96MinRows + 1 to 96 rows per expert
  EXPECT_EQ(choose_tile(kM96MinRows * 8, 8, kLongK, true), GemmTile::m64n128);
  EXPECT_EQ(choose_tile((kM96MinRows + 1) * 8, 8, kLongK, true), GemmTile::m96n128);
  EXPECT_EQ(choose_tile(96 * 8, 8, kLongK, true), GemmTile::m96n128);
  EXPECT_EQ(choose_tile(97 * 8, 8, kLongK, true), GemmTile::m96n128);
  EXPECT_EQ(choose_tile(97 * 8, 8, kLongK, false), GemmTile::m128n128);
  // no 128-row tiles on sm_90a: short K takes 64-row tiles at any number of rows
  EXPECT_EQ(choose_tile(4096 * 8, 128, 768, true), GemmTile::m64n128);
  EXPECT_EQ(choose_tile(72 * 8, 8, kLongK, false), GemmTile::m64n128);
  EXPECT_EQ(choose_tile(64 * 128, 128, 768, true), GemmTile::m64n128) << "short K (qwen3 T = 1024)";
  EXPECT_EQ(choose_tile(64 * 8, 8, kM96MinK, true), GemmTile::m96n128);
  EXPECT_EQ(choose_tile(64 * 8, 8, kM96MinK - 1, true), GemmTile::m64n128);
  EXPECT_FALSE(has_sm80_kernel(GemmTile::m96n128));
  // a handful of rows per expert: 16-row tiles on sm_80, 64-row ones from 2 rows on sm_90a
  EXPECT_EQ(choose_tile(16 * 8, 8, kLongK, false), GemmTile::m16n64);
  EXPECT_EQ(choose_tile(16 * 8, 8, kLongK, true), GemmTile::m64n128);
  EXPECT_EQ(choose_tile(16 * 8, 64, kLongK, true), GemmTile::m64n128);
  EXPECT_EQ(choose_tile(16 * 8, 128, kLongK, true), GemmTile::m16n64);
}

TEST(CudaPlan, TileNamesRoundTrip) {
  for (GemmTile t : kGemmTiles) {
    const std::optional<GemmTile> back = parse_tile(to_string(t));
    ASSERT_TRUE(back.has_value()) << to_string(t);
    EXPECT_EQ(*back, t);
    if (t == GemmTile::m96n256) continue;  // only where the packed sizes fit it (below)
    EXPECT_EQ(kKAlign % tile_cols(t), 0) << "packed H rows must be whole GEMM2 tiles";
    EXPECT_EQ((2 * kIAlign) % tile_cols(t), 0) << "packed gate/up rows must be whole GEMM1 tiles";
  }
  EXPECT_FALSE(parse_tile("m32n32").has_value());
}

TEST(CudaPlan, ForcedTileFitsTheLayer) {
  for (GemmTile t : kGemmTiles) {
    const GemmTile on_sm90 = fit_forced_tile(t, true, 4096, 14336);
    EXPECT_EQ(on_sm90, t) << to_string(t) << ": mixtral-8x7b's packed sizes fit every tile";
    const GemmTile on_sm80 = fit_forced_tile(t, false, 4096, 14336);
    EXPECT_TRUE(has_sm80_kernel(on_sm80)) << to_string(t);
    EXPECT_EQ(on_sm80, has_sm80_kernel(t) ? t : GemmTile::m64n128) << to_string(t);
  }
  EXPECT_FALSE(has_sm80_kernel(GemmTile::m96n256));
  EXPECT_EQ(tile_rows(GemmTile::m96n256), 96);
  EXPECT_EQ(tile_cols(GemmTile::m96n256), 256);
  // 256 weight rows a block: GEMM2's packed H (gpt-oss: 2880 -> 2944) and GEMM1's 2 · inter_pad
  // (inter_pad 64 · odd) must be whole blocks, else the 96-row tile of 128
  EXPECT_EQ(fit_forced_tile(GemmTile::m96n256, true, 2944, 2880), GemmTile::m96n128);
  EXPECT_EQ(fit_forced_tile(GemmTile::m96n256, true, 4096, 1472), GemmTile::m96n128);
  EXPECT_EQ(fit_forced_tile(GemmTile::m96n256, true, 2048, 768), GemmTile::m96n256);
  EXPECT_EQ(fit_forced_tile(GemmTile::m96n256, true, 4096, 0), GemmTile::m96n256)
      << "no shared expert: its GEMMs do not run";
}

TEST(CudaPlan, WideTileWherePackedSizesFit) {
  // the 96-row tile against 256 weight rows where both GEMMs' packed rows are whole blocks of it
  EXPECT_TRUE(fits_m96n256(4096, 14336)) << "mixtral-8x7b";
  EXPECT_TRUE(fits_m96n256(6144, 16384)) << "mixtral-8x22b";
  EXPECT_FALSE(fits_m96n256(2944, 2880)) << "gpt-oss: packed H 2944 = 23 * 128";
  EXPECT_FALSE(fits_m96n256(4096, 1472)) << "2 * 1472 = 23 * 128";
  EXPECT_TRUE(fits_m96n256(4096, 0)) << "no shared expert: its GEMMs do not run";
  const LayerConfig mixtral = test::make_config(4096, 14336, 8, 2);
  for (std::int64_t t : {256, 1024, 4096}) {
    EXPECT_EQ(make_plan(mixtral, t, true).routed_tile, GemmTile::m96n256) << "T=" << t;
    EXPECT_EQ(make_plan(mixtral, t, false).routed_tile,
              t == 256 ? GemmTile::m64n128 : GemmTile::m128n128)
        << "no 96-row tiles on sm_80: T=" << t;
  }
  EXPECT_EQ(make_plan(mixtral, 64, true).routed_tile, GemmTile::m64n128);
  // long K, but packed sizes that are not whole 256-row blocks (H 4224 = 33 * 128)
  const LayerConfig odd = test::make_config(4224, 14336, 8, 2);
  EXPECT_EQ(make_plan(odd, 256, true).routed_tile, GemmTile::m96n128);
  // the shared expert by its own packed size
  LayerConfig shared = mixtral;
  shared.shared.intermediate = 4096 + 64;  // 2 * 4160 = 32.5 * 256
  EXPECT_EQ(make_plan(shared, 256, true).shared_tile, GemmTile::m96n128);
  shared.shared.intermediate = 4096;
  EXPECT_EQ(make_plan(shared, 256, true).shared_tile, GemmTile::m96n256);
  // the grids follow the tile's rows only: the same for both 96-row tiles
  EXPECT_EQ(make_plan(mixtral, 256, true).tile_capacity, make_plan(odd, 256, true).tile_capacity);
}

TEST(CudaPlan, DescribeNamesEachSetsTileAndMainloop) {
  const LayerConfig mixtral = test::make_config(4096, 14336, 8, 2);
  EXPECT_EQ(describe(make_plan(mixtral, 256, true), true), "routed m96n256 (wgmma)");
  EXPECT_EQ(describe(make_plan(mixtral, 64, true), true), "routed m64n128 + narrow n32 (wgmma)");
  EXPECT_EQ(describe(make_plan(mixtral, 1, true), true), "routed m16n64 (mma.sync)")
      << "16-row tiles have the sm_80 mainloop only";
  EXPECT_EQ(describe(make_plan(mixtral, 256, false), false), "routed m64n128 (mma.sync)");
  LayerConfig shared = mixtral;
  shared.shared.intermediate = 4096;
  EXPECT_EQ(describe(make_plan(shared, 20, true), true),
            "routed m64n128 + narrow n32 (wgmma), shared m64n128 + narrow n32 (wgmma)");
}

// Row tiles and narrow tiles the align stage writes for a given spread of slots over experts.
std::pair<std::int64_t, std::int64_t> tiles_needed(const std::vector<std::int64_t>& per_expert,
                                                   int bm, int narrow_rows) {
  std::int64_t rows = 0, narrow = 0;
  for (std::int64_t c : per_expert) {
    rows += row_tiles(c, bm, narrow_rows);
    narrow += takes_narrow_tile(c, narrow_rows) ? 1 : 0;
  }
  return {rows, narrow};
}

TEST(CudaPlan, NarrowTilesTakeExpertsWithFewRows) {
  // every row is in exactly one tile: one narrow tile for 1..narrow_rows rows, else row tiles
  for (int narrow_rows : {0, kNarrowRows}) {
    for (std::int64_t c = 0; c <= 300; ++c) {
      const bool narrow = takes_narrow_tile(c, narrow_rows);
      const std::int64_t tiles = row_tiles(c, 64, narrow_rows);
      EXPECT_EQ(narrow, c > 0 && c <= narrow_rows) << c;
      EXPECT_EQ(tiles, narrow ? 0 : (c + 63) / 64) << c;
      EXPECT_EQ(tiles > 0 || narrow, c > 0) << "rows without a tile, or a tile without rows: " << c;
    }
  }
  EXPECT_EQ(row_tiles(20, 64, 32), 0);
  EXPECT_EQ(row_tiles(33, 64, 32), 1);
  EXPECT_EQ(row_tiles(72, 64, 32), 2) << "no narrow tile for an expert's last rows";
  // beside the sm_90a 64-row tiles only
  const LayerConfig mixtral = test::make_config(4096, 14336, 8, 2);
  EXPECT_EQ(make_plan(mixtral, 64, true).narrow_rows, kNarrowRows);
  EXPECT_EQ(make_plan(mixtral, 64, true).narrow_capacity, 8);
  EXPECT_EQ(make_plan(mixtral, 64, false).narrow_rows, 0);
  EXPECT_EQ(make_plan(mixtral, 256, true).narrow_rows, 0) << "96-row tiles";
  EXPECT_EQ(make_plan(mixtral, 256, true).narrow_capacity, 0);
  EXPECT_EQ(make_plan(mixtral, 1, true).narrow_rows, 0) << "16-row tiles";
  EXPECT_EQ(make_plan(mixtral, 4096, true).narrow_rows, 0) << "96-row tiles";
  EXPECT_EQ(make_plan(mixtral, 4096, false).narrow_rows, 0) << "128-row tiles";
  EXPECT_EQ(make_plan(mixtral, 256, true).shared_narrow_rows, 0) << "no shared expert";
  LayerConfig shared = mixtral;
  shared.shared.intermediate = 4096;
  EXPECT_EQ(make_plan(shared, 40, true).shared_narrow_rows, kNarrowRows);
  EXPECT_EQ(make_plan(shared, 72, true).shared_narrow_rows, 0) << "one 96-row tile";
  EXPECT_EQ(make_plan(shared, 72, true).shared_capacity, 1);
  EXPECT_EQ(make_plan(shared, 256, true).shared_narrow_rows, 0) << "96-row tiles";
}

TEST(CudaPlan, EveryRowHasABlock) {
  // The GEMM grids' x is the row tiles' capacity plus the narrow tiles'; either may be 0 alone
  // (the shared expert at T <= kNarrowRows has no row tile), never both while there are rows.
  LayerConfig c = test::make_config(512, 256, 16, 2);
  c.shared.intermediate = 128;
  for (bool wgmma : {false, true}) {
    for (std::int64_t t = 1; t <= 300; ++t) {
      const Plan p = make_plan(c, t, wgmma);
      EXPECT_GE(p.tile_capacity + p.narrow_capacity, 1) << "T=" << t;
      const int bm = tile_rows(p.shared_tile);
      if (p.shared_narrow_capacity > 0) {
        EXPECT_EQ(p.shared_capacity, 0) << "T=" << t;
        EXPECT_LE(t, p.shared_narrow_rows) << "T=" << t;
      } else {
        EXPECT_EQ(p.shared_capacity, (t + bm - 1) / bm) << "T=" << t;
      }
    }
    EXPECT_EQ(make_plan(c, 17, wgmma).shared_narrow_capacity, wgmma ? 1 : 0);
    EXPECT_EQ(make_plan(c, 17, wgmma).shared_capacity, wgmma ? 0 : 2);
  }
  c.shared.intermediate = 0;
  EXPECT_EQ(make_plan(c, 17, true).shared_capacity + make_plan(c, 17, true).shared_narrow_capacity,
            0);
}

TEST(CudaPlan, TileCapacityBoundsEveryRouting) {
  // The GEMM grids are sized before routing is known: the bound must hold for any spread of the
  // T·k slots, uniform, skewed, all on one expert, or one slot per expert.
  std::mt19937_64 rng(test::case_seed());
  for (const auto& [t, e, k] : std::vector<std::tuple<int, int, int>>{
           {1, 8, 2}, {7, 60, 4}, {64, 128, 8}, {256, 8, 2}, {1000, 257, 8}, {4096, 256, 8}}) {
    LayerConfig c = test::make_config(256, 256, e, k);
    for (bool wgmma : {false, true}) {
      const Plan p = make_plan(c, t, wgmma);
      const int bm = tile_rows(p.routed_tile);
      const std::int64_t slots = static_cast<std::int64_t>(t) * k;
      std::vector<std::vector<std::int64_t>> spreads;
      spreads.emplace_back(e, 0);
      spreads.back()[0] = slots;  // all on one expert
      spreads.emplace_back(e, slots / e);
      for (std::int64_t i = 0; i < slots % e; ++i) ++spreads.back()[i];  // as even as it gets
      for (int draw = 0; draw < 50; ++draw) {
        std::vector<std::int64_t> counts(e, 0);
        std::uniform_int_distribution<int> pick(0, draw % 2 == 0 ? e - 1 : std::min(e - 1, 3));
        for (std::int64_t s = 0; s < slots; ++s) ++counts[pick(rng)];
        spreads.push_back(std::move(counts));
      }
      for (const auto& spread : spreads) {
        const auto [rows, narrow] = tiles_needed(spread, bm, p.narrow_rows);
        EXPECT_LE(rows, p.tile_capacity) << "T=" << t << " E=" << e;
        EXPECT_LE(narrow, p.narrow_capacity) << "T=" << t << " E=" << e;
      }
    }
  }
}

TEST(CudaPlan, WorkspaceRegionsAreAlignedAndDisjoint) {
  for (LayerConfig c :
       {test::make_config(2048, 768, 128, 8), test::make_config(733, 1408, 60, 4),
        test::deepseek_like(512, 256, 64, 8, 8, 4), test::gpt_oss_like(2880, 2880, 32, 4)}) {
    c.shared.intermediate = c.hidden == 733 ? 500 : 0;
    c.shared.gated = c.hidden == 733;
    for (std::int64_t t : {1, 17, 4096}) {
      const Plan p = make_plan(c, t, /*wgmma=*/true);
      const WorkspaceLayout& l = p.workspace;
      const std::size_t es = dtype_size(c.dtype);
      // (offset, bytes) of every region in use
      std::vector<std::pair<std::size_t, std::size_t>> regions;
      const auto add = [&](std::size_t at, std::int64_t count, std::size_t bytes) {
        if (at == WorkspaceLayout::none) return;
        EXPECT_EQ(at % 256, 0u);
        regions.emplace_back(at, static_cast<std::size_t>(count) * bytes);
      };
      add(l.partial, p.router_slices * t * p.logits, 4);
      add(l.ids, p.slots, 4);
      add(l.weights, p.slots, 4);
      add(l.shared_gate, t, 4);
      add(l.offsets, c.experts + 3, 4);
      add(l.tiles, p.tile_capacity + p.narrow_capacity, 8);
      add(l.perm, p.slots, 4);
      add(l.pos, p.slots, 4);
      add(l.x_stage, t * p.hidden_pad, es);
      add(l.act, 2 * p.slots * p.inter_pad, es);
      add(l.y, p.slots * p.hidden_pad, 4);
      add(l.shared_act, 2 * t * p.shared_pad, es);
      add(l.shared_y, t * p.hidden_pad, 4);
      std::sort(regions.begin(), regions.end());
      for (std::size_t i = 0; i < regions.size(); ++i) {
        const std::size_t end = regions[i].first + regions[i].second;
        EXPECT_LE(end, l.bytes);
        if (i + 1 < regions.size()) EXPECT_LE(end, regions[i + 1].first);
      }
      EXPECT_EQ(p.stage_x, c.hidden % 8 != 0);
      EXPECT_EQ(l.x_stage != WorkspaceLayout::none, p.stage_x);
      EXPECT_EQ(l.shared_gate != WorkspaceLayout::none, c.shared.gated);
      EXPECT_EQ(p.hidden_pad % kKAlign, 0);
      EXPECT_EQ(p.inter_pad % kIAlign, 0);
      EXPECT_GE(p.hidden_pad, c.hidden);
      EXPECT_GE(p.inter_pad, c.intermediate);
    }
  }
}

TEST(CudaPlan, RouterSlicesDependOnHiddenOnly) {
  // batch invariance: the order of the router's sums may not depend on T
  const LayerConfig c = test::make_config(7168, 2048, 256, 8);
  const std::int64_t slices = make_plan(c, 1, false).router_slices;
  EXPECT_EQ(slices, (7168 + kRouterSlice - 1) / kRouterSlice);
  for (std::int64_t t : {2, 333, 4096}) EXPECT_EQ(make_plan(c, t, false).router_slices, slices);
}

TEST(CudaPlan, PrecomputedRoutingHasNoRouterUnlessTheSharedExpertIsGated) {
  LayerConfig c = test::make_config(256, 128, 16, 2);
  c.routing.kind = RoutingKind::precomputed;
  c.routing.renormalize = false;
  EXPECT_EQ(make_plan(c, 8, false).logits, 0);
  EXPECT_EQ(make_plan(c, 8, false).workspace.partial, WorkspaceLayout::none);
  c.shared = {64, true};
  EXPECT_EQ(make_plan(c, 8, false).logits, 1);  // the gate column only
}

}  // namespace
}  // namespace fusedmoe::cuda
