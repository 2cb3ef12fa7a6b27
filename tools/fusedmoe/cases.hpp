// What run, verify and bench share: choosing the layers, fitting them into this machine's memory,
// random weights and rotated inputs (staged in GPU memory for the CUDA backend), packed layers
// with their output and workspace, and one timed measurement with its floor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "args.hpp"
#include "fusedmoe/device.hpp"
#include "fusedmoe/layer.hpp"
#include "fusedmoe/workload.hpp"
#include "fusedmoe_bench/json.hpp"
#include "fusedmoe_bench/machine.hpp"
#include "fusedmoe_bench/roofline.hpp"
#include "fusedmoe_bench/timing.hpp"
#include "staging.hpp"
#include "target.hpp"

namespace fusedmoe::cli {

// Exit statuses of the command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // a library error, a failed check, a skipped case
inline constexpr int kExitUsage = 2;    // bad command line

struct LayerCase {
  std::string name;    // preset name or "custom"
  LayerConfig config;  // with the requested dtype
};

// The layers the options name, in order (without their shared expert under --no-shared-expert).
std::vector<LayerCase> selected_layers(const Options& options);

// ---- a checkpoint's layer ----------------------------------------------------------------------

struct CheckpointLayer {
  std::string name;      // "qwen3_moe layer 12"
  LayerWeights weights;  // weights.config is the layer's config
};

// Options::weights_path's layer Options::layer: the config from --preset or explicit sizes when
// given, else from config.json; the architecture from --arch, config.json or the preset; the
// dtype from --dtype or the stored weights. Refused, before anything is read, when
// `host_copies` copies of the layer's weights do not fit this machine's memory.
Result<CheckpointLayer> load_checkpoint_layer(const Options& options, int host_copies);

// `config` with Zipf-skewed precomputed routing when skew > 0; unchanged otherwise.
LayerConfig with_skew(LayerConfig config, double skew);

// BackendChoice::best becomes fusedmoe::best_backend().
Backend resolve_backend(BackendChoice choice);

// "impl" of the results: "fusedmoe-cpu", "fusedmoe-reference", "fusedmoe-cuda".
std::string impl_name(Backend backend);

// "softmax-norm", "deepseek (sigmoid, 8 groups keep 4, bias, x2.5)", ...
std::string routing_summary(const Routing& routing);
// "H=2048 I=768 E=128 k=8, routing softmax-norm, swiglu, no shared expert"
std::string describe_layer(const LayerConfig& config);

// ---- memory guard -----------------------------------------------------------------------------

struct MemoryFit {
  LayerConfig config;  // the layer to build: the requested one, or with fewer routed experts
  bool fits = true;    // false: not even the smallest version fits; skip the layer
  bool reduced = false;
  std::string note;  // why and what, for the output; empty when nothing changed
};

// Fits `host_copies` copies of the layer's weights (host weights plus each packed copy) into 60%
// of MemAvailable and `device_copies` packed copies into 85% of the GPU's `device_bytes`, by
// reducing the routed experts (fusedmoe::with_experts) as little as needed.
MemoryFit fit_in_memory(std::string_view name, const LayerConfig& config, int host_copies,
                        int device_copies = 0, std::int64_t device_bytes = 0);

// ---- inputs -----------------------------------------------------------------------------------

struct Workload {
  std::int64_t tokens = 0;
  double skew = 0;
  std::vector<HostTensor> x;        // [T, H] per batch, Gaussian
  std::vector<HostTensor> ids;      // precomputed routing only: [T, k] int32 per batch
  std::vector<HostTensor> weights;  // precomputed routing only: [T, k] f32 per batch
  // The same batches in GPU memory, when made for the CUDA backend (empty otherwise).
  std::vector<DeviceTensor> device_x, device_ids, device_weights;
  int batches() const { return static_cast<int>(x.size()); }
};

// How many input batches to cycle for T tokens: several, so the experts hit change from call to
// call, but no more than about 256 MiB of inputs.
int rotation_batches(const LayerConfig& config, std::int64_t tokens);

// `batches` different input batches (and routings, for precomputed routing: Zipf with `skew`),
// also staged in GPU memory when `on_device` (the CUDA backend runs them).
Result<Workload> make_workload(const LayerConfig& config, std::int64_t tokens, int batches,
                               double skew, std::uint64_t seed, bool on_device);

// ---- packed layers ----------------------------------------------------------------------------

// One backend's layer, packed `copies` times into separate memory (cycled so that a small layer's
// weights are not all cache-resident), with its output and workspace: in host memory, or for
// the CUDA backend in GPU memory with a stream of its own.
class LayerRunner {
 public:
  static Result<LayerRunner> create(const LayerConfig& config, const HostWeights& weights,
                                    Backend backend, int copies);
  static Result<LayerRunner> create(const LayerConfig& config, const WeightSet& weights,
                                    Backend backend, int copies);

