// The smallest complete use of the C++ API: a random layer with a preset's routing at reduced
// sizes, packed for the CPU, run on random tokens, checked against the reference backend.
#include <cstdio>
#include <vector>

#include "fusedmoe/compare.hpp"
#include "fusedmoe/layer.hpp"
#include "fusedmoe/presets.hpp"
#include "fusedmoe/workload.hpp"

int main() {
  fusedmoe::LayerConfig config = fusedmoe::find_preset("qwen3-30b-a3b")->config;
  config.hidden = 256;  // the preset's routing at a size that runs in milliseconds
  config.intermediate = 96;
  const std::int64_t tokens = 5;

  const fusedmoe::HostWeights weights = fusedmoe::HostWeights::random(config, {.seed = 7});
  fusedmoe::HostTensor x(config.dtype, {tokens, config.hidden});
  x.randomize(fusedmoe::Fill::gaussian, 7, 100);

  fusedmoe::HostTensor out[2] = {{config.dtype, {tokens, config.hidden}},
                                 {fusedmoe::DType::f32, {tokens, config.hidden}}};
  const fusedmoe::Backend backends[2] = {fusedmoe::Backend::cpu, fusedmoe::Backend::reference};
  for (int b = 0; b < 2; ++b) {
    auto packed = fusedmoe::pack_weights(config, weights.view(), backends[b]);
    if (!packed.ok()) return std::printf("%s\n", packed.status().to_string().c_str()), 1;
    auto layer = fusedmoe::Layer::create(config, std::move(packed).value());
    if (!layer.ok()) return std::printf("%s\n", layer.status().to_string().c_str()), 1;
    std::vector<std::byte> workspace(layer->workspace_size(tokens));
    const fusedmoe::Status s = layer->forward(
        {.x = x.cref(), .out = out[b].ref(), .workspace = {workspace.data(), workspace.size()}});
    if (!s.ok()) return std::printf("%s\n", s.to_string().c_str()), 1;
  }
  auto cmp = fusedmoe::compare(out[0].cref(), out[1].cref(), fusedmoe::tolerance_for(config.dtype));
  std::printf("cpu vs reference: %s\n", cmp.value().summary().c_str());
  return cmp.value().passed ? 0 : 1;
}
