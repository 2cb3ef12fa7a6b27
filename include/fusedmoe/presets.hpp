// The one registry of model presets and shape lists. The tests, the benchmarks and the
// `fusedmoe` command all read it; MODELS.md is its specification.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "fusedmoe/config.hpp"

namespace fusedmoe {

struct Preset {
  std::string_view name;     // "mixtral-8x7b", "seed-deepseek-v3", ...
  std::string_view summary;  // one line: model and routing
  LayerConfig config;        // bf16, real sizes
};

std::span<const Preset> presets();
// nullptr when no preset has that name.
const Preset* find_preset(std::string_view name);

// The same layer with fewer routed experts, for machines that cannot hold all of them: groups
// keep their count (each holds experts / n_group), k and the routing stay. `experts` is rounded
// up to what the routing needs (a multiple of n_group, at least k and two per kept group).
LayerConfig with_experts(const LayerConfig& config, std::int64_t experts);

// Bytes of routed + shared expert weights (and router) of a layer.
std::int64_t weight_bytes(const LayerConfig& config);

// Token counts every backend is checked at (CONTRACT.md) and the benchmark grid (PERF.md).
std::span<const std::int64_t> contract_token_counts();
std::span<const std::int64_t> bench_token_counts();

}  // namespace fusedmoe
