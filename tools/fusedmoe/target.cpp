#include "target.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cases.hpp"
#include "fusedmoe/device.hpp"
#include "fusedmoe/presets.hpp"

namespace fusedmoe::cli {
namespace {

std::string describe_cpu_ceilings(const bench::Ceilings& c) {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "read %.1f GB/s (%s buffer, best of %d passes, %d threads); "
                "fp32 FMA %.1f GFLOP/s (%s, %d threads)",
                c.read.gbps, format_bytes(static_cast<double>(c.read.bytes)).c_str(), c.read.passes,
                c.read.threads, c.compute.gflops, c.compute.isa.c_str(), c.compute.threads);
  return buf;
}

Result<Target> measure_gpu(const bench::MachineInfo& machine, bool quiet) {
  Result<device::Info> info = device::info(0);
  if (!info.ok()) return info.status();
  if (!quiet) std::fprintf(stderr, "measuring GPU read bandwidth and cuBLAS bf16 rate...\n");
  Result<double> read = device::measure_read_bandwidth();
  if (!read.ok()) return read.status();
  Result<double> gemm = device::measure_bf16_gemm_rate();
  if (!gemm.ok()) return gemm.status();

  Target t;
  t.backend = Backend::cuda;
  t.gpu = true;
  t.device = info->name;
  char buf[256];
  std::snprintf(buf, sizeof(buf), "sm_%d%d, %d SMs, %s, L2 %s", info->cc_major, info->cc_minor,
                info->multiprocessors,
                format_bytes(static_cast<double>(info->memory_bytes)).c_str(),
                format_bytes(static_cast<double>(info->l2_bytes)).c_str());
  t.details = buf;
  t.cache_bytes = static_cast<std::int64_t>(info->l2_bytes);
  t.memory_bytes = static_cast<std::int64_t>(info->memory_bytes);
  t.read_gbps = read.value() * 1e-9;
  t.compute_gflops = gemm.value() * 1e-9;
  t.cpu_threads = machine.cores;
  std::snprintf(buf, sizeof(buf),
                "read %.0f GB/s (read-only kernel); bf16 GEMM %.1f TFLOP/s (cuBLAS)", t.read_gbps,
                t.compute_gflops * 1e-3);
  t.ceilings = buf;
  return t;
}

Target measure_cpu(Backend backend, const bench::MachineInfo& machine, bool quiet) {
  if (!quiet) std::fprintf(stderr, "measuring read bandwidth and FMA rate...\n");
  const bench::Ceilings c = bench::measure_ceilings();
  Target t;
  t.backend = backend;
  t.device = machine.device();
  t.details = machine.simd;
  if (machine.openmp_threads > 0) {
    t.details += ", " + std::to_string(machine.openmp_threads) + " OpenMP threads";
  }
  t.cache_bytes = machine.llc_bytes;
  t.read_gbps = c.read.gbps;
  t.compute_gflops = c.compute.gflops;
  t.cpu_threads = std::max(c.compute.threads, 1);
  t.ceilings = describe_cpu_ceilings(c);
  return t;
}

}  // namespace

Status check_backend(Backend backend) {
  if (backend_available(backend)) return {};
  std::string why = "this build or machine cannot run it";
  if (backend == Backend::cuda) {
    // The device API knows why: no CUDA in this build, no GPU, or a GPU the kernels do not cover.
    const Result<device::Info> info = device::info(0);
    if (!info.ok()) {
      why = info.status().message();
    } else if (device::count() > 0) {
      why = info->name + " (sm_" + std::to_string(info->cc_major) + std::to_string(info->cc_minor) +
            ") is not supported by the CUDA kernels";
    }
  }
  return Status{StatusCode::unsupported_arch,
                "backend " + std::string(to_string(backend)) + " is not available: " + why};
}

Result<Target> measure_target(Backend backend, const bench::MachineInfo& machine, bool quiet) {
  if (Status s = check_backend(backend); !s.ok()) return s;
  if (backend == Backend::cuda) return measure_gpu(machine, quiet);
  return measure_cpu(backend, machine, quiet);
}

int Target::weight_copies(const LayerConfig& config) const {
  return gpu ? gpu_weight_copies(config, cache_bytes) : cpu_weight_copies(config, cache_bytes);
}

TimingPlan timing_plan(const Options& o, const Target& target, std::int64_t tokens) {
  TimingPlan p;
  p.warmup = o.warmup.value_or(target.gpu ? kDefaultGpuWarmup : kDefaultWarmup);
  p.reps = o.reps.value_or(target.gpu ? kDefaultGpuReps : kDefaultReps);
  p.graph = target.gpu && o.graph && tokens <= kGraphMaxTokens;
  return p;
}

int cpu_weight_copies(const LayerConfig& config, std::int64_t llc_bytes) {
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

int gpu_weight_copies(const LayerConfig& config, std::int64_t l2_bytes) {
  // Enough for any layer worth timing on a GPU; a tinier one gets less than 3x L2 of copies.
  constexpr double kMaxCopies = 128;
  // An L2 the device did not report is taken as the H200's 60 MB rather than as none.
  const double l2 = static_cast<double>(l2_bytes > 0 ? l2_bytes : std::int64_t{60} << 20);
  const double layer = static_cast<double>(std::max<std::int64_t>(weight_bytes(config), 1));
  if (layer >= 3 * l2) return 1;
  return static_cast<int>(std::min(std::ceil(3 * l2 / layer), kMaxCopies));
}

}  // namespace fusedmoe::cli
