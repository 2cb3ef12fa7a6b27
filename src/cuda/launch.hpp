// Host launchers of the CUDA kernels (kernels/). Each picks the kernel and its template arguments
// from plain arguments, launches it on `stream` and returns the launch's status. Nothing here
// synchronises. Compiled by nvcc (launch_*.cu); callers need only the CUDA runtime header and
// cuda.h's CUtensorMap (a plain struct: no driver calls).
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/plan.hpp"
#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"

namespace fusedmoe::cuda {

// Which rows a GEMM computes: a device tile list (routed experts) or all `rows` rows in order.
struct TileArgs {
  const void* tiles = nullptr;  // int2 [capacity]: (expert, first row); nullptr: no list
  const int* count = nullptr;
  const int* offsets = nullptr;  // [E + 1]
  int rows = 0;                  // without a list
  std::int64_t capacity = 0;     // the grid's x: tiles in the list at most (or ceil(rows / BM))
  // Narrow tiles (tile_list.cuh), run by the sm_90a 64-row kernels only: narrow_capacity blocks
  // after the row tiles' `capacity`; 0 without them.
  const void* narrow = nullptr;  // int2 [narrow_capacity]; nullptr without a list
  const int* narrow_count = nullptr;
  std::int64_t narrow_capacity = 0;
};

struct GatedGemmArgs {
  const void* x = nullptr;
  std::int64_t x_ld = 0;
  int x_cols = 0;
  const int* perm = nullptr;
  int top_k = 1;
  TileArgs tiles;
  const void* w = nullptr;
  std::int64_t w_expert_stride = 0;
  const CUtensorMap* w_map = nullptr;  // w as a tensor map: needed when gemm_maps_weights()
  int n_rows = 0;                      // packed gate/up rows per expert (2 · inter_pad)
  int k_pad = 0;
  const float* bias = nullptr;
  std::int64_t bias_expert_stride = 0;
  void* act = nullptr;  // hi plane; lo plane follows at act_plane_stride
  std::int64_t act_plane_stride = 0;
  int act_ld = 0;
  int activation = 0;  // fusedmoe::Activation as int
  float limit = 7.0f, alpha = 1.702f;
};
Status launch_gated_gemm(DType dtype, GemmTile tile, const GatedGemmArgs& args,
                         cudaStream_t stream);

struct WeightedGemmArgs {
  const void* act = nullptr;
  std::int64_t act_plane_stride = 0;
  int act_ld = 0;
  TileArgs tiles;
  const int* perm = nullptr;
  const float* weights = nullptr;
  const void* w = nullptr;
  std::int64_t w_expert_stride = 0;
  const CUtensorMap* w_map = nullptr;  // w as a tensor map: needed when gemm_maps_weights()
  int n_rows = 0;                      // hidden_pad
  const float* bias = nullptr;
  std::int64_t bias_expert_stride = 0;
  float* y = nullptr;
  int y_ld = 0;
};
Status launch_weighted_gemm(DType dtype, GemmTile tile, const WeightedGemmArgs& args,
                            cudaStream_t stream);

// Picks the mainloop the device runs (sm_90a wgmma or sm_80 mma.sync), sets the shared-memory
// limits of its GEMM instantiations and decides whether launches overlap (once per process and
// device).
Status prepare_kernels();
// Whether the launchers start kernels with programmatic dependent launch (launch_kernel.cuh): on
// sm_90 and later unless FUSEDMOE_CUDA_OVERLAP=0 (3-9 us less per forward, bench/NOTES.md).
bool launches_overlap();
// Whether the mainloop prepare_kernels() picked loads the weights by TMA, so that every GEMM
// call must pass them as tensor maps (boxes of kWeightMapBoxCols x kWeightMapBoxRows).
bool gemm_maps_weights();
inline constexpr int kWeightMapBoxCols = 64;   // the mainloops' BK
inline constexpr int kWeightMapBoxRows = 128;  // the sm_90a tiles' BN (m96n256: two boxes)

Status launch_router_logits(DType dtype, const void* x, std::int64_t x_ld, const float* router,
                            int tokens, int logits, int hidden, int slices, float* partial,
                            cudaStream_t stream);

struct RouteArgs {
  int kind = 0;  // fusedmoe::RoutingKind as int
  bool renormalize = false;
  int n_group = 1, topk_group = 1;
  float scaling = 1.0f;
  int tokens = 0, experts = 0, top_k = 0;
  const float* partial = nullptr;
  int slices = 0, logits = 0;
  const float* router_bias = nullptr;
  const float* correction_bias = nullptr;
  const std::int32_t* topk_ids = nullptr;
  std::int64_t topk_ids_row = 0, topk_ids_col = 0;
  const float* topk_weights = nullptr;
  std::int64_t topk_weights_row = 0, topk_weights_col = 0;
  std::int32_t* ids = nullptr;
  float* weights = nullptr;
  float* shared_gate = nullptr;
  std::int32_t* ids_out = nullptr;
  std::int64_t ids_out_row = 0, ids_out_col = 0;
  float* weights_out = nullptr;
  std::int64_t weights_out_row = 0, weights_out_col = 0;
};
Status launch_route(const RouteArgs& args, cudaStream_t stream);

struct AlignArgs {
  const std::int32_t* ids = nullptr;
  int slots = 0, experts = 0, block_m = 0;
  int narrow_rows = 0;  // an expert with 1..narrow_rows rows takes a narrow tile; 0: never
  int* offsets = nullptr;
  int* tile_count = nullptr;
  int* narrow_count = nullptr;
  void* narrow = nullptr;  // int2 [experts]
  int* perm = nullptr;
  int* pos = nullptr;
  void* tiles = nullptr;
  unsigned long long* invalid_ids = nullptr;
};
Status launch_align(const AlignArgs& args, cudaStream_t stream);

// Largest expert count route and align support.
inline constexpr std::int64_t kMaxCudaExperts = 3072;

Status launch_stage_rows(DType dtype, const void* x, std::int64_t x_ld, int tokens, int cols,
                         void* staged, int ld, cudaStream_t stream);

struct CombineArgs {
  const float* y = nullptr;
  const int* pos = nullptr;
  const float* shared_y = nullptr;
  int y_ld = 0;
  int tokens = 0, top_k = 0, hidden = 0;
  void* out = nullptr;
  std::int64_t out_ld = 0;
};
Status launch_combine(DType dtype, const CombineArgs& args, cudaStream_t stream);

}  // namespace fusedmoe::cuda
