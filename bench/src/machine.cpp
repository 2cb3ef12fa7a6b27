#include "fusedmoe_bench/machine.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <thread>

#include <sys/mman.h>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FUSEDMOE_BENCH_X86 1
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fusedmoe_bench/timing.hpp"

namespace fusedmoe::bench {
namespace {

// Runs fn(thread_index) on `threads` threads and waits for all of them. OpenMP when the build has
// it (the library's own threads come from the same runtime), plain threads otherwise.
template <class Fn>
void run_on_threads(int threads, Fn&& fn) {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    // The runtime may grant fewer threads than asked: the granted ones cover every index.
    for (int t = omp_get_thread_num(); t < threads; t += omp_get_num_threads()) fn(t);
  }
#else
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back([&fn, t] { fn(t); });
  fn(0);
  for (auto& th : pool) th.join();
#endif
}

int affinity_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return c != ' ' && c != '\t'; };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::string read_cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return trim(line.substr(colon + 1));
    }
  }
  return "unknown CPU";
}

// "32K", "1024K", "32M" as in /sys/devices/system/cpu/cpu0/cache/index*/size.
std::int64_t parse_cache_size(const std::string& s) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (end == s.c_str() || v <= 0) return 0;
  if (*end == 'K') return v << 10;
  if (*end == 'M') return v << 20;
  if (*end == 'G') return v << 30;
  return v;
}

std::int64_t read_llc_bytes() {
  std::int64_t largest = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string s;
    if (!(in >> s)) continue;
    largest = std::max(largest, parse_cache_size(s));
  }
  return largest;
}

double read_load_average() {
  std::ifstream in("/proc/loadavg");
  double one_minute = -1;
  if (!(in >> one_minute)) return -1;
  return one_minute;
}

std::string detect_simd() {
#ifdef FUSEDMOE_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    return __builtin_cpu_supports("avx512bf16") ? "avx512f+bf16" : "avx512f";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2+fma";
  return "sse2";
#else
  return "portable";
#endif
}

// ---- read bandwidth --------------------------------------------------------------------------

constexpr int kLanes = 8;  // independent accumulators: enough loads in flight to cover latency

// One thread's share of the read: kLanes running sums, combined at the end so nothing is dead.
inline __attribute__((always_inline)) std::uint64_t sum_words_body(const std::uint64_t* p,
                                                                   std::int64_t n) {
  std::uint64_t acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += p[i + j];
  }
  for (; i < n; ++i) acc[0] += p[i];
  std::uint64_t total = 0;
  for (int j = 0; j < kLanes; ++j) total ^= acc[j];
  return total;
}

std::uint64_t sum_words_portable(const std::uint64_t* p, std::int64_t n) {
  return sum_words_body(p, n);
}

#ifdef FUSEDMOE_BENCH_X86
// Same loop with 256-bit loads: baseline x86-64 code could leave bandwidth unused on wide cores.
__attribute__((target("avx2"))) std::uint64_t sum_words_avx2(const std::uint64_t* p,
                                                             std::int64_t n) {
  return sum_words_body(p, n);
}
#endif

struct AlignedFree {
  void operator()(std::uint64_t* p) const {
    ::operator delete[](p, std::align_val_t{std::size_t{2} << 20});
  }
};

// ---- FMA ceiling ------------------------------------------------------------------------------

// Each kernel runs `iters` iterations of kChains independent FMA chains a = a·b + c held in
// registers (enough chains to cover FMA latency × issue width), and returns a value derived from
// every chain so the compiler cannot drop any. b < 1 and c > 0 keep a bounded and normal.
constexpr int kChains = 12;

