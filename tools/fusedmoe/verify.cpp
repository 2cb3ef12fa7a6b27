// `fusedmoe verify`: a backend against the reference on the same weights and inputs.
#include <cstdio>
#include <new>
#include <optional>
#include <vector>

#include "cases.hpp"
#include "commands.hpp"
#include "fusedmoe/compare.hpp"
#include "fusedmoe/device.hpp"
#include "routing_check.hpp"

namespace fusedmoe::cli {
namespace {

struct Totals {
  int cases = 0;
  int failed = 0;
  int skipped = 0;
  std::int64_t near_ties = 0;
  std::int64_t mismatches = 0;
  int reduced_layers = 0;
};

void print_header() {
  std::printf("%-20s %5s %6s %10s %10s %10s %10s  %-14s %s\n", "preset", "T", "skew", "max_abs",
              "max_rel", "global", "failures", "routing", "result");
}

// All token counts and skews of one layer: weights built once (or `given`: a checkpoint's, which
// are never cut down), freed on return.
// `gpu_memory`: bytes of the GPU the backend runs on, 0 for a CPU backend.
void verify_layer(const Options& o, const LayerCase& layer, Backend backend,
                  std::int64_t gpu_memory, double skew_variant, const std::vector<double>& skews,
                  Totals& totals, const WeightSet* given = nullptr) {
  const LayerConfig wanted = with_skew(layer.config, skew_variant);
  // Host weights, the packed copy under test and the reference's copy exist at once.
  const MemoryFit fit = fit_in_memory(layer.name, wanted, 3, gpu_memory > 0 ? 1 : 0, gpu_memory);
  if (!fit.note.empty()) std::printf("  note: %s\n", fit.note.c_str());
  const int cases = static_cast<int>(o.tokens.size() * skews.size());
  if (!fit.fits || (given != nullptr && fit.reduced)) {
    totals.cases += cases;
    totals.skipped += cases;
    return;
  }
  if (fit.reduced) ++totals.reduced_layers;
  const LayerConfig& c = fit.config;

  Result<LayerRunner> test = Status{};
  Result<LayerRunner> ref = Status{};
  if (given != nullptr) {
    test = LayerRunner::create(c, *given, backend, 1);
    if (test.ok()) ref = LayerRunner::create(c, *given, Backend::reference, 1);
  } else {
    const HostWeights weights =
        HostWeights::random(c, {.seed = o.seed, .fill = Fill::gaussian, .layout = o.layout});
    test = LayerRunner::create(c, weights, backend, 1);
    if (test.ok()) ref = LayerRunner::create(c, weights, Backend::reference, 1);
  }
  if (!test.ok() || !ref.ok()) {
    const Status& s = test.ok() ? ref.status() : test.status();
    std::printf("%-20s  FAIL: %s\n", layer.name.c_str(), s.to_string().c_str());
    totals.cases += cases;
    totals.failed += cases;
    return;
  }
  const Tolerance tol = tolerance_for(c.dtype);

  for (std::int64_t tokens : o.tokens) {
    for (double skew : skews) {
      ++totals.cases;
      const Result<Workload> work = make_workload(c, tokens, 1, skew, o.seed, test->on_gpu());
      HostTensor test_ids(DType::i32, {tokens, c.top_k}), test_w(DType::f32, {tokens, c.top_k});
      HostTensor ref_ids(DType::i32, {tokens, c.top_k}), ref_w(DType::f32, {tokens, c.top_k});
      HostTensor ref_magnitude(DType::f32, {tokens, c.hidden});
      Status s = work.status();
      if (s.ok()) s = test->forward(work.value(), 0, test_ids.ref(), test_w.ref());
      if (s.ok())
        s = ref->forward(work.value(), 0, ref_ids.ref(), ref_w.ref(), ref_magnitude.ref());
      if (!s.ok()) {
        std::printf("%-20s %5lld %6g  FAIL: %s\n", layer.name.c_str(),
                    static_cast<long long>(tokens), skew, s.to_string().c_str());
        ++totals.failed;
        continue;
      }
      const auto ids = [](const HostTensor& t) {
        return static_cast<const std::int32_t*>(t.cref().data);
      };
      const auto weights = [](const HostTensor& t) {
        return static_cast<const float*>(t.cref().data);
      };
      const RoutingCheck routing = check_routing(tokens, c.top_k, ids(test_ids), weights(test_w),
                                                 ids(ref_ids), weights(ref_w));
      const Result<Comparison> cmp = compare(test->out().cref(), ref->out().cref(), tol,
                                             routing.skip_rows.data(), ref_magnitude.cref());
      if (!cmp.ok()) {
        std::printf("%-20s %5lld %6g  FAIL: %s\n", layer.name.c_str(),
                    static_cast<long long>(tokens), skew, cmp.status().to_string().c_str());
        ++totals.failed;
        continue;
      }
      totals.near_ties += routing.near_ties;
      totals.mismatches += routing.mismatches;
      const bool pass = cmp->passed && routing.mismatches == 0;
      if (!pass) ++totals.failed;
      char routing_text[32] = "ok";
      if (routing.mismatches > 0) {
        std::snprintf(routing_text, sizeof(routing_text), "%lld MISMATCH",
                      static_cast<long long>(routing.mismatches));
      } else if (routing.near_ties > 0) {
        std::snprintf(routing_text, sizeof(routing_text), "%lld near-tie",
                      static_cast<long long>(routing.near_ties));
      }
      const std::string failures =
          std::to_string(cmp->failures) + "/" + std::to_string(cmp->elements);
      std::printf("%-20s %5lld %6g %10.2e %10.2e %10.2e %10s  %-14s %s\n", layer.name.c_str(),
                  static_cast<long long>(tokens), skew, cmp->max_abs_error, cmp->max_rel_error,
                  cmp->global_rel_error, failures.c_str(), routing_text, pass ? "pass" : "FAIL");
      if (!cmp->passed) std::printf("    %s\n", cmp->summary().c_str());
      std::fflush(stdout);
    }
  }
}

}  // namespace

int verify_command(const Options& o) {
  const Backend backend = resolve_backend(o.backend);
  if (const Status s = check_backend(backend); !s.ok()) {
    std::fprintf(stderr, "fusedmoe: %s\n", s.to_string().c_str());
    return kExitFailure;
  }
  std::int64_t gpu_memory = 0;
  if (o.no_shared_expert) std::printf("routed experts only: shared experts dropped\n");
  if (backend == Backend::cuda) {
    const Result<device::Info> info = device::info(0);
    if (info.ok()) gpu_memory = static_cast<std::int64_t>(info->memory_bytes);
  }
  std::optional<CheckpointLayer> loaded;
  if (!o.weights_path.empty()) {
    Result<CheckpointLayer> l = load_checkpoint_layer(o, 3);
    if (!l.ok()) {
      std::fprintf(stderr, "fusedmoe: %s\n", l.status().to_string().c_str());
      return kExitFailure;
    }
    loaded = std::move(l).value();
  }
  const std::vector<LayerCase> layers =
      loaded ? std::vector<LayerCase>{{loaded->name, loaded->weights.config}} : selected_layers(o);
  std::vector<double> own_router, zipf;
  for (double s : o.skews) (s > 0 ? zipf : own_router).push_back(s);

  const DType dtype = loaded ? loaded->weights.config.dtype : o.dtype;
  const WeightLayout layout = loaded ? loaded->weights.weights.experts.layout : o.layout;
  const Tolerance tol = tolerance_for(dtype);
  std::printf(
      "fusedmoe verify: %s vs reference, %s, layout %s, seed %llu; tolerance atol %g "
      "rtol %g global %g\n",
      std::string(to_string(backend)).c_str(), std::string(to_string(dtype)).c_str(),
      std::string(to_string(layout)).c_str(), static_cast<unsigned long long>(o.seed), tol.atol,
      tol.rtol, tol.global);
  if (o.no_shared_expert) std::printf("routed experts only: shared experts dropped\n");
  if (backend == Backend::cuda) {
    const Result<device::Info> info = device::info(0);
    if (info.ok())
      std::printf("on %s (inputs and outputs staged in GPU memory)\n", info->name.c_str());
  }
  if (loaded) {
    std::printf("checkpoint %s: %s\n", o.weights_path.c_str(),
                describe_layer(loaded->weights.config).c_str());
  }
  print_header();
  std::fflush(stdout);

  Totals totals;
  for (const LayerCase& layer : layers) {
    // One weight set per routing variant: the router for skew 0, precomputed ids otherwise.
    for (const auto* skews : {&own_router, &zipf}) {
      if (skews->empty()) continue;
      try {
        verify_layer(o, layer, backend, gpu_memory, skews->front(), *skews, totals,
                     loaded ? &loaded->weights.weights : nullptr);
      } catch (const std::bad_alloc&) {
        std::printf("%-20s  FAIL: out of memory building or running the layer\n",
                    layer.name.c_str());
        ++totals.cases;
        ++totals.failed;
      }
    }
  }
  std::printf("summary: %d cases, %d passed, %d failed", totals.cases,
              totals.cases - totals.failed - totals.skipped, totals.failed);
  if (totals.skipped > 0) std::printf(", %d skipped (memory)", totals.skipped);
  std::printf("; %lld routing mismatches, %lld near-tie tokens left out of the comparison",
              static_cast<long long>(totals.mismatches), static_cast<long long>(totals.near_ties));
  if (totals.reduced_layers > 0) {
    std::printf("; %d layer%s ran with fewer experts to fit memory", totals.reduced_layers,
                totals.reduced_layers == 1 ? "" : "s");
  }
  std::printf("\n");
  return totals.failed + totals.skipped > 0 ? kExitFailure : kExitOk;
}

}  // namespace fusedmoe::cli
