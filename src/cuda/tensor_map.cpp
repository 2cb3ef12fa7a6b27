#include "cuda/tensor_map.hpp"

#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>

#include <limits>
#include <string>

namespace fusedmoe::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                                             cudaEnableDefault, &found);
#else
    const cudaError_t err =
        cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &found);
#endif
    if (err != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      static_cast<void>(cudaGetLastError());
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

}  // namespace

bool tensor_maps_available() { return encode_tiled() != nullptr; }

Status encode_rows_map(CUtensorMap& map, DType dtype, const void* base, std::int64_t rows,
                       std::int64_t cols, int box_cols, int box_rows) {
  if (dtype != DType::bf16 && dtype != DType::f16) {
    return {StatusCode::invalid_dtype, "tensor maps are made for bf16 or f16 weights"};
  }
  if (rows > std::numeric_limits<int>::max()) {
    return {StatusCode::invalid_shape, "a weight tensor map of " + std::to_string(rows) +
                                           " rows: the kernels' row coordinates are 32-bit"};
  }
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encode_tiled();
  if (encode == nullptr) {
    return {StatusCode::unsupported_arch,
            "the CUDA driver does not provide cuTensorMapEncodeTiled (driver older than 12.0)"};
  }
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * 2};  // bytes, of dimension 1
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = encode(
      &map,
      dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2,
      const_cast<void*>(base), dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return {StatusCode::cuda_error,
            "cuTensorMapEncodeTiled failed (CUresult " + std::to_string(static_cast<int>(r)) +
                ") for a " + std::to_string(rows) + " x " + std::to_string(cols) + " weight map"};
  }
  return {};
}

}  // namespace fusedmoe::cuda
