// Where a backend runs, the two ceilings its floor is computed from (PERF.md) measured in this
// process, and how its cells are timed: CPU backends by wall clock against the read bandwidth
// and fp32 FMA rate of bench/machine.hpp; the GPU by CUDA events (graph replays for small T)
// against its read bandwidth and cuBLAS bf16 rate, both from fusedmoe::device.
#pragma once

#include <cstdint>
#include <string>

#include "args.hpp"
#include "fusedmoe/weights.hpp"
#include "fusedmoe_bench/machine.hpp"
#include "fusedmoe_bench/roofline.hpp"

namespace fusedmoe::cli {

struct Target {
  Backend backend = Backend::cpu;
  bool gpu = false;
  std::string device;             // "NVIDIA H200", or the CPU: "AMD EPYC (2 cores)"
  std::string details;            // "132 SMs, 150.0 GB, L2 62.9 MB" or "avx512f, 2 OpenMP threads"
  std::int64_t cache_bytes = 0;   // the GPU's L2, or the CPU's last-level cache
  std::int64_t memory_bytes = 0;  // the GPU's memory; 0 on the CPU (see fit_in_memory)
  double read_gbps = 0;
  double compute_gflops = 0;  // GPU: cuBLAS bf16 GEMM; CPU: fp32 FMA on every core
  int cpu_threads = 1;
  std::string ceilings;  // one line for the output

  bench::Floor floor(const bench::LayerWork& work) const {
    return bench::floor_of(work, read_gbps, compute_gflops);
  }
  // How many packed copies of a layer's weights to cycle so that they are not cache-resident.
  int weight_copies(const LayerConfig& config) const;
};

// unsupported_arch, naming the reason, when this build or machine cannot run `backend`.
Status check_backend(Backend backend);

// Checks `backend` and measures its ceilings (about a second; a line on stderr unless quiet).
Result<Target> measure_target(Backend backend, const bench::MachineInfo& machine, bool quiet);

// How one cell is timed.
struct TimingPlan {
  int warmup = 0;
  int reps = 1;
  bool graph = false;  // GPU: as replays of CUDA graphs captured from forward
};

// The options' repetitions or the target's defaults; graphs on the GPU for T <= kGraphMaxTokens
// unless --no-graph.
TimingPlan timing_plan(const Options& options, const Target& target, std::int64_t tokens);

// CPU: copies cycled so that a copy's weights have left the last-level cache before it is used
// again (twice the LLC streamed in between, at T = 1); 1 for layers whose experts alone exceed
// that, and at most 1 GiB of copies.
int cpu_weight_copies(const LayerConfig& config, std::int64_t llc_bytes);
// GPU: when a layer's weights are under 3x the L2, enough copies that the set cycled through
// exceeds it (PERF.md); 1 otherwise.
int gpu_weight_copies(const LayerConfig& config, std::int64_t l2_bytes);

}  // namespace fusedmoe::cli
