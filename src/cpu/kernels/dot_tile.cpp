// Run-time choice of the dot_tile kernel. Every ISA's kernel is compiled into the library (each
// translation unit with its own -m flags); which of them may run is decided once, on first use,
// from the CPU's feature bits, and FUSEDMOE_CPU_ISA can lower that choice.
#include "cpu/kernels/dot_tile.hpp"

#include <array>
#include <cstdlib>
#include <string_view>

#include "cpu/kernels/dot_tile_isa.hpp"

// sources.cmake defines FUSEDMOE_CPU_PORTABLE_ONLY when it could not build the x86 kernels.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(FUSEDMOE_CPU_PORTABLE_ONLY)
#define FUSEDMOE_CPU_X86_KERNELS 1
#else
#define FUSEDMOE_CPU_X86_KERNELS 0
#endif

namespace fusedmoe::cpu {
namespace {

constexpr std::array<Isa, 4> kAllIsas = {Isa::portable, Isa::avx2, Isa::avx512, Isa::avx512_bf16};

struct Registry {
  std::array<Kernels, kAllIsas.size()> kernels{};
  std::array<bool, kAllIsas.size()> available{};
};

std::size_t index_of(Isa isa) { return static_cast<std::size_t>(isa); }

bool cpu_runs(Isa isa) {
#if FUSEDMOE_CPU_X86_KERNELS
  // __builtin_cpu_supports also checks that the OS saves the AVX / AVX-512 register state.
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  switch (isa) {
    case Isa::portable:
      return true;
    case Isa::avx2:
      return avx2;
    case Isa::avx512:
      return avx512;
    case Isa::avx512_bf16:
      return avx512 && __builtin_cpu_supports("avx512bf16");
  }
  return false;
#else
  return isa == Isa::portable;
#endif
}

DotTileFn kernel_of(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return detail::dot_tile_portable;
#if FUSEDMOE_CPU_X86_KERNELS
    case Isa::avx2:
      return detail::dot_tile_avx2;
    case Isa::avx512:
      return detail::dot_tile_avx512;
    case Isa::avx512_bf16:
      return detail::dot_tile_avx512bf16;
#else
    default:
      return nullptr;
#endif
  }
  return nullptr;
}

// The ISA named by FUSEDMOE_CPU_ISA, or the most capable one when it is unset or unknown.
Isa isa_cap() {
  const char* env = std::getenv("FUSEDMOE_CPU_ISA");  // NOLINT(concurrency-mt-unsafe): once
  if (env == nullptr) return kAllIsas.back();
  for (Isa isa : kAllIsas) {
    if (to_string(isa) == std::string_view(env)) return isa;
  }
  return kAllIsas.back();
}

Registry make_registry() {
  Registry r;
  for (std::size_t i = 0; i < kAllIsas.size(); ++i) {
    const DotTileFn fn = kernel_of(kAllIsas[i]);
    r.kernels[i] = {kAllIsas[i], fn};
    r.available[i] = fn != nullptr && cpu_runs(kAllIsas[i]);
  }
  return r;
}

const Registry& registry() {
  static const Registry r = make_registry();  // thread-safe initialisation, done once
  return r;
}

}  // namespace

std::string_view to_string(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return "portable";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    case Isa::avx512_bf16:
      return "avx512_bf16";
  }
  return "unknown";
}

const Kernels& kernels() {
  // Separate from the registry so that kernels_for() never reads the environment.
  static const Kernels* const chosen = [] {
    const Registry& r = registry();
    const std::size_t cap = index_of(isa_cap());
    std::size_t best = 0;  // portable, always available
    for (std::size_t i = 1; i <= cap && i < kAllIsas.size(); ++i) {
      if (r.available[i]) best = i;
    }
    return &r.kernels[best];
  }();
  return *chosen;
}

const Kernels* kernels_for(Isa isa) {
  const Registry& r = registry();
  const std::size_t i = index_of(isa);
  if (i >= kAllIsas.size() || !r.available[i]) return nullptr;
  return &r.kernels[i];
}

}  // namespace fusedmoe::cpu