#ifdef FUSEDMOE_BENCH_X86
__attribute__((target("avx512f"))) float fma_loop_avx512(std::int64_t iters) {
  const __m512 b = _mm512_set1_ps(0.999999f);
  const __m512 c = _mm512_set1_ps(1e-3f);
  __m512 a[kChains];
  for (int j = 0; j < kChains; ++j) a[j] = _mm512_set1_ps(1.0f + 0.01f * static_cast<float>(j));
  for (std::int64_t i = 0; i < iters; ++i) {
    for (int j = 0; j < kChains; ++j) a[j] = _mm512_fmadd_ps(a[j], b, c);
  }
  __m512 s = a[0];
  for (int j = 1; j < kChains; ++j) s = _mm512_add_ps(s, a[j]);
  // Through memory rather than _mm512_reduce_add_ps, which trips GCC 12's -Wuninitialized.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(std::int64_t iters) {
  const __m256 b = _mm256_set1_ps(0.999999f);
  const __m256 c = _mm256_set1_ps(1e-3f);
  __m256 a[kChains];
  for (int j = 0; j < kChains; ++j) a[j] = _mm256_set1_ps(1.0f + 0.01f * static_cast<float>(j));
  for (std::int64_t i = 0; i < iters; ++i) {
    for (int j = 0; j < kChains; ++j) a[j] = _mm256_fmadd_ps(a[j], b, c);
  }
  __m256 s = a[0];
  for (int j = 1; j < kChains; ++j) s = _mm256_add_ps(s, a[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}
#endif

// Element-wise, so the compiler vectorises it with whatever the baseline ISA has (mul + add).
constexpr int kPortableWidth = 8;
float fma_loop_portable(std::int64_t iters) {
  float a[kChains * kPortableWidth];
  for (int j = 0; j < kChains * kPortableWidth; ++j) a[j] = 1.0f + 0.001f * static_cast<float>(j);
  for (std::int64_t i = 0; i < iters; ++i) {
    for (float& v : a) v = v * 0.999999f + 1e-3f;
  }
  float total = 0;
  for (float v : a) total += v;
  return total;
}

struct FmaKernel {
  float (*loop)(std::int64_t);
  int lanes;  // fp32 lanes per chain
  const char* isa;
};

FmaKernel pick_fma_kernel() {
#ifdef FUSEDMOE_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {fma_loop_avx512, 16, "avx512f"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {fma_loop_avx2, 8, "avx2+fma"};
  }
#endif
  return {fma_loop_portable, kPortableWidth, "portable"};
}

volatile float g_fma_sink = 0;
volatile std::uint64_t g_read_sink = 0;

}  // namespace

std::string MachineInfo::device() const {
  return cpu_model + " (" + std::to_string(cores) + (cores == 1 ? " core)" : " cores)");
}

std::string MachineInfo::busy_warning() const {
  if (load_average < 0.5 * cores) return {};
  char buf[160];
  std::snprintf(buf, sizeof(buf),
                "the machine is busy (load average %.1f on %d cores): timings will be slow and "
                "noisy",
                load_average, cores);
  return buf;
}

MachineInfo machine_info() {
  MachineInfo m;
  m.cpu_model = read_cpu_model();
  m.cores = affinity_cores();
  m.simd = detect_simd();
  m.llc_bytes = read_llc_bytes();
  m.load_average = read_load_average();
#ifdef _OPENMP
  m.openmp_threads = omp_get_max_threads();
#endif
  return m;
}

std::int64_t mem_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  long long kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return static_cast<std::int64_t>(kib) * 1024;
  }
  return -1;
}

