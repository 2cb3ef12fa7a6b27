// What a backend provides to the core. The core validates every argument before calling in, so
// a backend's pack() and forward() may assume well-formed input (shapes, dtypes, devices,
// workspace size). Backends register by defining the accessors at the bottom; the core never
// includes a backend's headers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/weight_source.hpp"
#include "fusedmoe/config.hpp"
#include "fusedmoe/layer.hpp"
#include "fusedmoe/weights.hpp"

namespace fusedmoe {

// A backend's packed weights derive from this.
struct PackedWeights::Impl {
  Impl(Backend backend, const LayerConfig& config) : backend(backend), config(config) {}
  virtual ~Impl() = default;
  virtual std::size_t bytes() const = 0;
  // Precomputed ids outside [0, E) seen since the last call; resets the count. A backend that
  // counts on a device overrides this (and synchronises to read it).
  virtual std::int64_t take_invalid_ids() const { return invalid_ids.exchange(0); }

  Backend backend;
  LayerConfig config;
  // Precomputed ids outside [0, E) seen by forward (CONTRACT.md: counted, contribute zero).
  mutable std::atomic<std::int64_t> invalid_ids{0};
};

namespace core {

class BackendOps {
 public:
  virtual ~BackendOps() = default;
  virtual Backend kind() const = 0;
  virtual Device device() const = 0;
  // Where pack() reads the caller's weights from (the CUDA backend packs on the host, then copies).
  virtual Device weights_device() const { return device(); }
  // Whether forward may write `out` in f32 whatever the layer dtype (the reference does).
  virtual bool writes_f32_out() const { return false; }
  virtual Result<std::unique_ptr<PackedWeights::Impl>> pack(const LayerConfig& config,
                                                            const WeightSource& source) const = 0;
  virtual std::size_t workspace_size(const LayerConfig& config, std::int64_t tokens) const = 0;
  // What forward runs for `tokens` rows, in words (Layer::describe); called with T > 0.
  virtual std::string describe(const LayerConfig& config, std::int64_t tokens) const = 0;
  // Called with T > 0 and arguments already checked.
  virtual Status forward(const PackedWeights::Impl& weights, const ForwardArgs& args) const = 0;
};

// The backends this build links. cuda_backend() is nullptr without CUDA support or a GPU.
const BackendOps& reference_backend();
const BackendOps& cpu_backend();
const BackendOps* cuda_backend();

// nullptr when the backend is not available.
const BackendOps* backend_ops(Backend backend);

}  // namespace core
}  // namespace fusedmoe
