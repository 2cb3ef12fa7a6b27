// Where a mainloop that loads B with the bulk tensor copy engine finds it: a 2-D tensor map over
// all experts' packed rows ([experts · rows per expert, K], 128-byte swizzle, boxes of 64 x 128)
// and the map row of the block's first B row. Mainloops that load B with cp.async ignore it.
#pragma once

#include <cuda.h>  // CUtensorMap (a plain struct: no driver calls here)

namespace fusedmoe::cuda {

struct MapRows {
  const CUtensorMap* map = nullptr;  // the address of a __grid_constant__ kernel parameter
  int row = 0;
};

}  // namespace fusedmoe::cuda
