// Programmatic dependent launch (sm_90 and later). The forward's kernels are launched so that
// each one may be scheduled while the kernel before it on the stream is still draining
// (launch_kernel.cuh). Every such kernel calls wait_for_prior_grids() before its first global
// memory access, read or write: it returns once the grids it depends on have completed and their
// writes are visible, so the stream's order holds for the data. allow_dependent_grids() lets the
// next kernel's blocks be scheduled once every block of this grid has called it or exited; called
// at a block's start it only moves the next kernel's launch and prologue ahead, never its data
// accesses. Below sm_90 the launches are ordinary and both are no-ops.
#pragma once

namespace fusedmoe::cuda::ptx {

__device__ __forceinline__ void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependent_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Both, at the start of a forward kernel.
__device__ __forceinline__ void enter_dependent_grid() {
  wait_for_prior_grids();
  allow_dependent_grids();
}

}  // namespace fusedmoe::cuda::ptx
