// How the launchers (launch_*.cu) start the forward's kernels: in place of kernel<<<grid, block,
// smem, stream>>>(args...), with programmatic dependent launch where launches_overlap() says so
// (sm_90 and later). The kernel may then be scheduled while the kernel before it on the stream
// drains, and it waits for that kernel inside; so every kernel started here begins with
// ptx::enter_dependent_grid() (kernels/ptx/grid_dependency.cuh). As with <<< >>>, a failed launch
// is this thread's last error: the caller checks it with FUSEDMOE_CUDA_CHECK_LAUNCH.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "cuda/launch.hpp"

namespace fusedmoe::cuda {

template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                   cudaStream_t stream, const Args&... args) {
  cudaLaunchAttribute overlap{};
  overlap.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &overlap;
  config.numAttrs = launches_overlap() ? 1 : 0;
  static_cast<void>(cudaLaunchKernelEx(&config, kernel, args...));
}

}  // namespace fusedmoe::cuda