ReadBandwidth measure_read_bandwidth() {
  constexpr std::int64_t kMaxBytes = std::int64_t{1} << 30;
  constexpr std::int64_t kMinBytes = std::int64_t{64} << 20;
  constexpr int kPasses = 7;
  ReadBandwidth r;
  r.threads = affinity_cores();
  std::int64_t bytes = kMaxBytes;
  const std::int64_t avail = mem_available_bytes();
  if (avail > 0) bytes = std::min(bytes, avail / 8);
  bytes = std::max(bytes, kMinBytes);

  // Halve until the allocation succeeds: a smaller buffer is a weaker measurement, not a crash.
  std::unique_ptr<std::uint64_t[], AlignedFree> buffer;
  for (; bytes >= kMinBytes && !buffer; bytes /= 2) {
    try {
      buffer.reset(new (std::align_val_t{std::size_t{2} << 20})
                       std::uint64_t[static_cast<std::size_t>(bytes / 8)]);
      break;
    } catch (const std::bad_alloc&) {
    }
  }
  if (!buffer) return r;
#ifdef MADV_HUGEPAGE
  // Huge pages where the kernel offers them: TLB misses would otherwise cap the read below what
  // a well-behaved kernel reaches (seen: 15-25% on Zen 4).
  madvise(buffer.get(), static_cast<std::size_t>(bytes), MADV_HUGEPAGE);
#endif
  const std::int64_t words = bytes / 8;
  const int threads = r.threads;
  const auto chunk = [&](int t) {
    const std::int64_t begin = words * t / threads, end = words * (t + 1) / threads;
    return std::pair{begin, end};
  };
  // First touch by the thread that later reads the chunk, so pages land on its memory node.
  run_on_threads(threads, [&](int t) {
    const auto [begin, end] = chunk(t);
    for (std::int64_t i = begin; i < end; ++i) buffer[static_cast<std::size_t>(i)] = i * 0x9e37u;
  });

  auto sum = sum_words_portable;
#ifdef FUSEDMOE_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) sum = sum_words_avx2;
#endif
  std::vector<std::uint64_t> partial(static_cast<std::size_t>(threads));
  std::vector<double> gbps;
  for (int pass = 0; pass <= kPasses; ++pass) {
    const Stopwatch watch;
    run_on_threads(threads, [&](int t) {
      const auto [begin, end] = chunk(t);
      partial[static_cast<std::size_t>(t)] = sum(buffer.get() + begin, end - begin);
    });
    const double s = watch.elapsed_s();
    for (std::uint64_t p : partial) g_read_sink = g_read_sink + p;
    if (pass > 0) gbps.push_back(static_cast<double>(bytes) / s * 1e-9);  // pass 0: warm-up
  }
  r.gbps = *std::max_element(gbps.begin(), gbps.end());
  r.bytes = bytes;
  r.passes = kPasses;
  return r;
}

ComputeCeiling measure_compute_ceiling() {
  const FmaKernel k = pick_fma_kernel();
  ComputeCeiling c;
  c.isa = k.isa;
  c.threads = affinity_cores();

  // Calibrate on one thread so that one timed run lasts about 50 ms.
  std::int64_t iters = 1 << 16;
  for (;;) {
    const Stopwatch watch;
    g_fma_sink = g_fma_sink + k.loop(iters);
    const double s = watch.elapsed_s();
    if (s > 5e-3 || iters > (std::int64_t{1} << 34)) {
      iters = std::max<std::int64_t>(
          1, static_cast<std::int64_t>(static_cast<double>(iters) * 0.05 / std::max(s, 1e-9)));
      break;
    }
    iters *= 4;
  }
  // Best of three: the ceiling is what the cores can do, so interference only lowers a run.
  const double flops_per_thread = static_cast<double>(iters) * kChains * k.lanes * 2.0;
  std::vector<float> results(static_cast<std::size_t>(c.threads));
  for (int run = 0; run < 3; ++run) {
    const Stopwatch watch;
    run_on_threads(c.threads, [&](int t) { results[static_cast<std::size_t>(t)] = k.loop(iters); });
    const double s = watch.elapsed_s();
    for (float v : results) g_fma_sink = g_fma_sink + v;
    c.gflops = std::max(c.gflops, flops_per_thread * c.threads / s * 1e-9);
  }
  return c;
}

Ceilings measure_ceilings() {
  Ceilings c;
  c.read = measure_read_bandwidth();
  c.compute = measure_compute_ceiling();
  return c;
}

}  // namespace fusedmoe::bench
