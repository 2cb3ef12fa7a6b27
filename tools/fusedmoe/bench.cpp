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

TimingPlan reference_plan(const Options& o, const Target& target, std::int64_t tokens) {
  TimingPlan p = timing_plan(o, target, tokens);
  p.warmup = std::min(p.warmup, 1);
  p.reps = std::min(p.reps, kReferenceMaxReps);
  return p;
}

void print_header() {
  std::printf("%-20s %5s %5s %-19s %12s %12s %9s %9s %7s %-8s %-6s %s\n", "preset", "T", "skew",
              "impl", "experts", "us_median", "GB/s", "GFLOP/s", "%floor", "bound", "timing",
              "speedup");
}

// `speedup`: how many times slower the reference ran than `backend`.
void print_row(const ResultRow& r, Backend backend, std::optional<double> speedup) {
  char experts[32];
  std::snprintf(experts, sizeof(experts), "%.1f/%lld", r.m.experts_hit,
                static_cast<long long>(r.config.experts));
  char speed[32] = "";
  if (speedup) {
    std::snprintf(speed, sizeof(speed), "%s x%.1f", std::string(to_string(backend)).c_str(),
                  *speedup);
  }
  const char* timing = r.m.graph ? "graph" : r.m.cuda_events ? "stream" : "wall";
  std::printf("%-20s %5lld %5g %-19s %12s %12.1f %9.1f %9.1f %7.1f %-8s %-6s %s\n",
              r.preset.c_str(), static_cast<long long>(r.tokens), r.skew,
              impl_name(r.backend).c_str(), experts, r.m.time.median_us, r.m.gbps(), r.m.gflops(),
              r.m.pct_of_floor(), std::string(r.m.floor.bound()).c_str(), timing, speed);
  std::fflush(stdout);
}

}  // namespace

