// Launchers of the stages around the expert GEMMs: router logits, top-k, align, x staging and the
// combine.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/cuda_check.hpp"
#include "cuda/kernels/align/align.cuh"
#include "cuda/kernels/align/stage_rows.cuh"
#include "cuda/kernels/combine/combine.cuh"
#include "cuda/kernels/router/router_logits.cuh"
#include "cuda/kernels/router/topk.cuh"
#include "cuda/launch.hpp"
#include "cuda/launch_kernel.cuh"

namespace fusedmoe::cuda {
namespace {

unsigned blocks(std::int64_t n, std::int64_t per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

}  // namespace

static_assert(kRouterSliceK == kRouterSlice, "plan.hpp and the router kernel agree on the slice");
static_assert(kAlignMaxExperts >= kMaxCudaExperts, "align scans every expert");

Status launch_router_logits(DType dtype, const void* x, std::int64_t x_ld, const float* router,
                            int tokens, int logits, int hidden, int slices, float* partial,
                            cudaStream_t stream) {
  const dim3 grid(blocks(logits, kRouterTileL), blocks(tokens, kRouterTileT),
                  static_cast<unsigned>(slices));
  switch (dtype) {
    case DType::bf16:
      launch_kernel(router_logits<__nv_bfloat16>, grid, kRouterThreads, 0, stream,
                    static_cast<const __nv_bfloat16*>(x), x_ld, router, tokens, logits, hidden,
                    partial);
      break;
    case DType::f16:
      launch_kernel(router_logits<__half>, grid, kRouterThreads, 0, stream,
                    static_cast<const __half*>(x), x_ld, router, tokens, logits, hidden, partial);
      break;
    default:
      return {StatusCode::invalid_dtype, "the CUDA router takes bf16 or f16 activations"};
  }
  FUSEDMOE_CUDA_CHECK_LAUNCH("router_logits");
  return {};
}

Status launch_route(const RouteArgs& a, cudaStream_t stream) {
  RouteParams p;
  p.kind = static_cast<RoutingKindId>(a.kind);
  p.renormalize = a.renormalize;
  p.n_group = a.n_group;
  p.topk_group = a.topk_group;
  p.scaling = a.scaling;
  p.tokens = a.tokens;
  p.experts = a.experts;
  p.top_k = a.top_k;
  p.partial = a.partial;
  p.slices = a.slices;
  p.logits = a.logits;
  p.router_bias = a.router_bias;
  p.correction_bias = a.correction_bias;
  p.topk_ids = {a.topk_ids, a.topk_ids_row, a.topk_ids_col};
  p.topk_weights = {a.topk_weights, a.topk_weights_row, a.topk_weights_col};
  p.ids = a.ids;
  p.weights = a.weights;
  p.shared_gate = a.shared_gate;
  p.ids_out = {a.ids_out, a.ids_out_row, a.ids_out_col};
  p.weights_out = {a.weights_out, a.weights_out_row, a.weights_out_col};
  // as many warps (tokens) per block as fit the default 48 KB of shared memory
  constexpr std::size_t kSmemLimit = 48 * 1024;
  const int warps = static_cast<int>(
      std::clamp<std::size_t>(kSmemLimit / topk_smem_bytes(a.experts, 1), 1, kTopkMaxWarps));
  launch_kernel(route_tokens, blocks(a.tokens, warps), static_cast<unsigned>(warps * 32),
                topk_smem_bytes(a.experts, warps), stream, p);
  FUSEDMOE_CUDA_CHECK_LAUNCH("route_tokens");
  return {};
}

Status launch_align(const AlignArgs& a, cudaStream_t stream) {
  AlignParams p;
  p.ids = a.ids;
  p.slots = a.slots;
  p.experts = a.experts;
  p.block_m = a.block_m;
  p.offsets = a.offsets;
  p.perm = a.perm;
  p.pos = a.pos;
  p.tiles = static_cast<int2*>(a.tiles);
  p.tile_count = a.tile_count;
  p.narrow_rows = a.narrow_rows;
  p.narrow = static_cast<int2*>(a.narrow);
  p.narrow_count = a.narrow_count;
  p.invalid_ids = a.invalid_ids;
  const std::size_t smem = 3 * static_cast<std::size_t>(a.experts) * sizeof(int);
  launch_kernel(align_slots, 1, kAlignThreads, smem, stream, p);
  FUSEDMOE_CUDA_CHECK_LAUNCH("align_slots");
  return {};
}

Status launch_stage_rows(DType dtype, const void* x, std::int64_t x_ld, int tokens, int cols,
                         void* staged, int ld, cudaStream_t stream) {
  constexpr int kThreads = 256;
  switch (dtype) {
    case DType::bf16:
      launch_kernel(stage_rows<__nv_bfloat16>, static_cast<unsigned>(tokens), kThreads, 0, stream,
                    static_cast<const __nv_bfloat16*>(x), x_ld, tokens, cols,
                    static_cast<__nv_bfloat16*>(staged), ld);
      break;
    case DType::f16:
      launch_kernel(stage_rows<__half>, static_cast<unsigned>(tokens), kThreads, 0, stream,
                    static_cast<const __half*>(x), x_ld, tokens, cols, static_cast<__half*>(staged),
                    ld);
      break;
    default:
      return {StatusCode::invalid_dtype, "staging takes bf16 or f16"};
  }
  FUSEDMOE_CUDA_CHECK_LAUNCH("stage_rows");
  return {};
}

Status launch_combine(DType dtype, const CombineArgs& a, cudaStream_t stream) {
  CombineParams p;
  p.y = a.y;
  p.pos = a.pos;
  p.shared_y = a.shared_y;
  p.y_ld = a.y_ld;
  p.tokens = a.tokens;
  p.top_k = a.top_k;
  p.hidden = a.hidden;
  p.out = a.out;
  p.out_ld = a.out_ld;
  const auto launch = [&]<class Elem>() {
    // 4 columns per thread when every row of out starts at a multiple of 4 elements
    const bool vec = a.hidden % 4 == 0 && a.out_ld % 4 == 0 &&
                     reinterpret_cast<std::uintptr_t>(a.out) % (4 * sizeof(Elem)) == 0;
    launch_kernel(vec ? combine_slots<Elem, 4> : combine_slots<Elem, 1>,
                  static_cast<unsigned>(a.tokens), kCombineThreads, 0, stream, p);
  };
  switch (dtype) {
    case DType::bf16:
      launch.template operator()<__nv_bfloat16>();
      break;
    case DType::f16:
      launch.template operator()<__half>();
      break;
    default:
      return {StatusCode::invalid_dtype, "combine writes bf16 or f16"};
  }
  FUSEDMOE_CUDA_CHECK_LAUNCH("combine_slots");
  return {};
}

}  // namespace fusedmoe::cuda
