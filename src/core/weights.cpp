#include "fusedmoe/weights.hpp"

#include <new>
#include <string>

#include "core/backend.hpp"
#include "core/check.hpp"

namespace fusedmoe {

std::string_view to_string(WeightLayout layout) {
  switch (layout) {
    case WeightLayout::gate_up_rows:
      return "gate_up_rows";
    case WeightLayout::up_gate_rows:
      return "up_gate_rows";
    case WeightLayout::interleaved_cols:
      return "interleaved_cols";
    case WeightLayout::separate:
      return "separate";
  }
  return "unknown_layout";
}

std::string_view to_string(Backend backend) {
  switch (backend) {
    case Backend::reference:
      return "reference";
    case Backend::cpu:
      return "cpu";
    case Backend::cuda:
      return "cuda";
  }
  return "unknown_backend";
}

bool backend_available(Backend backend) { return core::backend_ops(backend) != nullptr; }

Backend best_backend() { return backend_available(Backend::cuda) ? Backend::cuda : Backend::cpu; }

PackedWeights::PackedWeights() = default;
PackedWeights::PackedWeights(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PackedWeights::PackedWeights(PackedWeights&&) noexcept = default;
PackedWeights& PackedWeights::operator=(PackedWeights&&) noexcept = default;
PackedWeights::~PackedWeights() = default;

Backend PackedWeights::backend() const { return impl_ ? impl_->backend : Backend::cpu; }
std::size_t PackedWeights::bytes() const { return impl_ ? impl_->bytes() : 0; }

Result<PackedWeights> pack_weights(const LayerConfig& config, const WeightSet& weights,
                                   Backend backend) {
  FUSEDMOE_RETURN_IF_ERROR(validate(config));
  const core::BackendOps* ops = core::backend_ops(backend);
  if (ops == nullptr) {
    return Status{StatusCode::unsupported_arch, "the " + std::string(to_string(backend)) +
                                                    " backend is not available in this build "
                                                    "or on this machine"};
  }
  try {
    Result<core::WeightSource> source =
        core::WeightSource::create(config, weights, ops->weights_device());
    if (!source.ok()) return source.status();
    auto packed = ops->pack(config, source.value());
    if (!packed.ok()) return packed.status();
    return PackedWeights(std::move(packed).value());
  } catch (const std::bad_alloc&) {
    return Status{StatusCode::out_of_memory,
                  "packing the " + std::string(to_string(backend)) + " weights ran out of memory"};
  }
}

namespace core {

const BackendOps* backend_ops(Backend backend) {
  switch (backend) {
    case Backend::reference:
      return &reference_backend();
    case Backend::cpu:
      return &cpu_backend();
    case Backend::cuda:
      return cuda_backend();
  }
  return nullptr;
}

}  // namespace core
}  // namespace fusedmoe
