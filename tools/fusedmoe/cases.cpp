#include "cases.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <new>
#include <set>

#include "fusedmoe/presets.hpp"
#include "fusedmoe_bench/run_info.hpp"

namespace fusedmoe::cli {
namespace {

// Separate random streams for inputs and routings, away from the weights' streams of one seed.
constexpr std::uint64_t kInputStream = 1u << 20;

// A different seed per batch and per token count, so that T=16 is not the prefix of T=64.
std::uint64_t batch_seed(std::uint64_t seed, std::int64_t tokens, int batch) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(batch + 1) +
                    0xbf58476d1ce4e5b9ull * static_cast<std::uint64_t>(tokens);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr double kMemoryShare = 0.6;  // of MemAvailable, for weights and their packed copies

}  // namespace

std::vector<LayerCase> selected_layers(const Options& o) {
  std::vector<LayerCase> layers;
  if (o.custom) {
    LayerConfig c = *o.custom;
    c.dtype = o.dtype;
    layers.push_back({std::string(kCustomLayerName), c});
    return layers;
  }
  for (const std::string& name : o.presets) {
    const Preset* p = find_preset(name);
    if (p == nullptr) continue;  // the parser has checked every name
    LayerConfig c = p->config;
    c.dtype = o.dtype;
    layers.push_back({name, c});
  }
  return layers;
}

LayerConfig with_skew(LayerConfig config, double skew) {
  if (skew > 0) {
    config.routing = Routing{};
    config.routing.kind = RoutingKind::precomputed;
  }
  return config;
}

Backend resolve_backend(BackendChoice choice) {
  switch (choice) {
    case BackendChoice::best:
      return best_backend();
    case BackendChoice::reference:
      return Backend::reference;
    case BackendChoice::cpu:
      return Backend::cpu;
    case BackendChoice::cuda:
      return Backend::cuda;
  }
  return best_backend();
}

Status check_backend(Backend backend) {
  if (backend_available(backend)) return {};
  return Status{StatusCode::unsupported_arch,
                "backend " + std::string(to_string(backend)) +
                    " is not available in this build or on this machine"};
}

std::string impl_name(Backend backend) { return "fusedmoe-" + std::string(to_string(backend)); }

std::string routing_summary(const Routing& r) {
  char buf[96];
  switch (r.kind) {
    case RoutingKind::softmax_topk:
      return r.renormalize ? "softmax-norm" : "softmax";
    case RoutingKind::sigmoid_topk: {
      std::string s = "sigmoid";
      if (r.n_group > 1) {
        std::snprintf(buf, sizeof(buf), ", %d groups keep %d", r.n_group, r.topk_group);
        s += buf;
      }
      if (r.correction_bias) s += ", bias";
      if (!r.renormalize) s += ", no renorm";
      if (r.scaling != 1.0f) {
        std::snprintf(buf, sizeof(buf), ", x%g", static_cast<double>(r.scaling));
        s += buf;
      }
      return s;
    }
    case RoutingKind::topk_softmax:
      return r.router_bias ? "topk-softmax, bias" : "topk-softmax";
    case RoutingKind::precomputed:
      return "precomputed";
  }
  return "?";
}

std::string describe_layer(const LayerConfig& c) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "H=%lld I=%lld E=%lld k=%lld", static_cast<long long>(c.hidden),
                static_cast<long long>(c.intermediate), static_cast<long long>(c.experts),
                static_cast<long long>(c.top_k));
  std::string s = buf;
  s += ", routing " + routing_summary(c.routing);
  s += ", " + std::string(to_string(c.activation));
  if (c.expert_bias) s += " with biases";
  if (c.shared.intermediate > 0) {
    s += ", shared expert I=" + std::to_string(c.shared.intermediate);
    if (c.shared.gated) s += " gated";
  } else {
    s += ", no shared expert";
  }
  s += ", " + std::string(to_string(c.dtype));
  return s;
}

std::string format_bytes(double bytes) {
  char buf[32];
  if (bytes >= 1e9)
    std::snprintf(buf, sizeof(buf), "%.1f GB", bytes * 1e-9);
  else if (bytes >= 1e6)
    std::snprintf(buf, sizeof(buf), "%.1f MB", bytes * 1e-6);
  else if (bytes >= 1e3)
    std::snprintf(buf, sizeof(buf), "%.1f kB", bytes * 1e-3);
  else
    std::snprintf(buf, sizeof(buf), "%.0f B", bytes);
  return buf;
}

