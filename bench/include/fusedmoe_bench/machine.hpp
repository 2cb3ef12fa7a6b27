// What the machine is and what it can do: CPU model, cores, memory, and the two ceilings the
// floor is computed from (PERF.md) — read bandwidth and peak fp32 FMA rate — measured in the
// same process as the timings they are compared with.
#pragma once

#include <cstdint>
#include <string>

namespace fusedmoe::bench {

struct MachineInfo {
  std::string cpu_model;       // "model name" of /proc/cpuinfo, "unknown CPU" if absent
  int cores = 1;               // CPUs this process may run on (affinity mask)
  std::string simd;            // widest vector ISA the CPU reports: "avx512f", "avx2", ...
  std::int64_t llc_bytes = 0;  // largest cache of cpu0, 0 if unknown
  int openmp_threads = 0;      // threads an OpenMP region gets by default; 0 without OpenMP
  double load_average = -1;    // 1-minute load average at the start, -1 if unknown
  std::string device() const;  // "AMD EPYC (2 cores)"
  // A warning when other work keeps the cores busy (load average at least half the cores): then
  // multi-threaded timings are slow and noisy. Empty otherwise.
  std::string busy_warning() const;
};

MachineInfo machine_info();

// MemAvailable of /proc/meminfo in bytes; -1 when it cannot be read.
std::int64_t mem_available_bytes();

struct ReadBandwidth {
  // 1e9 bytes per second: the best of the timed passes. A ceiling is what the machine can do;
  // on a shared machine the median measures the neighbours as much as the memory.
  double gbps = 0;
  std::int64_t bytes = 0;  // buffer size read per pass
  int passes = 0;          // timed passes (after one warm-up pass)
  int threads = 0;
};

// Sums a large buffer (1 GiB, or 1/8 of MemAvailable when less) on all cores with several
// independent accumulators. Read-only on purpose: a copy also counts writes and reads lower.
ReadBandwidth measure_read_bandwidth();

struct ComputeCeiling {
  double gflops = 0;  // fp32, an FMA counted as 2 flops
  std::string isa;    // "avx512f", "avx2+fma" or "portable"
  int threads = 0;
};

// Peak fp32 FMA rate from register-only loops on all cores, using the widest ISA the CPU has.
// Takes about 0.2 s.
ComputeCeiling measure_compute_ceiling();

struct Ceilings {
  ReadBandwidth read;
  ComputeCeiling compute;
};

// Both ceilings, bandwidth first (about 1 s in all).
Ceilings measure_ceilings();

}  // namespace fusedmoe::bench
