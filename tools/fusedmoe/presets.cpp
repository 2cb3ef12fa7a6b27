// `fusedmoe presets`: the registry as a table.
#include <cstdio>

#include "cases.hpp"
#include "commands.hpp"
#include "fusedmoe/presets.hpp"

namespace fusedmoe::cli {

int presets_command() {
  std::printf("%-20s %6s %6s %5s %3s %-14s %-38s %-16s %9s\n", "name", "H", "I", "E", "k", "shared",
              "routing", "activation", "weight_GB");
  for (const Preset& p : presets()) {
    const LayerConfig& c = p.config;
    std::string shared = "-";
    if (c.shared.intermediate > 0) {
      shared = "I=" + std::to_string(c.shared.intermediate) + (c.shared.gated ? " gated" : "");
    }
    std::string activation(to_string(c.activation));
    if (c.expert_bias) activation += "+bias";
    std::printf("%-20s %6lld %6lld %5lld %3lld %-14s %-38s %-16s %9.2f\n",
                std::string(p.name).c_str(), static_cast<long long>(c.hidden),
                static_cast<long long>(c.intermediate), static_cast<long long>(c.experts),
                static_cast<long long>(c.top_k), shared.c_str(), routing_summary(c.routing).c_str(),
                activation.c_str(), static_cast<double>(weight_bytes(c)) * 1e-9);
  }
  return kExitOk;
}

}  // namespace fusedmoe::cli