MemoryFit fit_in_memory(std::string_view name, const LayerConfig& config, int copies) {
  MemoryFit fit;
  fit.config = config;
  const std::int64_t available = bench::mem_available_bytes();
  if (available <= 0) return fit;  // nothing to go by: try the real layer
  const double budget = kMemoryShare * static_cast<double>(available);
  const auto needed = [&](const LayerConfig& c) {
    return static_cast<double>(copies) * static_cast<double>(weight_bytes(c));
  };
  if (needed(config) <= budget) return fit;

  // with_experts rounds up to what the routing needs, so walk down and take the first that fits.
  std::optional<LayerConfig> best;
  for (std::int64_t e = config.experts - 1; e >= 1; --e) {
    const LayerConfig c = with_experts(config, e);
    if (c.experts < config.experts && needed(c) <= budget) {
      best = c;
      break;
    }
  }
  const std::string need = std::string(name) + ": " + std::to_string(config.experts) +
                           " experts need " + format_bytes(needed(config)) + " here (" +
                           std::to_string(copies) + " copies of the weights; budget " +
                           format_bytes(budget) + ", 60% of MemAvailable)";
  if (!best) {
    fit.fits = false;
    fit.note = need + "; even the smallest layer does not fit: skipped";
    return fit;
  }
  fit.config = *best;
  fit.reduced = true;
  std::string running = "running " + std::to_string(best->experts) + " experts";
  if (best->routing.n_group > 1) {
    running += " (" + std::to_string(best->routing.n_group) + " groups of " +
               std::to_string(best->experts / best->routing.n_group) + ")";
  }
  fit.note = need + "; " + running + ", real H, I, k and routing";
  return fit;
}

int rotation_batches(const LayerConfig& config, std::int64_t tokens) {
  constexpr double kInputBudget = 256.0 * (1 << 20);
  constexpr int kMaxBatches = 8;
  const double batch_bytes = static_cast<double>(tokens) * static_cast<double>(config.hidden) *
                             static_cast<double>(dtype_size(config.dtype));
  const double fit = std::floor(kInputBudget / std::max(batch_bytes, 1.0));
  return static_cast<int>(std::clamp(fit, 2.0, static_cast<double>(kMaxBatches)));
}

Workload make_workload(const LayerConfig& c, std::int64_t tokens, int batches, double skew,
                       std::uint64_t seed) {
  Workload w;
  w.tokens = tokens;
  w.skew = skew;
  for (int b = 0; b < batches; ++b) {
    const std::uint64_t s = batch_seed(seed, tokens, b);
    HostTensor x(c.dtype, {tokens, c.hidden});
    x.randomize(Fill::gaussian, s, kInputStream);
    w.x.push_back(std::move(x));
    if (c.routing.kind == RoutingKind::precomputed) {
      HostTensor ids(DType::i32, {tokens, c.top_k});
      HostTensor weights(DType::f32, {tokens, c.top_k});
      zipf_routing(tokens, c.experts, c.top_k, skew, s, ids.ref(), weights.ref());
      w.ids.push_back(std::move(ids));
      w.weights.push_back(std::move(weights));
    }
  }
  return w;
}

int weight_copies(const LayerConfig& config, std::int64_t llc_bytes) {
  constexpr int kMaxCopies = 64;
  constexpr double kMaxCopyBytes = 1024.0 * (1 << 20);
  // The least one call reads (T = 1: k experts and the shared expert). Calls cycle through the
  // copies, so a copy comes back only after `copies` calls have streamed this much each.
  const double per_call =
      bench::layer_work(config, 1, static_cast<double>(std::min(config.top_k, config.experts)))
          .bytes;
  const double target = 2.0 * static_cast<double>(std::max<std::int64_t>(llc_bytes, 32 << 20));
  double copies = std::clamp(std::ceil(target / std::max(per_call, 1.0)), 1.0, double{kMaxCopies});
  const double layer = static_cast<double>(std::max<std::int64_t>(weight_bytes(config), 1));
  copies = std::min(copies, std::max(1.0, std::floor(kMaxCopyBytes / layer)));
  return static_cast<int>(copies);
}

void LayerRunner::AlignedDelete::operator()(std::byte* p) const {
  ::operator delete[](p, std::align_val_t{64});
}

Result<LayerRunner> LayerRunner::create(const LayerConfig& config, const HostWeights& weights,
                                        Backend backend, int copies) {
  LayerRunner r;
  r.backend_ = backend;
  // The reference writes f32 (no rounding of its own to hide the other backend's errors).
  r.out_dtype_ = backend == Backend::reference ? DType::f32 : config.dtype;
  const WeightSet view = weights.view();
  for (int i = 0; i < std::max(copies, 1); ++i) {
    Result<PackedWeights> packed = pack_weights(config, view, backend);
    if (!packed.ok()) return packed.status();
    r.packed_bytes_ += packed->bytes();
    Result<Layer> layer = Layer::create(config, std::move(packed).value());
    if (!layer.ok()) return layer.status();
    r.layers_.push_back(std::move(layer).value());
  }
  return r;
}

