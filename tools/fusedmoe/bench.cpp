// `fusedmoe bench`: presets x token counts x skews, timed against the floor, as a table on stdout
// and optionally JSON Lines.
#include <algorithm>
#include <cstdio>
#include <new>
#include <optional>
#include <vector>

#include "cases.hpp"
#include "commands.hpp"
#include "fusedmoe_bench/progress.hpp"

namespace fusedmoe::cli {
namespace {

// The reference is naive on purpose; a few repetitions are enough to rank it.
constexpr int kReferenceMaxReps = 3;
constexpr std::int64_t kReferenceMaxTokens = 256;

enum class StepKind : std::uint8_t { build, backend, reference };

struct Step {
  StepKind kind;
  std::size_t layer;  // index into the selected layers
  bool zipf;          // the precomputed-routing variant of the layer
  std::int64_t tokens;
  double skew;
  double cost_us;  // expected, for the progress bar's ETA
};

bool reference_runs(const Options& o, std::int64_t tokens) {
  return o.reference && (o.reference_all || tokens <= kReferenceMaxTokens);
}

void print_header() {
  std::printf("%-20s %5s %5s %-19s %12s %12s %9s %9s %7s %-8s %s\n", "preset", "T", "skew", "impl",
              "experts", "us_median", "GB/s", "GFLOP/s", "%floor", "bound", "speedup");
}

void print_row(const ResultRow& r, std::optional<double> speedup) {
  char experts[32];
  std::snprintf(experts, sizeof(experts), "%.1f/%lld", r.m.experts_hit,
                static_cast<long long>(r.config.experts));
  char speed[32] = "";
  if (speedup) std::snprintf(speed, sizeof(speed), "cpu x%.1f", *speedup);
  std::printf("%-20s %5lld %5g %-19s %12s %12.1f %9.1f %9.1f %7.1f %-8s %s\n", r.preset.c_str(),
              static_cast<long long>(r.tokens), r.skew, impl_name(r.backend).c_str(), experts,
              r.m.time.median_us, r.m.gbps(), r.m.gflops(), r.m.pct_of_floor(),
              std::string(r.m.floor.bound()).c_str(), speed);
  std::fflush(stdout);
}

}  // namespace

int bench_command(const Options& o, const std::string& command_line) {
  const Backend backend = resolve_backend(o.backend);
  if (const Status s = check_backend(backend); !s.ok()) {
    std::fprintf(stderr, "fusedmoe: %s\n", s.to_string().c_str());
    return kExitFailure;
  }
  const std::vector<LayerCase> layers = selected_layers(o);
  const bench::MachineInfo machine = bench::machine_info();
  std::vector<double> own_router, zipf;
  for (double s : o.skews) (s > 0 ? zipf : own_router).push_back(s);

  if (!o.quiet) std::fprintf(stderr, "measuring read bandwidth and FMA rate...\n");
  const bench::Ceilings ceilings = bench::measure_ceilings();
  std::printf("fusedmoe bench: %s on %s, %s", std::string(to_string(backend)).c_str(),
              machine.device().c_str(), machine.simd.c_str());
  if (machine.openmp_threads > 0) std::printf(", %d OpenMP threads", machine.openmp_threads);
  std::printf("\nceilings: %s\n", describe_ceilings(ceilings).c_str());
  if (const std::string busy = machine.busy_warning(); !busy.empty()) {
    std::printf("warning: %s\n", busy.c_str());
  }
  std::printf("%s, layout %s, seed %llu, %d reps after %d warm-up (reference: at most %d)\n",
              std::string(to_string(o.dtype)).c_str(), std::string(to_string(o.layout)).c_str(),
              static_cast<unsigned long long>(o.seed), o.reps, o.warmup, kReferenceMaxReps);

  // Every step up front, so the progress bar knows the total and a fair ETA. Each layer variant
  // (its own router, or precomputed Zipf routing) starts with a step that builds its weights.
  std::vector<Step> steps;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    for (const bool is_zipf : {false, true}) {
      const std::vector<double>& skews = is_zipf ? zipf : own_router;
      if (skews.empty()) continue;
      const LayerConfig c = with_skew(layers[l].config, skews.front());
      const int copies = weight_copies(c, machine.llc_bytes);
      steps.push_back({StepKind::build, l, is_zipf, 0, skews.front(),
                       estimate_random_weights_us(c) + estimate_pack_us(c, copies + 1)});
      for (std::int64_t t : o.tokens) {
        const int calls = o.warmup + o.reps + rotation_batches(c, t);
        const int ref_calls = std::min(o.warmup, 1) + std::min(o.reps, kReferenceMaxReps);
        for (double s : skews) {
          steps.push_back({StepKind::backend, l, is_zipf, t, s,
                           estimate_calls_us(c, t, calls, backend, ceilings)});
          if (reference_runs(o, t)) {
            steps.push_back({StepKind::reference, l, is_zipf, t, s,
                             estimate_calls_us(c, t, ref_calls, Backend::reference, ceilings)});
          }
        }
      }
    }
  }
  std::vector<double> costs;
  for (const Step& s : steps) costs.push_back(s.cost_us);
  bench::Progress progress(steps.size(), costs, o.quiet);
  print_header();

