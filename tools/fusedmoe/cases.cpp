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
// Of the GPU's memory, for packed copies: the rest holds inputs, output, workspace, the runtime.
constexpr double kDeviceMemoryShare = 0.85;

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
    if (o.no_shared_expert) c.shared = {};
    layers.push_back({name, c});
  }
  return layers;
}

Result<CheckpointLayer> load_checkpoint_layer(const Options& o, int host_copies) {
  Result<Checkpoint> ckpt = Checkpoint::open(o.weights_path);
  if (!ckpt.ok()) return ckpt.status();
  const Checkpoint& c = ckpt.value();
  ModelConfig model;
  const std::vector<LayerCase> given = selected_layers(o);
  if (!given.empty()) {
    // --preset or explicit sizes: config.json, when there is one, only names the architecture.
    model.layer = given.front().config;
    std::optional<Architecture> arch = o.arch;
    if (!arch && c.config_json()) {
      Result<ModelConfig> m = read_model_config(c);
      if (m.ok()) arch = m->architecture;
    }
    if (!arch && !o.presets.empty()) arch = preset_architecture(o.presets.front());
    if (!arch) {
      return Status{StatusCode::invalid_argument,
                    "cannot tell which tensor names " + o.weights_path +
                        " uses (no config.json with a known model_type): give --arch"};
    }
    model.architecture = *arch;
  } else {
    if (!c.config_json()) {
      return Status{StatusCode::invalid_argument,
                    "no config.json in " + c.directory() +
                        ": give the layer with --preset or --hidden/--intermediate/--experts/"
                        "--top-k (and --arch)"};
    }
    Result<ModelConfig> m = read_model_config(c, o.arch);
    if (!m.ok()) return m.status();
    model = std::move(m).value();
    if (o.no_shared_expert) model.layer.shared = {};
  }
  if (o.dtype_given) {
    model.layer.dtype = o.dtype;
  } else if (auto stored = stored_expert_dtype(c, model.architecture, o.layer)) {
    model.layer.dtype = *stored;
  }
  const std::string name =
      std::string(to_string(model.architecture)) + " layer " + std::to_string(o.layer);
  // Real layers can be large (deepseek-v3's are 22.6 GB in bf16) and cannot lose experts here.
  const MemoryFit fit = fit_in_memory(name, model.layer, host_copies);
  if (!fit.fits || fit.reduced) {
    const std::size_t cut = fit.note.find("; ");
    return Status{
        StatusCode::out_of_memory,
        fit.note.substr(0, cut) + "; a checkpoint's layer runs whole, so it is not loaded"};
  }
  Result<LayerWeights> loaded = load_moe_layer(c, model, o.layer);
  if (!loaded.ok()) return loaded.status();
  return CheckpointLayer{name, std::move(loaded).value()};
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

MemoryFit fit_in_memory(std::string_view name, const LayerConfig& config, int host_copies,
                        int device_copies, std::int64_t device_bytes) {
  MemoryFit fit;
  fit.config = config;
  const std::int64_t available = bench::mem_available_bytes();
  // Without a figure to go by (no MemAvailable, no GPU) a memory is not checked.
  const double host_budget = available > 0 ? kMemoryShare * static_cast<double>(available) : -1.0;
  const double device_budget = device_copies > 0 && device_bytes > 0
                                   ? kDeviceMemoryShare * static_cast<double>(device_bytes)
                                   : -1.0;
  const auto needed = [](const LayerConfig& c, int copies) {
    return static_cast<double>(copies) * static_cast<double>(weight_bytes(c));
  };
  const auto fits = [&](const LayerConfig& c) {
    return (host_budget < 0 || needed(c, host_copies) <= host_budget) &&
           (device_budget < 0 || needed(c, device_copies) <= device_budget);
  };
  if (fits(config)) return fit;

  // with_experts rounds up to what the routing needs, so walk down and take the first that fits.
  std::optional<LayerConfig> best;
  for (std::int64_t e = config.experts - 1; e >= 1; --e) {
    const LayerConfig c = with_experts(config, e);
    if (c.experts < config.experts && fits(c)) {
      best = c;
      break;
    }
  }
  std::string need = std::string(name) + ": " + std::to_string(config.experts) + " experts need ";
  if (host_budget >= 0) {
    need += format_bytes(needed(config, host_copies)) + " here (" + std::to_string(host_copies) +
            " copies of the weights; budget " + format_bytes(host_budget) +
            ", 60% of MemAvailable)";
  }
  if (device_budget >= 0) {
    need += std::string(host_budget >= 0 ? " and " : "") +
            format_bytes(needed(config, device_copies)) + " on the GPU (" +
            std::to_string(device_copies) + " packed copies; budget " +
            format_bytes(device_budget) + ", 85% of its memory)";
  }
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

Result<Workload> make_workload(const LayerConfig& c, std::int64_t tokens, int batches, double skew,
                               std::uint64_t seed, bool on_device) {
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
  if (!on_device) return w;
  // Every batch goes up once, here, so that no copy is timed.
  const auto stage = [](const std::vector<HostTensor>& host, std::vector<DeviceTensor>& device) {
    for (const HostTensor& t : host) {
      Result<DeviceTensor> d = DeviceTensor::upload(t);
      if (!d.ok()) return d.status();
      device.push_back(std::move(d).value());
    }
    return Status{};
  };
  if (Status s = stage(w.x, w.device_x); !s.ok()) return s;
  if (Status s = stage(w.ids, w.device_ids); !s.ok()) return s;
  if (Status s = stage(w.weights, w.device_weights); !s.ok()) return s;
  return w;
}

void LayerRunner::AlignedDelete::operator()(std::byte* p) const {
  ::operator delete[](p, std::align_val_t{64});
}

Result<LayerRunner> LayerRunner::create(const LayerConfig& config, const HostWeights& weights,
                                        Backend backend, int copies) {
  return create(config, weights.view(), backend, copies);
}

Result<LayerRunner> LayerRunner::create(const LayerConfig& config, const WeightSet& view,
                                        Backend backend, int copies) {
  LayerRunner r;
  r.backend_ = backend;
  // The reference writes f32 (no rounding of its own to hide the other backend's errors).
  r.out_dtype_ = backend == Backend::reference ? DType::f32 : config.dtype;
  for (int i = 0; i < std::max(copies, 1); ++i) {
    Result<PackedWeights> packed = pack_weights(config, view, backend);
    if (!packed.ok()) return packed.status();
    r.packed_bytes_ += packed->bytes();
    Result<Layer> layer = Layer::create(config, std::move(packed).value());
    if (!layer.ok()) return layer.status();
    r.layers_.push_back(std::move(layer).value());
  }
  if (r.on_gpu()) {
    Result<device::Stream> stream = device::Stream::create();
    if (!stream.ok()) return stream.status();
    r.stream_ = std::move(stream).value();
  }
  return r;
}

Status LayerRunner::prepare(const Workload& work) {
  const Layer& layer = layers_.front();
  const std::size_t need = layer.workspace_size(work.tokens);
  if (out_tokens_ != work.tokens) {
    out_ = HostTensor(out_dtype_, {work.tokens, layer.config().hidden});
    if (on_gpu()) {
      device_out_.reset();  // freed before its successor is allocated
      Result<DeviceTensor> out =
          DeviceTensor::allocate(out_dtype_, work.tokens, layer.config().hidden);
      if (!out.ok()) return out.status();
      device_out_.emplace(std::move(out).value());
    }
    out_tokens_ = work.tokens;
  }
  if (need > workspace_bytes_) {
    if (on_gpu()) {
      device_workspace_ = device::Buffer();
      Result<device::Buffer> ws = device::Buffer::allocate(need);
      if (!ws.ok()) return ws.status();
      device_workspace_ = std::move(ws).value();
    } else {
      workspace_.reset(new (std::align_val_t{64}) std::byte[need]);
    }
    workspace_bytes_ = need;
  }
  return {};
}

Status LayerRunner::call(const Workload& work, int rep, TensorRef ids_out, TensorRef weights_out,
                         TensorRef magnitude_out) {
  if (Status s = prepare(work); !s.ok()) return s;
  const Layer& layer = layers_[static_cast<std::size_t>(rep) % layers_.size()];
  const std::size_t batch = static_cast<std::size_t>(rep) % work.x.size();
  ForwardArgs args;
  args.ids_out = ids_out;
  args.weights_out = weights_out;
  args.magnitude_out = magnitude_out;  // the layer refuses it off the reference backend
  if (!on_gpu()) {
    args.x = work.x[batch].cref();
    args.out = out_.ref();
    args.workspace = {workspace_.get(), workspace_bytes_};
    if (!work.ids.empty()) {
      args.topk_ids = work.ids[batch].cref();
      args.topk_weights = work.weights[batch].cref();
    }
    return layer.forward(args);
  }
  if (work.device_x.size() != work.x.size() || work.device_ids.size() != work.ids.size()) {
    return {StatusCode::invalid_argument,
            "internal error: the workload is not staged in GPU memory (make_workload on_device)"};
  }
  args.x = work.device_x[batch].cref();
  args.out = device_out_->ref();
  args.workspace = {device_workspace_.data(), workspace_bytes_};
  if (!work.device_ids.empty()) {
    args.topk_ids = work.device_ids[batch].cref();
    args.topk_weights = work.device_weights[batch].cref();
  }
  args.stream = stream_.handle();
  return layer.forward(args);
}

Status LayerRunner::enqueue(const Workload& work, int rep) { return call(work, rep, {}, {}); }

Status LayerRunner::forward(const Workload& work, int rep, TensorRef ids_out, TensorRef weights_out,
                            TensorRef magnitude_out) {
  if (!on_gpu()) return call(work, rep, ids_out, weights_out, magnitude_out);
  if (magnitude_out.present()) {
    return {StatusCode::unsupported_config,
            "magnitude_out is computed by the reference backend only, not on a GPU"};
  }
  // The routing outputs go to device buffers of the same shape and come back with the output.
  const auto like = [](TensorRef host, std::optional<DeviceTensor>& device) {
    if (!host.present()) return Status{};
    Result<DeviceTensor> d = DeviceTensor::allocate(host.dtype, host.size(0), host.size(1));
    if (!d.ok()) return d.status();
    device.emplace(std::move(d).value());
    return Status{};
  };
  std::optional<DeviceTensor> device_ids, device_weights;
  if (Status s = like(ids_out, device_ids); !s.ok()) return s;
  if (Status s = like(weights_out, device_weights); !s.ok()) return s;
  Status s = call(work, rep, device_ids ? device_ids->ref() : TensorRef{},
                  device_weights ? device_weights->ref() : TensorRef{});
  if (s.ok()) s = stream_.synchronize();
  if (s.ok()) s = device_out_->download(out_.ref());
  if (s.ok() && device_ids) s = device_ids->download(ids_out);
  if (s.ok() && device_weights) s = device_weights->download(weights_out);
  return s;
}

double estimate_random_weights_us(const LayerConfig& config) {
  return static_cast<double>(weight_bytes(config)) / 200.0;
}

double estimate_pack_us(const LayerConfig& config, int copies) {
  return copies * estimate_random_weights_us(config);
}

double estimate_calls_us(const LayerConfig& config, std::int64_t tokens, int calls, Backend backend,
                         const Target& target) {
  const bench::LayerWork w =
      bench::layer_work(config, tokens, bench::expected_experts_hit(config, tokens));
  double per_call = 2.0 * target.floor(w).us + 30;
  if (backend == Backend::reference) per_call = w.flops / (1.2e3 * target.cpu_threads);
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

namespace {

Result<bench::TimingStats> time_on_cpu(LayerRunner& runner, const Workload& work,
                                       const TimingPlan& plan) {
  Status error;
  const auto stats = bench::time_reps(plan.warmup, plan.reps, [&](int rep) {
    error = runner.enqueue(work, rep);
    return error.ok();
  });
  if (!stats) return error;
  return *stats;
}

Result<bench::TimingStats> time_on_gpu(LayerRunner& runner, const Workload& work,
                                       const TimingPlan& plan) {
  if (Status s = runner.prepare(work); !s.ok()) return s;
  const device::Stream& stream = runner.stream();
  Result<std::vector<double>> samples = Status{};
  if (!plan.graph) {
    samples = device::time_us(stream, plan.warmup, plan.reps,
                              [&](int rep) { return runner.enqueue(work, rep); });
  } else {
    // Graph g holds the call of repetition g, and repetition r replays graph r % count: count is
    // a multiple of the weight copies, so the weights rotate exactly as without graphs, and
    // covers every input batch.
    const int copies = runner.copies();
    const int count = copies * ((work.batches() + copies - 1) / copies);
    std::vector<device::Graph> graphs;
    for (int g = 0; g < count; ++g) {
      Result<device::Graph> graph =
          device::Graph::capture(stream, [&] { return runner.enqueue(work, g); });
      if (!graph.ok()) {
        return Status{graph.status().code(),
                      "capturing forward in a CUDA graph: " + graph.status().message() +
                          " (--no-graph times plain launches)"};
      }
      graphs.push_back(std::move(graph).value());
    }
    samples = device::time_us(stream, plan.warmup, plan.reps, [&](int rep) {
      return graphs[static_cast<std::size_t>(rep % count)].launch(stream);
    });
  }
  if (!samples.ok()) return samples.status();
  return bench::summarize(std::move(samples).value());
}

}  // namespace

Result<Measurement> measure(LayerRunner& runner, const Workload& work, const LayerConfig& config,
                            double experts_hit, const TimingPlan& plan, const Target& target) {
  const bool gpu = runner.on_gpu();
  Result<bench::TimingStats> stats =
      gpu ? time_on_gpu(runner, work, plan) : time_on_cpu(runner, work, plan);
  if (!stats.ok()) return stats.status();
  Measurement m;
  m.time = stats.value();
  m.warmup = plan.warmup;
  m.cuda_events = gpu;
  m.graph = gpu && plan.graph;
  m.experts_hit = experts_hit;
  m.work = bench::layer_work(config, work.tokens, experts_hit);
  m.floor = target.floor(m.work);
  return m;
}

std::string skew_name(double skew) {
  if (skew <= 0) return "uniform";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "zipf-%g", skew);
  return buf;
}

bench::JsonObject result_json(const ResultRow& row, const bench::MachineInfo& machine,
                              const Target& target, const std::string& command) {
  const Measurement& m = row.m;
  bench::JsonObject j;
  j.add("preset", row.preset)
      .add("tokens", row.tokens)
      .add("skew", skew_name(row.skew))
      .add("impl", impl_name(row.backend))
      .add("us_median", m.time.median_us)
      .add("floor_us", m.floor.us)
      .add("bound", m.floor.bound());
  if (target.gpu) {
    j.add("gpu", target.device);
  } else {
    j.add_null("gpu");
  }
  j.add("commit", bench::build_commit())
      .add("mode", row.config.routing.kind == RoutingKind::precomputed ? "experts" : "layer")
      .add("pct_of_floor", m.pct_of_floor())
      .add("us_p10", m.time.p10_us)
      .add("us_p90", m.time.p90_us)
      .add("us_min", m.time.min_us)
      .add("us_max", m.time.max_us)
      .add("reps", m.time.reps)
      .add("warmup", m.warmup)
      .add("timer", m.cuda_events ? "cuda-events" : "wall-clock")
      .add("graph", m.graph)
      .add("dtype", to_string(row.config.dtype))
      .add("bytes", m.work.bytes)
      .add("flops", m.work.flops)
      .add("experts_hit", m.experts_hit)
      .add("experts", row.config.experts)
      .add("hidden", row.config.hidden)
      .add("intermediate", row.config.intermediate)
      .add("top_k", row.config.top_k)
      .add("shared_intermediate", row.config.shared.intermediate)
      .add("routing", routing_summary(row.config.routing))
      .add("kernels", row.kernels);
  if (target.gpu) {
    j.add("read_bw_gbps", target.read_gbps)
        .add("bf16_tflops", target.compute_gflops * 1e-3)
        .add("device", target.device)
        .add("host", machine.device());
  } else {
    j.add("read_gbps", target.read_gbps)
        .add("compute_gflops", target.compute_gflops)
        .add("device", target.device)
        .add("load_average", machine.load_average);
  }
  j.add("date", bench::utc_now_iso8601()).add("command", command);
  return j;
}

}  // namespace fusedmoe::cli
