// Builds without the CUDA backend.
#include "core/backend.hpp"

namespace fusedmoe::core {

const BackendOps* cuda_backend() { return nullptr; }

}  // namespace fusedmoe::core