  int failures = 0;
  std::size_t i = 0;
  while (i < steps.size()) {
    // steps[i] builds one layer variant's weights; the steps up to the next build use them, and
    // they are freed before the next variant is built.
    const Step& build = steps[i];
    std::size_t end = i + 1;
    while (end < steps.size() && steps[end].kind != StepKind::build) ++end;
    const LayerCase& layer = layers[build.layer];
    const bool with_reference =
        std::any_of(steps.begin() + static_cast<std::ptrdiff_t>(i),
                    steps.begin() + static_cast<std::ptrdiff_t>(end),
                    [](const Step& s) { return s.kind == StepKind::reference; });
    const auto skip_group = [&](const std::string& why) {
      progress.clear();
      std::printf("%-20s  skipped: %s\n", layer.name.c_str(), why.c_str());
      failures += static_cast<int>(end - i - 1);
      for (; i < end; ++i) progress.finish_step();
    };

    progress.start("building weights for " + layer.name);
    // Host weights, the backend's packed copy and the reference's exist at once while packing.
    const MemoryFit fit =
        fit_in_memory(layer.name, with_skew(layer.config, build.skew), with_reference ? 3 : 2);
    if (!fit.fits) {
      skip_group(fit.note);
      continue;
    }
    if (fit.reduced) {
      progress.clear();
      std::printf("  note: %s\n", fit.note.c_str());
    }
    const LayerConfig& c = fit.config;
    std::optional<LayerRunner> main_runner, ref_runner;
    Status status;
    try {
      const HostWeights host =
          HostWeights::random(c, {.seed = o.seed, .fill = Fill::gaussian, .layout = o.layout});
      // A reduced layer is large by definition: no extra copies on top of it.
      const int copies = fit.reduced ? 1 : weight_copies(c, machine.llc_bytes);
      Result<LayerRunner> r = LayerRunner::create(c, host, backend, copies);
      if (!r.ok()) {
        status = r.status();
      } else {
        main_runner.emplace(std::move(r).value());
      }
      if (status.ok() && with_reference) {
        Result<LayerRunner> rr = LayerRunner::create(c, host, Backend::reference, 1);
        if (!rr.ok()) {
          status = rr.status();
        } else {
          ref_runner.emplace(std::move(rr).value());
        }
      }
    } catch (const std::bad_alloc&) {
      status = Status{StatusCode::out_of_memory, "building the layer ran out of memory"};
    }
    if (!status.ok()) {
      skip_group(status.to_string());
      continue;
    }
    progress.finish_step();
    ++i;

    std::optional<Workload> work;
    std::optional<ResultRow> last;  // the backend's row the reference row is compared with
    for (; i < end; ++i) {
      const Step& step = steps[i];
      const bool is_reference = step.kind == StepKind::reference;
      progress.start(layer.name + " T=" + std::to_string(step.tokens) +
                     (is_reference ? " reference" : ""));
      if (!is_reference) {
        work = make_workload(c, step.tokens, rotation_batches(c, step.tokens), step.skew, o.seed);
      }
      LayerRunner& runner = is_reference ? *ref_runner : *main_runner;
      Result<Measurement> m = Status{};
      if (is_reference) {
        // Same inputs, same routing: the backend's experts hit stands for both.
        const double hit = last ? last->m.experts_hit : 0;
        m = measure(runner, *work, c, hit, std::min(o.warmup, 1),
                    std::min(o.reps, kReferenceMaxReps), ceilings);
      } else {
        Result<double> hit = mean_experts_hit(runner, *work, c);
        m = hit.ok() ? measure(runner, *work, c, hit.value(), o.warmup, o.reps, ceilings)
                     : Result<Measurement>(hit.status());
      }
      progress.finish_step();
      progress.clear();
      if (!m.ok()) {
        std::printf("%-20s %5lld %5g %-19s  error: %s\n", layer.name.c_str(),
                    static_cast<long long>(step.tokens), step.skew,
                    impl_name(runner.backend()).c_str(), m.status().to_string().c_str());
        ++failures;
        continue;
      }
      const ResultRow row{layer.name, c, step.tokens, step.skew, runner.backend(), m.value()};
      std::optional<double> speedup;
      if (is_reference && last) speedup = row.m.time.median_us / last->m.time.median_us;
      print_row(row, speedup);
      if (!o.json_path.empty()) {
        bench::JsonObject j = result_json(row, machine, ceilings, command_line);
        if (speedup) j.add("speedup_of_" + std::string(to_string(backend)), *speedup);
        std::string error;
        if (!bench::append_json_line(o.json_path, j, &error)) {
          std::fprintf(stderr, "fusedmoe: %s\n", error.c_str());
          return kExitFailure;
        }
      }
      if (!is_reference) last = row;
    }
  }
  progress.clear();
  return failures > 0 ? kExitFailure : kExitOk;
}

}  // namespace fusedmoe::cli
