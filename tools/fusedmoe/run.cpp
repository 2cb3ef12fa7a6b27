// `fusedmoe run`: one layer, one token count, timed and compared with its floor.
#include <cstdio>
#include <optional>

#include "cases.hpp"
#include "commands.hpp"
#include "fusedmoe_bench/progress.hpp"

namespace fusedmoe::cli {

int run_command(const Options& o, const std::string& command_line) {
  const bool from_checkpoint = !o.weights_path.empty();
  const Backend backend = resolve_backend(o.backend);
  const double skew = o.skews.front();
  const std::int64_t tokens = o.tokens.front();
  const bench::MachineInfo machine = bench::machine_info();
  // Checks the backend first: a machine that cannot run it gets one line saying why.
  Result<Target> measured = measure_target(backend, machine, o.quiet);
  if (!measured.ok()) {
    std::fprintf(stderr, "fusedmoe: %s\n", measured.status().to_string().c_str());
    return kExitFailure;
  }
  const Target& target = measured.value();
  // A checkpoint's layer is loaded once the backend is known to run; its config is its own.
  std::optional<CheckpointLayer> loaded;
  if (from_checkpoint) {
    Result<CheckpointLayer> l = load_checkpoint_layer(o, 2);
    if (!l.ok()) {
      std::fprintf(stderr, "fusedmoe: %s\n", l.status().to_string().c_str());
      return kExitFailure;
    }
    loaded = std::move(l).value();
  }
  const LayerCase layer =
      loaded ? LayerCase{loaded->name, loaded->weights.config} : selected_layers(o).front();

  const LayerConfig wanted = with_skew(layer.config, skew);
  // Host weights and the packed copy exist together while packing (on the GPU: the copies).
  const int wanted_copies = target.weight_copies(wanted);
  const MemoryFit fit =
      fit_in_memory(layer.name, wanted, 2, target.gpu ? wanted_copies : 0, target.memory_bytes);
  if (!fit.fits || (loaded && fit.reduced)) {
    std::fprintf(stderr, "fusedmoe: %s\n", fit.note.c_str());
    return kExitFailure;
  }
  const LayerConfig& config = fit.config;
  const int copies = fit.reduced ? 1 : wanted_copies;
  const TimingPlan plan = timing_plan(o, target, tokens);

  const int calls = plan.warmup + plan.reps + rotation_batches(config, tokens);
  bench::Progress progress(3,
                           {estimate_random_weights_us(config), estimate_pack_us(config, copies),
                            estimate_calls_us(config, tokens, calls, backend, target)},
                           o.quiet);

  progress.start((loaded ? "loaded " : "random weights for ") + layer.name);
  Result<LayerRunner> runner = [&]() -> Result<LayerRunner> {
    if (loaded) {
      progress.finish_step();
      progress.start("packing for " + std::string(to_string(backend)));
      return LayerRunner::create(config, loaded->weights.weights, backend, copies);
    }
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
  Result<Workload> work = make_workload(config, tokens, rotation_batches(config, tokens), skew,
                                        o.seed, runner->on_gpu());
  Result<double> hit =
      work.ok() ? mean_experts_hit(runner.value(), work.value(), config) : work.status();
  Result<Measurement> m =
      hit.ok() ? measure(runner.value(), work.value(), config, hit.value(), plan, target)
               : Result<Measurement>(hit.status());
  progress.finish_step();
  progress.clear();
  if (!m.ok()) {
    std::fprintf(stderr, "fusedmoe: %s\n", m.status().to_string().c_str());
    return kExitFailure;
  }

  std::printf("fusedmoe run: %s: %s\n", layer.name.c_str(), describe_layer(config).c_str());
  if (loaded) std::printf("  weights: %s\n", o.weights_path.c_str());
  if (fit.reduced) std::printf("  note: %s\n", fit.note.c_str());
  std::printf("  backend %s; %s, %s\n", std::string(to_string(backend)).c_str(),
              target.device.c_str(), target.details.c_str());
  char routing[64] = "the layer's router";
  if (skew > 0) std::snprintf(routing, sizeof(routing), "Zipf routing s=%g", skew);
  const WeightLayout layout = loaded ? loaded->weights.weights.experts.layout : o.layout;
  std::printf("  tokens %lld, layout %s, seed %llu, %s; %d input batches x %d weight cop%s\n",
              static_cast<long long>(tokens), std::string(to_string(layout)).c_str(),
              static_cast<unsigned long long>(o.seed), routing, work->batches(), runner->copies(),
              runner->copies() == 1 ? "y" : "ies");
  std::printf("  experts hit: %.1f of %lld per batch (mean)\n", m->experts_hit,
              static_cast<long long>(config.experts));
  const std::string kernels = runner->describe(tokens);
  std::printf("  kernels: %s\n", kernels.c_str());
  const char* timer = !m->cuda_events ? "wall clock"
                      : m->graph      ? "CUDA events, CUDA graph replays"
                                      : "CUDA events, stream launches";
  std::printf(
      "  median %.1f us (p10 %.1f, p90 %.1f, min %.1f, max %.1f; %d reps after %d warm-up; %s)\n",
      m->time.median_us, m->time.p10_us, m->time.p90_us, m->time.min_us, m->time.max_us,
      m->time.reps, m->warmup, timer);
  std::printf("  %.0f tokens/s, %.1f GB/s, %.1f GFLOP/s\n",
              static_cast<double>(tokens) / (m->time.median_us * 1e-6), m->gbps(), m->gflops());
  std::printf(
      "  floor %.1f us, %s-bound (%s at %.1f GB/s; %.3g GFLOP at %.1f GFLOP/s): %.1f%% "
      "of floor\n",
      m->floor.us, std::string(m->floor.bound()).c_str(), format_bytes(m->work.bytes).c_str(),
      target.read_gbps, m->work.flops * 1e-9, target.compute_gflops, m->pct_of_floor());
  std::printf("  ceilings: %s\n", target.ceilings.c_str());
  if (m->time.reps < kDefaultReps) {
    std::printf("  note: %d reps; PERF.md asks for the median of at least %d\n", m->time.reps,
                kDefaultReps);
  }
  if (const std::string busy = machine.busy_warning(); !busy.empty() && !target.gpu) {
    std::printf("  warning: %s\n", busy.c_str());
  }

  if (!o.json_path.empty()) {
    const ResultRow row{layer.name, config, tokens, skew, backend, m.value(), kernels};
    std::string error;
    if (!bench::append_json_line(o.json_path, result_json(row, machine, target, command_line),
                                 &error)) {
      std::fprintf(stderr, "fusedmoe: %s\n", error.c_str());
      return kExitFailure;
    }
  }
  return kExitOk;
}

}  // namespace fusedmoe::cli