  Backend backend() const { return backend_; }
  bool on_gpu() const { return backend_ == Backend::cuda; }
  DType out_dtype() const { return out_dtype_; }
  std::size_t packed_bytes() const { return packed_bytes_; }
  int copies() const { return static_cast<int>(layers_.size()); }
  // What forward runs for `tokens` rows (Layer::describe).
  std::string describe(std::int64_t tokens) const { return layers_.front().describe(tokens); }
  // The stream the GPU runner's forward runs on.
  const device::Stream& stream() const { return stream_; }

  // Sizes the output and workspace for `work`. forward and enqueue do it too; a graph capture
  // needs it done before, since allocating is not capturable.
  Status prepare(const Workload& work);
  // One forward of repetition `rep` (weight copy rep % copies, input batch rep % batches) with
  // its results in host memory: out() and the optional ids_out / weights_out (host [T, k] int32 /
  // f32) and, on the reference backend, magnitude_out (host [T, H] f32: ForwardArgs). Synchronous
  // on every backend.
  Status forward(const Workload& work, int rep, TensorRef ids_out = {}, TensorRef weights_out = {},
                 TensorRef magnitude_out = {});
  // Only the layer call of repetition `rep`, as it is timed: on the GPU enqueued on stream() (the
  // work must be made on_device), on the CPU run to completion. out() is not updated.
  Status enqueue(const Workload& work, int rep);
  // The output of the last forward, [T, H] of out_dtype().
  const HostTensor& out() const { return out_; }

 private:
  struct AlignedDelete {
    void operator()(std::byte* p) const;
  };
  Status call(const Workload& work, int rep, TensorRef ids_out, TensorRef weights_out,
              TensorRef magnitude_out = {});

  Backend backend_ = Backend::cpu;
  DType out_dtype_ = DType::f32;
  std::size_t packed_bytes_ = 0;
  std::vector<Layer> layers_;
  HostTensor out_;
  std::int64_t out_tokens_ = -1;
  std::unique_ptr<std::byte[], AlignedDelete> workspace_;
  std::size_t workspace_bytes_ = 0;
  // The GPU's output and workspace; out_ receives the output in forward().
  device::Stream stream_;
  std::optional<DeviceTensor> device_out_;
  device::Buffer device_workspace_;
};

// ---- measuring ------------------------------------------------------------------------------

struct Measurement {
  bench::TimingStats time;
  int warmup = 0;
  bool cuda_events = false;  // timed with CUDA events (GPU), else by the wall clock
  bool graph = false;        // as CUDA graph replays
  double experts_hit = 0;    // distinct routed experts per batch, mean over the batches
  bench::LayerWork work;
  bench::Floor floor;
  double pct_of_floor() const { return time.median_us > 0 ? 100.0 * floor.us / time.median_us : 0; }
  double gbps() const { return time.median_us > 0 ? work.bytes / (time.median_us * 1e3) : 0; }
  double gflops() const { return time.median_us > 0 ? work.flops / (time.median_us * 1e3) : 0; }
};

// Distinct experts each batch routes to (one forward per batch, which also warms the layer up).
Result<double> mean_experts_hit(LayerRunner& runner, const Workload& work, const LayerConfig& c);

// Warm-up, timed repetitions as `plan` says, and the floor for `experts_hit` under the target's
// ceilings. The GPU runner is timed with CUDA events, graph replays when plan.graph.
Result<Measurement> measure(LayerRunner& runner, const Workload& work, const LayerConfig& config,
                            double experts_hit, const TimingPlan& plan, const Target& target);

// Rough costs in microseconds, for the progress bar's ETA only (never reported as results):
// random weights and packing stream the weights at roughly 200 MB/s; a backend call takes about
// twice its floor; the reference computes about 1.2 GFLOP/s per core.
double estimate_random_weights_us(const LayerConfig& config);
double estimate_pack_us(const LayerConfig& config, int copies);
double estimate_calls_us(const LayerConfig& config, std::int64_t tokens, int calls, Backend backend,
                         const Target& target);

// "12.3 GB", "850 MB": decimal units, as the floor's GB/s.
std::string format_bytes(double bytes);

// One timed result, as run and bench report it.
struct ResultRow {
  std::string preset;
  LayerConfig config;  // as run (after the memory guard and skew)
  std::int64_t tokens = 0;
  double skew = 0;
  Backend backend = Backend::cpu;
  Measurement m;
  std::string kernels;  // what forward ran (Layer::describe)
};

// A skew as the result files name it (bench/peers writes the same): "uniform" for the layer's own
// router, "zipf-1.2" for Zipf-skewed routing.
std::string skew_name(double skew);

// The JSON Lines record of a result, flat. First, in this order, the keys every result file
// shares (bench/peers writes them too): preset, tokens, skew, impl, us_median, floor_us, bound,
// gpu (null off the GPU), commit. Then mode ("layer": the layer's router; "experts": routing
// given), how it was timed, what ran (sizes, routing, experts hit), the ceilings measured in the
// same run and where and when it ran, so that a line read on its own can be reproduced.
bench::JsonObject result_json(const ResultRow& row, const bench::MachineInfo& machine,
                              const Target& target, const std::string& command);

}  // namespace fusedmoe::cli
