// Launchers of the expert GEMMs: the one place where (dtype, tile) become template arguments.
// Instantiated here and nowhere else: 2 dtypes x 3 tiles x 2 GEMMs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <mutex>

#include "core/check.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/kernels/gemm/sm80/sm80_grouped_gemm_gated.cuh"
#include "cuda/kernels/gemm/sm80/sm80_grouped_gemm_weighted.cuh"
#include "cuda/launch.hpp"

namespace fusedmoe::cuda {
namespace {

// (BM, BN, warps along M, warps along N, stages) of each GemmTile, for the gated GEMM and for
// the weighted one (kWeighted), whose A tile holds two planes.
template <GemmTile kTile, bool kWeighted>
struct TileShape;
template <bool kWeighted>
struct TileShape<GemmTile::m16n64, kWeighted> {
  static constexpr int kBM = 16, kBN = 64, kWarpsM = 1, kWarpsN = 4, kStages = 4;
};
template <>
struct TileShape<GemmTile::m64n128, false> {
  static constexpr int kBM = 64, kBN = 128, kWarpsM = 2, kWarpsN = 2, kStages = 3;
};
// The weighted GEMM's 96 KB of stages leave room for two blocks per SM: eight warps each keep
// enough MMAs in flight (four were measured latency-bound on mixtral T = 256).
template <>
struct TileShape<GemmTile::m64n128, true> {
  static constexpr int kBM = 64, kBN = 128, kWarpsM = 2, kWarpsN = 4, kStages = 3;
};
template <bool kWeighted>
struct TileShape<GemmTile::m128n128, kWeighted> {
  static constexpr int kBM = 128, kBN = 128, kWarpsM = 2, kWarpsN = 4, kStages = 3;
};

template <class Elem, GemmTile kTile, bool kWeighted>
struct GemmKernel {
  using S = TileShape<kTile, kWeighted>;
  using Mainloop = sm80::GroupedMainloop<Elem, S::kBM, S::kBN, S::kWarpsM, S::kWarpsN, S::kStages,
                                         kWeighted ? 2 : 1>;
  static constexpr int kThreads = Mainloop::kThreads;
  static constexpr int kSmem = Mainloop::kSmemBytes;
  static auto fn() {
    if constexpr (kWeighted) {
      return &sm80::sm80_grouped_gemm_weighted<Elem, S::kBM, S::kBN, S::kWarpsM, S::kWarpsN,
                                               S::kStages>;
    } else {
      return &sm80::sm80_grouped_gemm_gated<Elem, S::kBM, S::kBN, S::kWarpsM, S::kWarpsN,
                                            S::kStages>;
    }
  }
  static Status prepare() {
    FUSEDMOE_CUDA_CHECK(
        cudaFuncSetAttribute(fn(), cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return {};
  }
};

TileList tile_list(const TileArgs& t) {
  TileList l;
  l.tiles = static_cast<const int2*>(t.tiles);
  l.count = t.count;
  l.offsets = t.offsets;
  l.rows = t.rows;
  return l;
}

template <class Elem, GemmTile kTile>
Status gated(const GatedGemmArgs& a, cudaStream_t stream) {
  using K = GemmKernel<Elem, kTile, false>;
  sm80::GatedGemmParams<Elem> p;
  p.x = static_cast<const Elem*>(a.x);
  p.x_ld = a.x_ld;
  p.x_cols = a.x_cols;
  p.perm = a.perm;
  p.top_k = a.top_k;
  p.tiles = tile_list(a.tiles);
  p.w = static_cast<const Elem*>(a.w);
  p.w_expert_stride = a.w_expert_stride;
  p.k_pad = a.k_pad;
  p.bias = a.bias;
  p.bias_expert_stride = a.bias_expert_stride;
  p.act_hi = static_cast<Elem*>(a.act);
  p.act_lo = static_cast<Elem*>(a.act) + a.act_plane_stride;
  p.act_ld = a.act_ld;
  p.activation = {static_cast<ActivationKind>(a.activation), a.limit, a.alpha};
  const dim3 grid(static_cast<unsigned>(a.tiles.capacity),
                  static_cast<unsigned>(a.n_rows / K::S::kBN));
  K::fn()<<<grid, K::kThreads, K::kSmem, stream>>>(p);
  FUSEDMOE_CUDA_CHECK_LAUNCH("sm80_grouped_gemm_gated");
  return {};
}

template <class Elem, GemmTile kTile>
Status weighted(const WeightedGemmArgs& a, cudaStream_t stream) {
  using K = GemmKernel<Elem, kTile, true>;
  sm80::WeightedGemmParams<Elem> p;
  p.act_hi = static_cast<const Elem*>(a.act);
  p.plane_stride = a.act_plane_stride;
  p.act_ld = a.act_ld;
  p.tiles = tile_list(a.tiles);
  p.perm = a.perm;
  p.weights = a.weights;
  p.w = static_cast<const Elem*>(a.w);
  p.w_expert_stride = a.w_expert_stride;
  p.bias = a.bias;
  p.bias_expert_stride = a.bias_expert_stride;
  p.y = a.y;
  p.y_ld = a.y_ld;
  const dim3 grid(static_cast<unsigned>(a.tiles.capacity),
                  static_cast<unsigned>(a.n_rows / K::S::kBN));
  K::fn()<<<grid, K::kThreads, K::kSmem, stream>>>(p);
  FUSEDMOE_CUDA_CHECK_LAUNCH("sm80_grouped_gemm_weighted");
  return {};
}

// Calls f.template operator()<Elem, kTile>() for the runtime (dtype, tile).
template <class F>
Status dispatch(DType dtype, GemmTile tile, F&& f) {
  const auto by_tile = [&]<class Elem>() -> Status {
    switch (tile) {
      case GemmTile::m16n64:
        return f.template operator()<Elem, GemmTile::m16n64>();
      case GemmTile::m64n128:
        return f.template operator()<Elem, GemmTile::m64n128>();
      case GemmTile::m128n128:
        return f.template operator()<Elem, GemmTile::m128n128>();
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

}  // namespace

Status launch_gated_gemm(DType dtype, GemmTile tile, const GatedGemmArgs& args,
                         cudaStream_t stream) {
  if (args.tiles.capacity == 0) return {};
  return dispatch(dtype, tile,
                  [&]<class Elem, GemmTile kTile>() { return gated<Elem, kTile>(args, stream); });
}

Status launch_weighted_gemm(DType dtype, GemmTile tile, const WeightedGemmArgs& args,
                            cudaStream_t stream) {
  if (args.tiles.capacity == 0) return {};
  return dispatch(dtype, tile, [&]<class Elem, GemmTile kTile>() {
    return weighted<Elem, kTile>(args, stream);
  });
}

Status prepare_gemm_kernels() {
  static std::mutex mutex;
  static int prepared_device = -1;
  int device = 0;
  FUSEDMOE_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  if (prepared_device == device) return {};
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (GemmTile tile : {GemmTile::m16n64, GemmTile::m64n128, GemmTile::m128n128}) {
      FUSEDMOE_RETURN_IF_ERROR(dispatch(dtype, tile, [&]<class Elem, GemmTile kTile>() -> Status {
        FUSEDMOE_RETURN_IF_ERROR((GemmKernel<Elem, kTile, false>::prepare()));
        return GemmKernel<Elem, kTile, true>::prepare();
      }));
    }
  }
  prepared_device = device;
  return {};
}

std::size_t gemm_smem_bytes(GemmTile tile, bool weighted) {
  std::size_t bytes = 0;
  static_cast<void>(dispatch(DType::bf16, tile, [&]<class Elem, GemmTile kTile>() -> Status {
    bytes = weighted ? GemmKernel<Elem, kTile, true>::kSmem : GemmKernel<Elem, kTile, false>::kSmem;
    return {};
  }));
  return bytes;
}

}  // namespace fusedmoe::cuda