Status LayerRunner::forward(const Workload& work, int rep, TensorRef ids_out,
                            TensorRef weights_out) {
  const Layer& layer = layers_[static_cast<std::size_t>(rep) % layers_.size()];
  const std::size_t batch = static_cast<std::size_t>(rep) % work.x.size();
  if (out_tokens_ != work.tokens) {
    out_ = HostTensor(out_dtype_, {work.tokens, layer.config().hidden});
    out_tokens_ = work.tokens;
  }
  const std::size_t need = layer.workspace_size(work.tokens);
  if (need > workspace_bytes_) {
    workspace_.reset(new (std::align_val_t{64}) std::byte[need]);
    workspace_bytes_ = need;
  }
  ForwardArgs args;
  args.x = work.x[batch].cref();
  args.out = out_.ref();
  args.workspace = {workspace_.get(), workspace_bytes_};
  if (!work.ids.empty()) {
    args.topk_ids = work.ids[batch].cref();
    args.topk_weights = work.weights[batch].cref();
  }
  args.ids_out = ids_out;
  args.weights_out = weights_out;
  return layer.forward(args);
}

double estimate_random_weights_us(const LayerConfig& config) {
  return static_cast<double>(weight_bytes(config)) / 200.0;
}

double estimate_pack_us(const LayerConfig& config, int copies) {
  return copies * estimate_random_weights_us(config);
}

double estimate_calls_us(const LayerConfig& config, std::int64_t tokens, int calls, Backend backend,
                         const bench::Ceilings& ceilings) {
  const bench::LayerWork w =
      bench::layer_work(config, tokens, bench::expected_experts_hit(config, tokens));
  double per_call = 2.0 * bench::floor_of(w, ceilings.read.gbps, ceilings.compute.gflops).us + 30;
  if (backend == Backend::reference) {
    per_call = w.flops / (1.2e3 * std::max(ceilings.compute.threads, 1));
  }
  return per_call * calls;
}

Result<double> mean_experts_hit(LayerRunner& runner, const Workload& work, const LayerConfig& c) {
  HostTensor ids(DType::i32, {work.tokens, c.top_k});
  double total = 0;
  for (int b = 0; b < work.batches(); ++b) {
    if (Status s = runner.forward(work, b, ids.ref()); !s.ok()) return s;
    const auto* p = reinterpret_cast<const std::int32_t*>(ids.bytes());
    std::set<std::int32_t> distinct;
    for (std::int64_t i = 0; i < work.tokens * c.top_k; ++i) {
      if (p[i] >= 0 && p[i] < c.experts) distinct.insert(p[i]);
    }
    total += static_cast<double>(distinct.size());
  }
  return total / std::max(work.batches(), 1);
}

Result<Measurement> measure(LayerRunner& runner, const Workload& work, const LayerConfig& config,
                            double experts_hit, int warmup, int reps,
                            const bench::Ceilings& ceilings) {
  Status error;
  const auto stats = bench::time_reps(warmup, reps, [&](int rep) {
    error = runner.forward(work, rep);
    return error.ok();
  });
  if (!stats) return error;
  Measurement m;
  m.time = *stats;
  m.experts_hit = experts_hit;
  m.work = bench::layer_work(config, work.tokens, experts_hit);
  m.floor = bench::floor_of(m.work, ceilings.read.gbps, ceilings.compute.gflops);
  return m;
}

bench::JsonObject result_json(const ResultRow& row, const bench::MachineInfo& machine,
                              const bench::Ceilings& ceilings, const std::string& command) {
  const Measurement& m = row.m;
  bench::JsonObject j;
  j.add("preset", row.preset)
      .add("tokens", row.tokens)
      .add("skew", row.skew)
      .add("impl", impl_name(row.backend))
      .add("dtype", to_string(row.config.dtype))
      .add("us_median", m.time.median_us)
      .add("us_min", m.time.min_us)
      .add("us_max", m.time.max_us)
      .add("reps", m.time.reps)
      .add("floor_us", m.floor.us)
      .add("pct_of_floor", m.pct_of_floor())
      .add("bound", m.floor.bound())
      .add("bytes", m.work.bytes)
      .add("flops", m.work.flops)
      .add("experts_hit", m.experts_hit)
      .add("experts", row.config.experts)
      .add("hidden", row.config.hidden)
      .add("intermediate", row.config.intermediate)
      .add("top_k", row.config.top_k)
      .add("routing", routing_summary(row.config.routing))
      .add("read_gbps", ceilings.read.gbps)
      .add("compute_gflops", ceilings.compute.gflops)
      .add("device", machine.device())
      .add("load_average", machine.load_average)
      .add("date", bench::utc_now_iso8601())
      .add("commit", bench::build_commit())
      .add("command", command);
  return j;
}

std::string describe_ceilings(const bench::Ceilings& c) {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "read %.1f GB/s (%s buffer, best of %d passes, %d threads); "
                "fp32 FMA %.1f GFLOP/s (%s, %d threads)",
                c.read.gbps, format_bytes(static_cast<double>(c.read.bytes)).c_str(), c.read.passes,
                c.read.threads, c.compute.gflops, c.compute.isa.c_str(), c.compute.threads);
  return buf;
}

}  // namespace fusedmoe::cli
