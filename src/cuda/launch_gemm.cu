// Launchers of the expert GEMMs: the one place where (dtype, tile, mainloop) become template
// arguments. Instantiated here and nowhere else: 2 dtypes x 2 GEMMs x (3 sm_80 tiles + 4 sm_90a
// tiles). On an sm_90 device that runs this build's sm_90a machine code, tiles of 64 rows and more
// use the wgmma mainloop, which loads the weights through tensor maps; everywhere else (and with
// FUSEDMOE_CUDA_MAINLOOP=sm80) the mma.sync one. prepare_kernels(), the per-device set-up of every
// launcher, is here too: the mainloop choice is most of it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>

#include "core/check.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/kernels/gemm/grouped_gemm_gated.cuh"
#include "cuda/kernels/gemm/grouped_gemm_weighted.cuh"
#include "cuda/kernels/gemm/sm80/grouped_mainloop.cuh"
#include "cuda/kernels/gemm/sm90/grouped_mainloop.cuh"
#include "cuda/launch.hpp"
#include "cuda/launch_kernel.cuh"
#include "cuda/tensor_map.hpp"

namespace fusedmoe::cuda {
namespace {

// The sm_80 tiles: (BM, BN, warps along M, warps along N, stages), for the gated GEMM and for the
// weighted one (kWeighted), whose A tile holds two planes.
template <GemmTile kTile, bool kWeighted>
struct Sm80Shape;
template <bool kWeighted>
struct Sm80Shape<GemmTile::m16n64, kWeighted> {
  static constexpr int kBM = 16, kBN = 64, kWarpsM = 1, kWarpsN = 4, kStages = 4;
};
template <>
struct Sm80Shape<GemmTile::m64n128, false> {
  static constexpr int kBM = 64, kBN = 128, kWarpsM = 2, kWarpsN = 2, kStages = 3;
};
// The weighted GEMM's 96 KB of stages leave room for two blocks per SM: eight warps each keep
// enough MMAs in flight (four were measured latency-bound on mixtral T = 256).
template <>
struct Sm80Shape<GemmTile::m64n128, true> {
  static constexpr int kBM = 64, kBN = 128, kWarpsM = 2, kWarpsN = 4, kStages = 3;
};
template <bool kWeighted>
struct Sm80Shape<GemmTile::m128n128, kWeighted> {
  static constexpr int kBM = 128, kBN = 128, kWarpsM = 2, kWarpsN = 4, kStages = 3;
};

// The sm_90a tiles: (BM, BN, stages), one warpgroup per 64 rows. In this mainloop each warpgroup
// issues its own cp.async loads for A (the weights come by TMA) and then waits for its MMAs, so
// other blocks on the SM are what overlap one block's loads with another's MMAs. The m64n128 tiles
// keep their rings small enough for three blocks per SM (their registers, 155-163 per thread,
// allow three up to 170): 3 stages (72 KB) for the gated tile, 2 (64 KB) for the weighted one,
// whose A stage holds two planes. Measured on mixtral-8x7b T = 256 (H200, bench/NOTES.md): 4 + 3
// stages (two blocks per SM) 1047 us, 3 + 2 stages 951-957 us in the same call; one block per SM
// with rings of 7-9 stages was slower still, and so were stages of 32 columns with twice as many
// of them in the same bytes (H100, 2026-12-07: mixtral T = 256 1204 -> 1245 us).
//
// The m96n128 tile is the swapped form (the weights as wgmma's M, up to 96 token rows as its N)
// with two warpgroups, one per m64 half of the weight rows: 256 threads whose registers are held
// to 128 so that two blocks share an SM (kMinBlocks: __launch_bounds__' minimum, 0 for none),
// with rings of 3 stages (84 KB) and 2 (80 KB).
template <GemmTile kTile, bool kWeighted>
struct Sm90Shape;
template <bool kWeighted>
struct Sm90Shape<GemmTile::m64n128, kWeighted> {
  static constexpr int kBM = 64, kBN = 128, kStages = kWeighted ? 2 : 3, kWarpGroups = 1;
  static constexpr bool kSwapped = false;
  static constexpr int kMinBlocks = 0;
};
template <bool kWeighted>
struct Sm90Shape<GemmTile::m96n128, kWeighted> {
  static constexpr int kBM = 96, kBN = 128, kStages = kWeighted ? 2 : 3, kWarpGroups = 2;
  static constexpr bool kSwapped = true;
  static constexpr int kMinBlocks = 2;
};
// The m96n256 tile: the same 96 token rows against 256 weight rows, four warpgroups of 64 weight
// rows each; 512 threads held to 128 registers, one block per SM, with rings of 4 stages (176 KB)
// and 3 (168 KB), about the bytes in flight of two m96n128 blocks.
template <bool kWeighted>
struct Sm90Shape<GemmTile::m96n256, kWeighted> {
  static constexpr int kBM = 96, kBN = 256, kStages = kWeighted ? 3 : 4, kWarpGroups = 4;
  static constexpr bool kSwapped = true;
  static constexpr int kMinBlocks = 1;
};
template <bool kWeighted>
struct Sm90Shape<GemmTile::m128n128, kWeighted> {
  static constexpr int kBM = 128, kBN = 128, kStages = 4, kWarpGroups = 2;
  static constexpr bool kSwapped = false;
  static constexpr int kMinBlocks = 0;
};

enum class Path : std::uint8_t { sm80, sm90 };

// The narrow tiles of experts with few rows beside the sm_90a 64-row tiles (kNarrowRows token rows,
// one warpgroup, the row tile's stages); none (void) beside the others.
template <class Elem, GemmTile kTile, bool kWeighted, Path kPath>
struct NarrowTiles {
  using Mainloop = void;
};
template <class Elem, bool kWeighted>
struct NarrowTiles<Elem, GemmTile::m64n128, kWeighted, Path::sm90> {
  using S = Sm90Shape<GemmTile::m64n128, kWeighted>;
  using Mainloop =
      sm90::GroupedMainloop<Elem, kNarrowRows, S::kBN, S::kStages, kWeighted ? 2 : 1, true>;
};

template <class T, GemmTile kTile, bool kWeighted, Path kPath>
struct GemmKernel {
  using Elem = T;
  static constexpr int kPlanes = kWeighted ? 2 : 1;
  static auto mainloop() {
    if constexpr (kPath == Path::sm90) {
      using S = Sm90Shape<kTile, kWeighted>;
      using M = sm90::GroupedMainloop<Elem, S::kBM, S::kBN, S::kStages, kPlanes, S::kSwapped,
                                      S::kWarpGroups>;
      static_assert(M::kBBoxRows == kWeightMapBoxRows && M::kBK == kWeightMapBoxCols,
                    "the weight maps' box is one k-tile of 128 rows of B");
      return M{};
    } else {
      using S = Sm80Shape<kTile, kWeighted>;
      return sm80::GroupedMainloop<Elem, S::kBM, S::kBN, S::kWarpsM, S::kWarpsN, S::kStages,
                                   kPlanes>{};
    }
  }
  using Mainloop = decltype(mainloop());
  using Narrow = typename NarrowTiles<Elem, kTile, kWeighted, kPath>::Mainloop;
  static constexpr int kThreads = Mainloop::kThreads;
  static constexpr int kMinBlocks = [] {
    if constexpr (kPath == Path::sm90) {
      return Sm90Shape<kTile, kWeighted>::kMinBlocks;
    } else {
      return 0;
    }
  }();
  static constexpr int kSmem = [] {
    if constexpr (std::is_void_v<Narrow>) {
      return Mainloop::kSmemBytes;
    } else {
      return std::max(Mainloop::kSmemBytes, Narrow::kSmemBytes);
    }
  }();
  static auto fn() {
    if constexpr (kWeighted) {
      return &grouped_gemm_weighted<Elem, Mainloop, Narrow, kMinBlocks>;
    } else {
      return &grouped_gemm_gated<Elem, Mainloop, Narrow, kMinBlocks>;
    }
  }
  static Status prepare() {
    FUSEDMOE_CUDA_CHECK(
        cudaFuncSetAttribute(fn(), cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return {};
  }
};

// The mainloop of the 64- and 128-row tiles, and whether launches overlap: set by
// prepare_kernels() before any launch.
std::atomic<Path> g_path{Path::sm80};
std::atomic<bool> g_overlap{false};

TileList tile_list(const TileArgs& t) {
  TileList l;
  l.tiles = static_cast<const int2*>(t.tiles);
  l.count = t.count;
  l.offsets = t.offsets;
  l.rows = t.rows;
  l.capacity = static_cast<int>(t.capacity);
  l.narrow = static_cast<const int2*>(t.narrow);
  l.narrow_count = t.narrow_count;
  return l;
}

// The grid: row tiles then narrow tiles along x (tile_list.cuh), BN-column blocks along y. x is 0
// when there are no rows (the caller launches nothing); the row tiles' capacity alone may be 0
// when every row fits a narrow tile (the shared expert at T <= kNarrowRows).
template <class K>
dim3 gemm_grid(const TileArgs& t, int n_rows) {
  const std::int64_t narrow = std::is_void_v<typename K::Narrow> ? 0 : t.narrow_capacity;
  return {static_cast<unsigned>(t.capacity + narrow),
          static_cast<unsigned>(n_rows / K::Mainloop::kBN)};
}

template <class K>
Status gated(const GatedGemmArgs& a, cudaStream_t stream) {
  using Elem = typename K::Elem;
  GatedGemmParams<Elem> p;
  p.x = static_cast<const Elem*>(a.x);
  p.x_ld = a.x_ld;
  p.x_cols = a.x_cols;
  p.perm = a.perm;
  p.top_k = a.top_k;
  p.tiles = tile_list(a.tiles);
  p.w = static_cast<const Elem*>(a.w);
  p.w_expert_stride = a.w_expert_stride;
  if (a.w_map != nullptr) p.w_map = *a.w_map;
  p.k_pad = a.k_pad;
  p.bias = a.bias;
  p.bias_expert_stride = a.bias_expert_stride;
  p.act_hi = static_cast<Elem*>(a.act);
  p.act_lo = static_cast<Elem*>(a.act) + a.act_plane_stride;
  p.act_ld = a.act_ld;
  p.activation = {static_cast<ActivationKind>(a.activation), a.limit, a.alpha};
  const dim3 grid = gemm_grid<K>(a.tiles, a.n_rows);
  if (grid.x == 0) return {};
  launch_kernel(K::fn(), grid, K::kThreads, K::kSmem, stream, p);
  FUSEDMOE_CUDA_CHECK_LAUNCH("grouped_gemm_gated");
  return {};
}

template <class K>
Status weighted(const WeightedGemmArgs& a, cudaStream_t stream) {
  using Elem = typename K::Elem;
  WeightedGemmParams<Elem> p;
  p.act_hi = static_cast<const Elem*>(a.act);
  p.plane_stride = a.act_plane_stride;
  p.act_ld = a.act_ld;
  p.tiles = tile_list(a.tiles);
  p.perm = a.perm;
  p.weights = a.weights;
  p.w = static_cast<const Elem*>(a.w);
  p.w_expert_stride = a.w_expert_stride;
  if (a.w_map != nullptr) p.w_map = *a.w_map;
  p.bias = a.bias;
  p.bias_expert_stride = a.bias_expert_stride;
  p.y = a.y;
  p.y_ld = a.y_ld;
  const dim3 grid = gemm_grid<K>(a.tiles, a.n_rows);
  if (grid.x == 0) return {};
  launch_kernel(K::fn(), grid, K::kThreads, K::kSmem, stream, p);
  FUSEDMOE_CUDA_CHECK_LAUNCH("grouped_gemm_weighted");
  return {};
}

// Calls f.template operator()<K>() with K = GemmKernel<Elem, kTile, kWeighted, path> for the
// runtime (dtype, tile, path); `path` falls back to sm80 for tiles without an sm_90a kernel. A tile
// with only an sm_90a kernel on the sm80 path is an error (make_plan does not choose it there).
template <bool kWeighted, class F>
Status dispatch(DType dtype, GemmTile tile, Path path, F&& f) {
  const auto by_path = [&]<class Elem, GemmTile kTile>() -> Status {
    if constexpr (has_sm90_kernel(kTile)) {
      if (path == Path::sm90) {
        return f.template operator()<GemmKernel<Elem, kTile, kWeighted, Path::sm90>>();
      }
    }
    if constexpr (has_sm80_kernel(kTile)) {
      return f.template operator()<GemmKernel<Elem, kTile, kWeighted, Path::sm80>>();
    } else {
      return {StatusCode::invalid_argument,
              "the " + std::string(to_string(kTile)) + " GEMM tile needs the sm_90a mainloop"};
    }
  };
  const auto by_tile = [&]<class Elem>() -> Status {
    switch (tile) {
      case GemmTile::m16n64:
        return by_path.template operator()<Elem, GemmTile::m16n64>();
      case GemmTile::m64n128:
        return by_path.template operator()<Elem, GemmTile::m64n128>();
      case GemmTile::m96n128:
        return by_path.template operator()<Elem, GemmTile::m96n128>();
      case GemmTile::m128n128:
        return by_path.template operator()<Elem, GemmTile::m128n128>();
      case GemmTile::m96n256:
        return by_path.template operator()<Elem, GemmTile::m96n256>();
    }
    return {StatusCode::invalid_argument, "unknown GEMM tile"};
  };
  switch (dtype) {
    case DType::bf16:
      return by_tile.template operator()<__nv_bfloat16>();
    case DType::f16:
      return by_tile.template operator()<__half>();
    default:
      return {StatusCode::invalid_dtype, "the CUDA expert GEMMs take bf16 or f16"};
  }
}

Path current_path() { return g_path.load(std::memory_order_relaxed); }

// The wgmma kernels run when the device is sm_90 and the loaded machine code is sm_90a (a build
// without 90a in its architectures loads sm_80 code there, whose wgmma bodies trap) and the
// driver encodes tensor maps. FUSEDMOE_CUDA_MAINLOOP=sm80 forces the portable path.
Status choose_path(int device, Path& path) {
  path = Path::sm80;
  if (const char* env = std::getenv("FUSEDMOE_CUDA_MAINLOOP");
      env != nullptr && std::string_view(env) == "sm80") {
    return {};
  }
  cudaDeviceProp prop{};
  FUSEDMOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (prop.major != 9 || prop.minor != 0) return {};
  cudaFuncAttributes attr{};
  FUSEDMOE_CUDA_CHECK(cudaFuncGetAttributes(
      &attr, GemmKernel<__nv_bfloat16, GemmTile::m64n128, false, Path::sm90>::fn()));
  if (attr.binaryVersion != 90 || !tensor_maps_available()) return {};
  path = Path::sm90;
  return {};
}

}  // namespace

Status launch_gated_gemm(DType dtype, GemmTile tile, const GatedGemmArgs& args,
                         cudaStream_t stream) {
  if (gemm_maps_weights() && args.w_map == nullptr) {
    return {StatusCode::invalid_argument, "the sm_90a mainloop needs the weights' tensor map"};
  }
  return dispatch<false>(dtype, tile, current_path(),
                         [&]<class K>() { return gated<K>(args, stream); });
}

Status launch_weighted_gemm(DType dtype, GemmTile tile, const WeightedGemmArgs& args,
                            cudaStream_t stream) {
  if (gemm_maps_weights() && args.w_map == nullptr) {
    return {StatusCode::invalid_argument, "the sm_90a mainloop needs the weights' tensor map"};
  }
  return dispatch<true>(dtype, tile, current_path(),
                        [&]<class K>() { return weighted<K>(args, stream); });
}

Status prepare_kernels() {
  static std::mutex mutex;
  static int prepared_device = -1;
  int device = 0;
  FUSEDMOE_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  if (prepared_device == device) return {};
  Path chosen = Path::sm80;
  FUSEDMOE_RETURN_IF_ERROR(choose_path(device, chosen));
  for (Path path : {Path::sm80, chosen}) {
    for (DType dtype : {DType::bf16, DType::f16}) {
      for (GemmTile tile : kGemmTiles) {
        if (path == Path::sm80 && !has_sm80_kernel(tile)) continue;
        const auto prepare = [&]<class K>() { return K::prepare(); };
        FUSEDMOE_RETURN_IF_ERROR(dispatch<false>(dtype, tile, path, prepare));
        FUSEDMOE_RETURN_IF_ERROR(dispatch<true>(dtype, tile, path, prepare));
      }
    }
  }
  g_path.store(chosen, std::memory_order_relaxed);
  int major = 0;
  FUSEDMOE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const char* overlap = std::getenv("FUSEDMOE_CUDA_OVERLAP");
  g_overlap.store(major >= 9 && (overlap == nullptr || std::string_view(overlap) != "0"),
                  std::memory_order_relaxed);
  prepared_device = device;
  return {};
}

bool gemm_maps_weights() { return current_path() == Path::sm90; }

bool launches_overlap() { return g_overlap.load(std::memory_order_relaxed); }

}  // namespace fusedmoe::cuda