int bench_command(const Options& o, const std::string& command_line) {
  const Backend backend = resolve_backend(o.backend);
  const std::vector<LayerCase> layers = selected_layers(o);
  const bench::MachineInfo machine = bench::machine_info();
  std::vector<double> own_router, zipf;
  for (double s : o.skews) (s > 0 ? zipf : own_router).push_back(s);

  // measure_target checks the backend first. The reference runs on the CPU: next to a GPU backend
  // its floor needs the CPU's own ceilings.
  const Result<Target> measured = measure_target(backend, machine, o.quiet);
  const Result<Target> measured_ref = measured.ok() && o.reference && measured->gpu
                                          ? measure_target(Backend::reference, machine, o.quiet)
                                          : measured;
  if (!measured.ok() || !measured_ref.ok()) {
    const Status& s = measured.ok() ? measured_ref.status() : measured.status();
    std::fprintf(stderr, "fusedmoe: %s\n", s.to_string().c_str());
    return kExitFailure;
  }
  const Target& target = measured.value();
  const Target& ref_target = measured_ref.value();

  std::printf("fusedmoe bench: %s on %s, %s\nceilings: %s\n",
              std::string(to_string(backend)).c_str(), target.device.c_str(),
              target.details.c_str(), target.ceilings.c_str());
  if (ref_target.gpu != target.gpu) {
    std::printf("reference on %s: %s\n", ref_target.device.c_str(), ref_target.ceilings.c_str());
  }
  if (const std::string busy = machine.busy_warning(); !busy.empty()) {
    std::printf("warning: %s\n", busy.c_str());
  }
  const TimingPlan plan = timing_plan(o, target, 1);  // repetitions do not depend on T
  std::printf("%s, layout %s, seed %llu, %d reps after %d warm-up (reference: at most %d)",
              std::string(to_string(o.dtype)).c_str(), std::string(to_string(o.layout)).c_str(),
              static_cast<unsigned long long>(o.seed), plan.reps, plan.warmup, kReferenceMaxReps);
  if (target.gpu) {
    std::printf("; CUDA events, %s",
                o.graph ? "T <= 64 timed as CUDA graph replays (timing \"graph\"), larger T as "
                          "stream launches (\"stream\")"
                        : "every T as stream launches (--no-graph)");
  }
  std::printf("\n");
  if (o.no_shared_expert) std::printf("routed experts only: shared experts dropped\n");

  // Every step up front, so the progress bar knows the total and a fair ETA. Each layer variant
  // (its own router, or precomputed Zipf routing) starts with a step that builds its weights.
  std::vector<Step> steps;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    for (const bool is_zipf : {false, true}) {
      const std::vector<double>& skews = is_zipf ? zipf : own_router;
      if (skews.empty()) continue;
      const LayerConfig c = with_skew(layers[l].config, skews.front());
      const int copies = target.weight_copies(c);
      steps.push_back({StepKind::build, l, is_zipf, 0, skews.front(),
                       estimate_random_weights_us(c) + estimate_pack_us(c, copies + 1)});
      for (std::int64_t t : o.tokens) {
        const TimingPlan plan = timing_plan(o, target, t);
        const TimingPlan ref_plan = reference_plan(o, ref_target, t);
        const int calls = plan.warmup + plan.reps + rotation_batches(c, t);
        const int ref_calls = ref_plan.warmup + ref_plan.reps;
        for (double s : skews) {
          steps.push_back({StepKind::backend, l, is_zipf, t, s,
                           estimate_calls_us(c, t, calls, backend, target)});
          if (reference_runs(o, t)) {
            steps.push_back({StepKind::reference, l, is_zipf, t, s,
                             estimate_calls_us(c, t, ref_calls, Backend::reference, ref_target)});
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
    // Host weights, the backend's packed copy and the reference's exist at once while packing
    // (on the GPU: the backend's packed copies).
    const LayerConfig wanted = with_skew(layer.config, build.skew);
    const int wanted_copies = target.weight_copies(wanted);
    const MemoryFit fit = fit_in_memory(layer.name, wanted, with_reference ? 3 : 2,
                                        target.gpu ? wanted_copies : 0, target.memory_bytes);
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
      const int copies = fit.reduced ? 1 : wanted_copies;
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

    std::optional<Result<Workload>> work;
    std::optional<ResultRow> last;  // the backend's row the reference row is compared with
    for (; i < end; ++i) {
      const Step& step = steps[i];
      const bool is_reference = step.kind == StepKind::reference;
      progress.start(layer.name + " T=" + std::to_string(step.tokens) +
                     (is_reference ? " reference" : ""));
      if (!is_reference) {
        work = make_workload(c, step.tokens, rotation_batches(c, step.tokens), step.skew, o.seed,
                             main_runner->on_gpu());
      }
      LayerRunner& runner = is_reference ? *ref_runner : *main_runner;
      const Target& runs_on = is_reference ? ref_target : target;
      Result<Measurement> m = Status{};
      if (!work->ok()) {
        m = work->status();
      } else if (is_reference) {
        // Same inputs, same routing: the backend's experts hit stands for both.
        const double hit = last ? last->m.experts_hit : 0;
        m = measure(runner, work->value(), c, hit, reference_plan(o, runs_on, step.tokens),
                    runs_on);
      } else {
        Result<double> hit = mean_experts_hit(runner, work->value(), c);
        m = hit.ok() ? measure(runner, work->value(), c, hit.value(),
                               timing_plan(o, runs_on, step.tokens), runs_on)
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
      const ResultRow row{layer.name,
                          c,
                          step.tokens,
                          step.skew,
                          runner.backend(),
                          m.value(),
                          runner.describe(step.tokens)};
      std::optional<double> speedup;
      if (is_reference && last) speedup = row.m.time.median_us / last->m.time.median_us;
      print_row(row, backend, speedup);
      if (!o.json_path.empty()) {
        bench::JsonObject j = result_json(row, machine, runs_on, command_line);
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
