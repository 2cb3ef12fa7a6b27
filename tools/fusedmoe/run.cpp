// `fusedmoe run`: one layer, one token count, timed and compared with its floor.
#include <cstdio>

#include "cases.hpp"
#include "commands.hpp"
#include "fusedmoe_bench/progress.hpp"

namespace fusedmoe::cli {

int run_command(const Options& o, const std::string& command_line) {
  const LayerCase layer = selected_layers(o).front();
  const Backend backend = resolve_backend(o.backend);
  if (const Status s = check_backend(backend); !s.ok()) {
    std::fprintf(stderr, "fusedmoe: %s\n", s.to_string().c_str());
    return kExitFailure;
  }
  const double skew = o.skews.front();
  const std::int64_t tokens = o.tokens.front();
  const bench::MachineInfo machine = bench::machine_info();

  const LayerConfig wanted = with_skew(layer.config, skew);
  // Host weights and the packed copy exist together while packing.
  const MemoryFit fit = fit_in_memory(layer.name, wanted, 2);
  if (!fit.fits) {
    std::fprintf(stderr, "fusedmoe: %s\n", fit.note.c_str());
    return kExitFailure;
  }
  const LayerConfig& config = fit.config;
  const int copies = fit.reduced ? 1 : weight_copies(config, machine.llc_bytes);

  if (!o.quiet) std::fprintf(stderr, "measuring read bandwidth and FMA rate...\n");
  const bench::Ceilings ceilings = bench::measure_ceilings();
  const int calls = o.warmup + o.reps + rotation_batches(config, tokens);
  bench::Progress progress(3,
                           {estimate_random_weights_us(config), estimate_pack_us(config, copies),
                            estimate_calls_us(config, tokens, calls, backend, ceilings)},
                           o.quiet);

  progress.start("random weights for " + layer.name);
  Result<LayerRunner> runner = [&]() -> Result<LayerRunner> {
    const HostWeights weights =
        HostWeights::random(config, {.seed = o.seed, .fill = Fill::gaussian, .layout = o.layout});
    progress.finish_step();
    progress.start("packing for " + std::string(to_string(backend)));
    return LayerRunner::create(config, weights, backend, copies);
  }();
  progress.finish_step();
  if (!runner.ok()) {
    progress.clear();
    std::fprintf(stderr, "fusedmoe: %s\n", runner.status().to_string().c_str());
    return kExitFailure;
  }

  progress.start("timing T=" + std::to_string(tokens));
  const Workload work =
      make_workload(config, tokens, rotation_batches(config, tokens), skew, o.seed);
  Result<double> hit = mean_experts_hit(runner.value(), work, config);
  Result<Measurement> m =
      hit.ok() ? measure(runner.value(), work, config, hit.value(), o.warmup, o.reps, ceilings)
               : Result<Measurement>(hit.status());
  progress.finish_step();
  progress.clear();
  if (!m.ok()) {
    std::fprintf(stderr, "fusedmoe: %s\n", m.status().to_string().c_str());
    return kExitFailure;
  }

  std::printf("fusedmoe run: %s: %s\n", layer.name.c_str(), describe_layer(config).c_str());
  if (fit.reduced) std::printf("  note: %s\n", fit.note.c_str());
  std::printf("  backend %s; %s, %s", std::string(to_string(backend)).c_str(),
              machine.device().c_str(), machine.simd.c_str());
  if (machine.openmp_threads > 0) std::printf(", %d OpenMP threads", machine.openmp_threads);
  char routing[64] = "the layer's router";
  if (skew > 0) std::snprintf(routing, sizeof(routing), "Zipf routing s=%g", skew);
  std::printf("\n  tokens %lld, layout %s, seed %llu, %s; %d input batches x %d weight cop%s\n",
              static_cast<long long>(tokens), std::string(to_string(o.layout)).c_str(),
              static_cast<unsigned long long>(o.seed), routing, work.batches(), runner->copies(),
              runner->copies() == 1 ? "y" : "ies");
  std::printf("  experts hit: %.1f of %lld per batch (mean)\n", m->experts_hit,
              static_cast<long long>(config.experts));
  std::printf("  median %.1f us (min %.1f, max %.1f; %d reps after %d warm-up)\n",
              m->time.median_us, m->time.min_us, m->time.max_us, m->time.reps, o.warmup);
  std::printf("  %.0f tokens/s, %.1f GB/s, %.1f GFLOP/s\n",
              static_cast<double>(tokens) / (m->time.median_us * 1e-6), m->gbps(), m->gflops());
  std::printf(
      "  floor %.1f us, %s-bound (%s at %.1f GB/s; %.3g GFLOP at %.1f GFLOP/s): %.1f%% "
      "of floor\n",
      m->floor.us, std::string(m->floor.bound()).c_str(), format_bytes(m->work.bytes).c_str(),
      ceilings.read.gbps, m->work.flops * 1e-9, ceilings.compute.gflops, m->pct_of_floor());
  std::printf("  ceilings: %s\n", describe_ceilings(ceilings).c_str());
  if (const std::string busy = machine.busy_warning(); !busy.empty()) {
    std::printf("  warning: %s\n", busy.c_str());
  }

  if (!o.json_path.empty()) {
    const ResultRow row{layer.name, config, tokens, skew, backend, m.value()};
    std::string error;
    if (!bench::append_json_line(o.json_path, result_json(row, machine, ceilings, command_line),
                                 &error)) {
      std::fprintf(stderr, "fusedmoe: %s\n", error.c_str());
      return kExitFailure;
    }
  }
  return kExitOk;
}

}  // namespace fusedmoe::cli
