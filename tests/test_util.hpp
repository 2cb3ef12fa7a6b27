// Shared test helpers: build a case (config, random weights, x, optional precomputed routing),
// run it on a backend with poisoned outputs and guard bytes around them, and check it against
// the reference backend under CONTRACT.md's tolerances, so each test is a few lines.
//
// Backends: the suites that compare a backend with the reference run backend_under_test(), the
// CPU path unless FUSEDMOE_TEST_BACKEND=cuda. A CUDA run copies everything forward() touches to
// the device (DeviceRun) and back, guards and poison included, so the checks are the same.
//
// Seeds: every case draws its data from a seed derived from the running test's name (so cases
// differ from one another and a failure reproduces) mixed with FUSEDMOE_TEST_SEED when set (so a
// run can draw fresh data). The seed is printed with every failure through SCOPED_TRACE.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/check.hpp"
#include "core/half.hpp"
#include "fusedmoe/compare.hpp"
#include "fusedmoe/config.hpp"
#include "fusedmoe/device.hpp"
#include "fusedmoe/layer.hpp"
#include "fusedmoe/status.hpp"
#include "fusedmoe/tensor.hpp"
#include "fusedmoe/weights.hpp"
#include "fusedmoe/workload.hpp"

namespace fusedmoe {

// Readable parameter names in GoogleTest (and so in CTest) output.
inline void PrintTo(DType v, std::ostream* os) { *os << to_string(v); }
inline void PrintTo(Backend v, std::ostream* os) { *os << to_string(v); }
inline void PrintTo(WeightLayout v, std::ostream* os) { *os << to_string(v); }
inline void PrintTo(RoutingKind v, std::ostream* os) { *os << to_string(v); }
inline void PrintTo(Activation v, std::ostream* os) { *os << to_string(v); }

}  // namespace fusedmoe

namespace fusedmoe::test {

// ---- seeds ---------------------------------------------------------------------------------

inline std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// FUSEDMOE_TEST_SEED (a number) or 0.
inline std::uint64_t base_seed() {
  const char* env = std::getenv("FUSEDMOE_TEST_SEED");
  return env != nullptr ? std::strtoull(env, nullptr, 0) : 0;
}

// The seed case_seed(salt) gives inside test `suite`.`name` under FUSEDMOE_TEST_SEED=`base`, so
// that a regression test can replay a case another test drew.
inline std::uint64_t case_seed_of(std::string_view suite, std::string_view name,
                                  std::string_view salt, std::uint64_t base) {
  std::uint64_t h = fnv1a(suite);
  h = fnv1a(".", h);
  h = fnv1a(name, h);
  h = fnv1a(salt, h);
  return (h ^ (base * 0x9e3779b97f4a7c15ull)) & 0xffffffffffffull;  // short to print
}

// A seed of its own for the running test (and `salt`, for several draws in one test).
inline std::uint64_t case_seed(std::string_view salt = {}) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return case_seed_of(info != nullptr ? info->test_suite_name() : "",
                      info != nullptr ? info->name() : "", salt, base_seed());
}

// ---- the backend under test -----------------------------------------------------------------

// The backend the comparison suites check against the reference: FUSEDMOE_TEST_BACKEND=cuda
// selects Backend::cuda; unset or "cpu" selects Backend::cpu (anything else fails the test).
inline Backend backend_under_test() {
  const char* env = std::getenv("FUSEDMOE_TEST_BACKEND");
  const std::string_view name = env != nullptr ? env : "cpu";
  if (name == "cuda") return Backend::cuda;
  if (name != "cpu") ADD_FAILURE() << "FUSEDMOE_TEST_BACKEND must be cpu or cuda, got " << name;
  return Backend::cpu;
}

// Why a test of `backend` is skipped. CTest's *_cuda entries recognise "backend under test is
// not available" in the output (SKIP_REGULAR_EXPRESSION), so that text must stay.
inline std::string unavailable_reason(Backend backend) {
  return "the " + std::string(to_string(backend)) +
         " backend under test is not available (a build without it, or no GPU)";
}

}  // namespace fusedmoe::test

// The first statement of a test (or of its fixture's SetUp) that runs `backend`: skips the test,
// reported as skipped by CTest, where the backend cannot run.
#define FUSEDMOE_TEST_REQUIRE_BACKEND(backend)                                  \
  do {                                                                          \
    const ::fusedmoe::Backend fusedmoe_required_ = (backend);                   \
    if (!::fusedmoe::backend_available(fusedmoe_required_)) {                   \
      GTEST_SKIP() << ::fusedmoe::test::unavailable_reason(fusedmoe_required_); \
    }                                                                           \
  } while (0)

// Skips the running test when `backend` refuses this config and options by design
// (test::unsupported_reason); the CUDA-only checks of that refusal are in errors_test.
#define FUSEDMOE_TEST_REQUIRE_SUPPORT(backend, ...)                                               \
  do {                                                                                            \
    const std::string fusedmoe_why_ = ::fusedmoe::test::unsupported_reason(backend, __VA_ARGS__); \
    if (!fusedmoe_why_.empty()) GTEST_SKIP() << fusedmoe_why_;                                    \
  } while (0)

namespace fusedmoe::test {

// ---- configs -------------------------------------------------------------------------------

inline LayerConfig make_config(std::int64_t hidden, std::int64_t inter, std::int64_t experts,
                               std::int64_t k, DType dtype = DType::bf16) {
  LayerConfig c;
  c.hidden = hidden;
  c.intermediate = inter;
  c.experts = experts;
  c.top_k = k;
  c.dtype = dtype;
  return c;
}

// DeepSeek-V3's routing (MODELS.md) on a smaller layer: n_group groups, topk_group kept.
inline LayerConfig deepseek_like(std::int64_t hidden, std::int64_t inter, std::int64_t experts,
                                 std::int64_t k, int n_group, int topk_group,
                                 DType dtype = DType::bf16) {
  LayerConfig c = make_config(hidden, inter, experts, k, dtype);
  c.routing = {RoutingKind::sigmoid_topk, true, n_group, topk_group, 2.5f, false, true};
  return c;
}

// gpt-oss's routing and activation on a smaller layer.
inline LayerConfig gpt_oss_like(std::int64_t hidden, std::int64_t inter, std::int64_t experts,
                                std::int64_t k, DType dtype = DType::bf16) {
  LayerConfig c = make_config(hidden, inter, experts, k, dtype);
  c.routing.kind = RoutingKind::topk_softmax;
  c.routing.renormalize = false;
  c.routing.router_bias = true;
  c.activation = Activation::swiglu_oss;
  c.expert_bias = true;
  return c;
}

inline std::string describe_config(const LayerConfig& c) {
  std::ostringstream s;
  s << "H=" << c.hidden << " I=" << c.intermediate << " E=" << c.experts << " k=" << c.top_k << " "
    << to_string(c.routing.kind) << (c.routing.renormalize ? "+renorm" : "")
    << " groups=" << c.routing.n_group << "/" << c.routing.topk_group
    << " scale=" << c.routing.scaling << (c.routing.router_bias ? " router_bias" : "")
    << (c.routing.correction_bias ? " correction_bias" : "") << " " << to_string(c.activation)
    << (c.expert_bias ? " expert_bias" : "") << " shared=" << c.shared.intermediate
    << (c.shared.gated ? "(gated)" : "") << " " << to_string(c.dtype);
  return s.str();
}

// ---- raw buffers -----------------------------------------------------------------------------

inline constexpr std::byte kPoisonByte{
    0xff};                                    // what HostTensor::poison writes: NaN in f16/bf16/f32
inline constexpr std::byte kGuardByte{0xa5};  // around outputs; must never be written
inline constexpr std::byte kIdPoisonByte{0x7b};  // ids_out: 0x7b7b7b7b is no expert id

inline bool all_bytes(const std::byte* p, std::size_t n, std::byte value) {
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] != value) return false;
  }
  return true;
}

// Counts elements of a float tensor whose bytes are all kPoisonByte.
inline std::int64_t count_poison(const ConstTensorRef& t) {
  const std::size_t es = dtype_size(t.dtype);
  std::int64_t n = 0;
  for (std::int64_t r = 0; r < t.size(0); ++r) {
    for (std::int64_t c = 0; c < (t.rank == 2 ? t.size(1) : 1); ++c) {
      const auto* p =
          static_cast<const std::byte*>(t.data) +
          static_cast<std::size_t>(r * t.stride(0) + c * (t.rank == 2 ? t.stride(1) : 0)) * es;
      n += all_bytes(p, es, kPoisonByte) ? 1 : 0;
    }
  }
  return n;
}

// A [rows, cols] output of one dtype whose rows are `row_stride` apart, poisoned, inside a
// buffer guarded by kGuardByte: the padding of each row and one whole extra row after the last.
// The data pointer is never null, even for rows == 0.
class GuardedOutput {
 public:
  GuardedOutput(DType dtype, std::int64_t rows, std::int64_t cols, std::int64_t row_stride = 0)
      : dtype_(dtype), rows_(rows), cols_(cols), stride_(row_stride > 0 ? row_stride : cols) {
    const std::size_t es = dtype_size(dtype);
    storage_.assign(static_cast<std::size_t>((rows + 1) * stride_) * es, kGuardByte);
    for (std::int64_t r = 0; r < rows; ++r) {
      std::memset(storage_.data() + static_cast<std::size_t>(r * stride_) * es, 0xff,
                  static_cast<std::size_t>(cols) * es);
    }
  }
  TensorRef ref() {
    return make_strided_rows(static_cast<void*>(storage_.data()), dtype_, rows_, cols_, stride_);
  }
  // The same view over a copy of storage() that starts at `base` (device memory).
  TensorRef ref_at(void* base, Device device) const {
    return make_strided_rows(base, dtype_, rows_, cols_, stride_, device);
  }
  // The whole buffer, guards included: what travels to a device and back.
  std::span<std::byte> storage() { return storage_; }
  std::span<const std::byte> storage() const { return storage_; }
  ConstTensorRef cref() const {
    return make_strided_rows(static_cast<const void*>(storage_.data()), dtype_, rows_, cols_,
                             stride_);
  }
  // Whether every byte outside the [rows, cols] elements still holds kGuardByte.
  bool guard_intact() const {
    const std::size_t es = dtype_size(dtype_);
    for (std::int64_t r = 0; r <= rows_; ++r) {
      const std::int64_t first = r < rows_ ? cols_ : 0;
      const std::byte* row = storage_.data() + static_cast<std::size_t>(r * stride_) * es;
      if (!all_bytes(row + static_cast<std::size_t>(first) * es,
                     static_cast<std::size_t>(stride_ - first) * es, kGuardByte)) {
        return false;
      }
    }
    return true;
  }
  // The elements row by row, without padding: what bit-identity compares.
  std::vector<std::byte> element_bytes() const {
    const std::size_t es = dtype_size(dtype_);
    std::vector<std::byte> v;
    for (std::int64_t r = 0; r < rows_; ++r) {
      const std::byte* row = storage_.data() + static_cast<std::size_t>(r * stride_) * es;
      v.insert(v.end(), row, row + static_cast<std::size_t>(cols_) * es);
    }
    return v;
  }
  std::vector<std::byte> row_bytes(std::int64_t r) const {
    const std::size_t es = dtype_size(dtype_);
    const std::byte* row = storage_.data() + static_cast<std::size_t>(r * stride_) * es;
    return {row, row + static_cast<std::size_t>(cols_) * es};
  }
  float at(std::int64_t r, std::int64_t c) const {
    return core::load_f32(dtype_, storage_.data(), r * stride_ + c);
  }
  DType dtype() const { return dtype_; }
  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }

 private:
  DType dtype_;
  std::int64_t rows_, cols_, stride_;
  std::vector<std::byte> storage_;
};

// ---- the case --------------------------------------------------------------------------------

// How precomputed ids are drawn (RoutingKind::precomputed only).
enum class Ids : std::uint8_t {
  zipf,          // fusedmoe::zipf_routing with Options::zipf_s (0: uniform)
  one_expert,    // every token's first slot is the same expert, the rest Zipf
  duplicate,     // every slot of a token names the same expert
  half_experts,  // only even experts get tokens: the odd ones have none
  invalid,       // Zipf, then some slots get ids outside [0, E)
};

struct Options {
  std::uint64_t seed = 0;  // 0: case_seed()
  Fill fill = Fill::gaussian;
  WeightLayout layout = WeightLayout::gate_up_rows;
  std::int64_t x_row_stride = 0;  // > H: padded rows whose padding is NaN
  std::int64_t out_row_stride = 0;
  float x_scale = 1.0f;
  Ids ids = Ids::zipf;
  double zipf_s = 0.0;
};

inline std::string describe_options(const Options& o) {
  std::ostringstream s;
  s << "seed=" << o.seed << " (FUSEDMOE_TEST_SEED=" << base_seed()
    << ") fill=" << (o.fill == Fill::integer ? "integer" : "gaussian")
    << " layout=" << to_string(o.layout);
  if (o.x_row_stride > 0) s << " x_row_stride=" << o.x_row_stride;
  if (o.out_row_stride > 0) s << " out_row_stride=" << o.out_row_stride;
  return s.str();
}

// Why `backend` refuses a case by design, or "" when it computes it: the CUDA backend computes
// in bf16 and f16 only (weights.hpp; unsupported_config otherwise), and reads x rows with 16-byte
// copies, so a row stride that breaks that alignment is refused as misaligned.
inline std::string unsupported_reason(Backend backend, const LayerConfig& c,
                                      const Options& o = {}) {
  if (backend != Backend::cuda) return {};
  if (c.dtype == DType::f32) return "the cuda backend computes in bf16 and f16 only";
  if (o.x_row_stride > 0 && o.x_row_stride * dtype_size(c.dtype) % 16 != 0) {
    return "the cuda backend needs x rows 16-byte aligned (x_row_stride " +
           std::to_string(o.x_row_stride) + ")";
  }
  return {};
}

class Problem {
 public:
  // `shared_weights`: reuse another problem's weights (same config and options) instead of
  // drawing them again, for layers too large to hold twice.
  Problem(const LayerConfig& config, std::int64_t tokens, Options options = {},
          std::shared_ptr<HostWeights> shared_weights = nullptr)
      : config(config), tokens(tokens), options(options), weights_ptr(std::move(shared_weights)) {
    if (this->options.seed == 0) this->options.seed = case_seed();
    const Options& o = this->options;
    if (weights_ptr == nullptr) {
      WorkloadOptions wo;
      wo.seed = o.seed;
      wo.fill = o.fill;
      wo.layout = o.layout;
      weights_ptr = std::make_shared<HostWeights>(HostWeights::random(config, wo));
    }
    const std::int64_t h = config.hidden;
    const std::int64_t stride = o.x_row_stride > 0 ? o.x_row_stride : h;
    // At least one row, so that x has a real pointer even for T = 0.
    x_buffer = HostTensor(config.dtype, {std::max<std::int64_t>(tokens, 1), stride});
    x_buffer.randomize(o.fill, o.seed, 1000, o.x_scale);
    const std::size_t es = dtype_size(config.dtype);
    for (std::int64_t t = 0; t < tokens && stride > h; ++t) {
      // NaN padding: a kernel that reads it poisons its output.
      std::memset(x_buffer.bytes() + static_cast<std::size_t>(t * stride + h) * es, 0xff,
                  static_cast<std::size_t>(stride - h) * es);
    }
    x = make_strided_rows(static_cast<const void*>(x_buffer.bytes()), config.dtype, tokens, h,
                          stride);
    if (config.routing.kind == RoutingKind::precomputed) draw_ids();
  }

  std::string describe() const {
    return "T=" + std::to_string(tokens) + " " + describe_config(config) + " " +
           describe_options(options);
  }

  // x[t, h] as stored (after rounding to the layer dtype).
  double x_at(std::int64_t t, std::int64_t h) const {
    return core::load_f32(config.dtype, x.data, t * x.stride(0) + h);
  }
  // Writes x[t, h] (rounded to the layer dtype).
  void set_x(std::int64_t t, std::int64_t h, float v) {
    core::store_f32(config.dtype, x_buffer.bytes(), t * x.stride(0) + h, v);
  }
  std::int32_t& id(std::int64_t t, std::int64_t j) {
    return reinterpret_cast<std::int32_t*>(ids.bytes())[t * config.top_k + j];
  }
  float& route_weight(std::int64_t t, std::int64_t j) {
    return reinterpret_cast<float*>(topk_weights.bytes())[t * config.top_k + j];
  }
  std::int32_t id_at(std::int64_t t, std::int64_t j) const {
    return static_cast<const std::int32_t*>(ids.cref().data)[t * config.top_k + j];
  }
  float route_weight_at(std::int64_t t, std::int64_t j) const {
    return static_cast<const float*>(topk_weights.cref().data)[t * config.top_k + j];
  }
  // Precomputed ids outside [0, E).
  std::int64_t invalid_id_count() const {
    if (config.routing.kind != RoutingKind::precomputed) return 0;
    const auto* p = static_cast<const std::int32_t*>(ids.cref().data);
    std::int64_t n = 0;
    for (std::int64_t i = 0; i < tokens * config.top_k; ++i) {
      n += (p[i] < 0 || p[i] >= config.experts) ? 1 : 0;
    }
    return n;
  }

  // The router logits of token t in fp64 (router bias included), from the stored values.
  std::vector<double> logits(std::int64_t t) const {
    std::vector<double> l(static_cast<std::size_t>(config.experts));
    const ConstTensorRef r = weights().router.cref();
    for (std::int64_t e = 0; e < config.experts; ++e) {
      double acc = 0;
      for (std::int64_t h = 0; h < config.hidden; ++h) {
        acc += x_at(t, h) * double{core::load_f32(r.dtype, r.data, e * config.hidden + h)};
      }
      if (config.routing.router_bias) {
        acc += core::load_f32(DType::f32, weights().router_bias.cref().data, e);
      }
      l[static_cast<std::size_t>(e)] = acc;
    }
    return l;
  }

  const HostWeights& weights() const { return *weights_ptr; }
  // For tests that plant values (NaN, huge) in the weights.
  HostWeights& edit_weights() { return *weights_ptr; }

  LayerConfig config;
  std::int64_t tokens;
  Options options;
  std::shared_ptr<HostWeights> weights_ptr;
  HostTensor x_buffer;
  ConstTensorRef x;
  HostTensor ids, topk_weights;  // precomputed routing: [T, k] i32 and f32

 private:
  void draw_ids() {
    const std::int64_t t_count = tokens, k = config.top_k, e = config.experts;
    const std::int64_t rows = std::max<std::int64_t>(t_count, 1);
    ids = HostTensor(DType::i32, {rows, k});
    topk_weights = HostTensor(DType::f32, {rows, k});
    const Options& o = options;
    if (o.ids == Ids::half_experts) {
      // Zipf over E/2 experts, then mapped to the even ones.
      zipf_routing(rows, e / 2, k, o.zipf_s, o.seed, ids.ref(), topk_weights.ref());
      for (std::int64_t i = 0; i < rows * k; ++i) {
        reinterpret_cast<std::int32_t*>(ids.bytes())[i] *= 2;
      }
      return;
    }
    zipf_routing(rows, e, k, o.zipf_s, o.seed, ids.ref(), topk_weights.ref());
    std::uint64_t r = o.seed;
    const auto next = [&r] {
      r = r * 6364136223846793005ull + 1442695040888963407ull;
      return r >> 33;
    };
    for (std::int64_t t = 0; t < rows; ++t) {
      switch (o.ids) {
        case Ids::one_expert: {
          // Move the chosen expert into slot 0 if Zipf drew it, so ids stay distinct.
          const std::int32_t hot = static_cast<std::int32_t>(e - 1);
          for (std::int64_t j = 1; j < k; ++j) {
            if (id(t, j) == hot) std::swap(id(t, j), id(t, 0));
          }
          id(t, 0) = hot;
          break;
        }
        case Ids::duplicate:
          for (std::int64_t j = 1; j < k; ++j) id(t, j) = id(t, 0);
          break;
        case Ids::invalid: {
          // every third token gets one bad slot, of every kind of bad
          if (t % 3 != 0) break;
          const std::int32_t bad[] = {-1,
                                      static_cast<std::int32_t>(e),
                                      static_cast<std::int32_t>(e + 1000),
                                      std::numeric_limits<std::int32_t>::min(),
                                      std::numeric_limits<std::int32_t>::max(),
                                      -7};
          id(t, static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(k))) =
              bad[(t / 3) % 6];
          break;
        }
        default:
          break;
      }
    }
  }
};

// ---- running ---------------------------------------------------------------------------------

inline Result<Layer> make_layer(const LayerConfig& config, const WeightSet& weights,
                                Backend backend) {
  Result<PackedWeights> packed = pack_weights(config, weights, backend);
  if (!packed.ok()) return packed.status();
  return Layer::create(config, std::move(packed).value());
}

struct RunResult {
  Status status;
  GuardedOutput out{DType::f32, 0, 0};
  GuardedOutput ids_out{DType::i32, 0, 0};
  GuardedOutput weights_out{DType::f32, 0, 0};
  // The reference only: each output element's term magnitude (ForwardArgs::magnitude_out).
  GuardedOutput magnitude{DType::f32, 0, 0};
  std::int64_t invalid_ids = 0;

  bool has_magnitude() const {
    return magnitude.rows() == out.rows() && magnitude.cols() == out.cols();
  }

  std::vector<std::int32_t> ids(std::int64_t t, std::int64_t k) const {
    const auto b = ids_out.row_bytes(t);
    std::vector<std::int32_t> v(static_cast<std::size_t>(k));
    std::memcpy(v.data(), b.data(), b.size());
    return v;
  }
  std::vector<float> weights(std::int64_t t, std::int64_t k) const {
    const auto b = weights_out.row_bytes(t);
    std::vector<float> v(static_cast<std::size_t>(k));
    std::memcpy(v.data(), b.data(), b.size());
    return v;
  }
};

// The outputs of one run before it: out of `out_dtype` poisoned and guarded, ids_out poisoned
// with a value that is no id, weights_out with NaN, both guarded too.
inline RunResult poisoned_outputs(const Problem& p, DType out_dtype) {
  const std::int64_t t = p.tokens, k = p.config.top_k, h = p.config.hidden;
  RunResult r;
  r.out = GuardedOutput(out_dtype, t, h, p.options.out_row_stride);
  r.ids_out = GuardedOutput(DType::i32, t, k);
  r.weights_out = GuardedOutput(DType::f32, t, k);
  TensorRef ids = r.ids_out.ref();
  for (std::int64_t i = 0; i < t; ++i) {
    std::memset(static_cast<std::byte*>(ids.data) + i * k * 4, static_cast<int>(kIdPoisonByte),
                static_cast<std::size_t>(k) * 4);
  }
  return r;
}

// Device copies of one run's buffers for the CUDA backend: x and the precomputed routing as the
// Problem holds them (whole buffers, so row strides and their NaN padding travel), the whole
// storage of out, ids_out and weights_out (guards included, so a write outside the elements
// shows after download()), and a workspace of exactly workspace_size(T) bytes. Allocated once;
// upload() may be called again with another problem of the same shape, which is how a captured
// CUDA graph is fed new inputs.
class DeviceRun {
 public:
  static Result<DeviceRun> allocate(const Layer& layer, const Problem& p, const RunResult& r) {
    DeviceRun d;
    const auto alloc = [](device::Buffer& b, std::size_t bytes) -> Status {
      if (bytes == 0) return {};
      Result<device::Buffer> got = device::Buffer::allocate(bytes);
      if (!got.ok()) return got.status();
      b = std::move(got).value();
      return {};
    };
    const bool precomputed = p.config.routing.kind == RoutingKind::precomputed;
    FUSEDMOE_RETURN_IF_ERROR(alloc(d.x_, p.x_buffer.size_bytes()));
    FUSEDMOE_RETURN_IF_ERROR(alloc(d.ids_, precomputed ? p.ids.size_bytes() : 0));
    FUSEDMOE_RETURN_IF_ERROR(alloc(d.weights_, precomputed ? p.topk_weights.size_bytes() : 0));
    FUSEDMOE_RETURN_IF_ERROR(alloc(d.out_, r.out.storage().size()));
    FUSEDMOE_RETURN_IF_ERROR(alloc(d.ids_out_, r.ids_out.storage().size()));
    FUSEDMOE_RETURN_IF_ERROR(alloc(d.weights_out_, r.weights_out.storage().size()));
    FUSEDMOE_RETURN_IF_ERROR(alloc(d.workspace_, layer.workspace_size(p.tokens)));

    const Device dev = Device::cuda(0);
    const std::int64_t t = p.tokens, k = p.config.top_k;
    ForwardArgs& a = d.args_;
    a.x = make_strided_rows(static_cast<const void*>(d.x_.data()), p.config.dtype, t,
                            p.config.hidden, p.x.stride(0), dev);
    a.out = r.out.ref_at(d.out_.data(), dev);
    a.ids_out = r.ids_out.ref_at(d.ids_out_.data(), dev);
    a.weights_out = r.weights_out.ref_at(d.weights_out_.data(), dev);
    if (precomputed) {
      a.topk_ids = make_tensor(static_cast<const void*>(d.ids_.data()), DType::i32, {t, k}, dev);
      a.topk_weights =
          make_tensor(static_cast<const void*>(d.weights_.data()), DType::f32, {t, k}, dev);
    }
    a.workspace = {d.workspace_.data(), d.workspace_.bytes()};
    return d;
  }

  // Copies p's inputs and r's outputs (poison and guards) to the device, and fills the
  // workspace with 0xff. p and r must have the shapes allocate() saw.
  Status upload(const Problem& p, const RunResult& r) {
    const auto put = [](device::Buffer& b, const void* host, std::size_t bytes,
                        const char* what) -> Status {
      if (bytes != b.bytes()) {
        return {StatusCode::invalid_argument,
                std::string("DeviceRun::upload: ") + what + " changed size since allocate()"};
      }
      return bytes == 0 ? Status{} : b.upload(host, bytes);
    };
    const bool precomputed = p.config.routing.kind == RoutingKind::precomputed;
    FUSEDMOE_RETURN_IF_ERROR(put(x_, p.x_buffer.cref().data, p.x_buffer.size_bytes(), "x"));
    if (precomputed) {
      FUSEDMOE_RETURN_IF_ERROR(put(ids_, p.ids.cref().data, p.ids.size_bytes(), "topk_ids"));
      FUSEDMOE_RETURN_IF_ERROR(
          put(weights_, p.topk_weights.cref().data, p.topk_weights.size_bytes(), "topk_weights"));
    }
    FUSEDMOE_RETURN_IF_ERROR(put(out_, r.out.storage().data(), r.out.storage().size(), "out"));
    FUSEDMOE_RETURN_IF_ERROR(
        put(ids_out_, r.ids_out.storage().data(), r.ids_out.storage().size(), "ids_out"));
    FUSEDMOE_RETURN_IF_ERROR(put(weights_out_, r.weights_out.storage().data(),
                                 r.weights_out.storage().size(), "weights_out"));
    return workspace_.bytes() == 0 ? Status{} : workspace_.fill(0xff);
  }

  // forward's arguments over the device copies, on `stream` (a cudaStream_t).
  ForwardArgs args(void* stream) const {
    ForwardArgs a = args_;
    a.stream = stream;
    return a;
  }

  // Copies the device's out, ids_out and weights_out (guards included) into r.
  Status download(RunResult& r) const {
    const auto get = [](const device::Buffer& b, std::span<std::byte> host) -> Status {
      if (host.size() != b.bytes()) {
        return {StatusCode::invalid_argument, "DeviceRun::download: an output changed size"};
      }
      return host.empty() ? Status{} : b.download(host.data(), host.size());
    };
    FUSEDMOE_RETURN_IF_ERROR(get(out_, r.out.storage()));
    FUSEDMOE_RETURN_IF_ERROR(get(ids_out_, r.ids_out.storage()));
    return get(weights_out_, r.weights_out.storage());
  }

 private:
  device::Buffer x_, ids_, weights_, out_, ids_out_, weights_out_, workspace_;
  ForwardArgs args_;
};

// One forward (or `repeats`, on the same buffers) of a CUDA layer on a stream of its own, then
// the outputs back in r. A failed forward's status wins; the outputs are downloaded either way,
// so that a test can see they were left untouched.
inline Status run_on_device(const Layer& layer, const Problem& p, RunResult& r, int repeats) {
  Result<DeviceRun> run = DeviceRun::allocate(layer, p, r);
  if (!run.ok()) return run.status();
  Result<device::Stream> stream = device::Stream::create();
  if (!stream.ok()) return stream.status();
  FUSEDMOE_RETURN_IF_ERROR(run->upload(p, r));
  Status status;
  for (int i = 0; i < repeats && status.ok(); ++i) {
    status = layer.forward(run->args(stream->handle()));
  }
  FUSEDMOE_RETURN_IF_ERROR(stream->synchronize());
  FUSEDMOE_RETURN_IF_ERROR(run->download(r));
  return status;
}

// Runs `layer` on the problem's x (and ids) into poisoned_outputs(p, out_dtype), with a workspace
// of exactly workspace_size(T) bytes, on the host or, for a CUDA layer, through DeviceRun.
// `repeats` > 1 runs forward that many times on the same buffers before the invalid-id count is
// taken (it accumulates).
inline RunResult run_layer(const Layer& layer, const Problem& p, DType out_dtype, int repeats = 1) {
  RunResult r = poisoned_outputs(p, out_dtype);
  if (layer.backend() == Backend::cuda) {
    r.status = run_on_device(layer, p, r, repeats);
    r.invalid_ids = layer.take_invalid_id_count();
    return r;
  }
  const std::int64_t t = p.tokens, k = p.config.top_k;
  std::vector<std::byte> workspace(layer.workspace_size(t));
  ForwardArgs a;
  a.x = p.x;
  a.out = r.out.ref();
  a.workspace = {workspace.data(), workspace.size()};
  if (p.config.routing.kind == RoutingKind::precomputed) {
    a.topk_ids = make_tensor(p.ids.cref().data, DType::i32, {t, k});
    a.topk_weights = make_tensor(p.topk_weights.cref().data, DType::f32, {t, k});
  }
  a.ids_out = r.ids_out.ref();
  a.weights_out = r.weights_out.ref();
  if (layer.backend() == Backend::reference) {
    r.magnitude = GuardedOutput(DType::f32, t, p.config.hidden);
    a.magnitude_out = r.magnitude.ref();
  }
  for (int i = 0; i < repeats && r.status.ok(); ++i) r.status = layer.forward(a);
  r.invalid_ids = layer.take_invalid_id_count();
  return r;
}

// Packs the problem's weights for `backend` and runs it. The reference writes f32 (its fp64
// result rounded once); other backends write the layer dtype.
inline RunResult run_backend(const Problem& p, Backend backend) {
  Result<Layer> layer = make_layer(p.config, p.weights().view(), backend);
  if (!layer.ok()) {
    RunResult r;
    r.status = layer.status();
    return r;
  }
  return run_layer(layer.value(), p, backend == Backend::reference ? DType::f32 : p.config.dtype);
}

// ---- checking --------------------------------------------------------------------------------

// Scores by which the routing chooses (fp64, MODELS.md), and group scores for grouped routing.
struct SelectionScores {
  std::vector<double> expert;
  std::vector<double> group;  // empty unless n_group > 1
  // The expert scores again in fp32 arithmetic from fp32 logits, as a router computes them
  // (MODELS.md): a sigmoid of a logit above ~17 is exactly 1.0f there.
  std::vector<float> expert_f32;
};

inline SelectionScores selection_scores(const Problem& p, std::int64_t t) {
  const LayerConfig& c = p.config;
  SelectionScores s;
  s.expert = p.logits(t);
  s.expert_f32.assign(s.expert.begin(), s.expert.end());
  if (c.routing.kind == RoutingKind::sigmoid_topk) {
    for (std::int64_t e = 0; e < c.experts; ++e) {
      double& v = s.expert[static_cast<std::size_t>(e)];
      float& f = s.expert_f32[static_cast<std::size_t>(e)];
      v = 1.0 / (1.0 + std::exp(-v));
      f = 1.0f / (1.0f + std::exp(-f));
      if (c.routing.correction_bias) {
        const float bias = core::load_f32(DType::f32, p.weights().correction_bias.cref().data, e);
        v += bias;
        f += bias;
      }
    }
    if (c.routing.n_group > 1) {
      const std::int64_t size = c.experts / c.routing.n_group;
      for (int g = 0; g < c.routing.n_group; ++g) {
        std::vector<double> v(s.expert.begin() + g * size, s.expert.begin() + (g + 1) * size);
        std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<>());
        s.group.push_back(v[0] + v[1]);
      }
    }
  }
  return s;
}

inline bool nearly_equal(double a, double b, double rel = 1e-5) {
  return std::abs(a - b) <= rel * std::max({1.0, std::abs(a), std::abs(b)});
}

// Whether two backends choosing `got` instead of the reference's `ref` for token t is a
// near-tie: every expert in one set and not the other scores within ~1e-5 of the reference's
// boundary (its lowest chosen score), or, for grouped routing, the boundary between the kept and
// the dropped groups ties. `*f32_tie` (when given) says whether the swap is an exact tie in fp32
// broken by the routing rules: those experts' scores computed in fp32 (SelectionScores::
// expert_f32, the router's arithmetic) equal the boundary expert's (a sigmoid saturated to 1.0f,
// for one), and every expert only `got` has a lower index than every expert only `ref` has
// (the lower index wins a tie).
inline bool is_near_tie(const Problem& p, std::int64_t t, const std::vector<std::int32_t>& ref,
                        const std::vector<std::int32_t>& got, bool* f32_tie = nullptr) {
  const SelectionScores s = selection_scores(p, t);
  // expert e's entry of `scores` (s.expert or s.expert_f32), NaN for an id out of range
  const auto of = [&](const auto& scores, std::int32_t e) {
    using T = typename std::decay_t<decltype(scores)>::value_type;
    return e >= 0 && e < p.config.experts ? scores[static_cast<std::size_t>(e)]
                                          : std::numeric_limits<T>::quiet_NaN();
  };
  const auto score = [&](std::int32_t e) { return of(s.expert, e); };
  const auto score_f32 = [&](std::int32_t e) { return of(s.expert_f32, e); };
  double boundary = std::numeric_limits<double>::infinity();
  float boundary_f32 = std::numeric_limits<float>::quiet_NaN();
  for (std::int32_t e : ref) {
    if (score(e) < boundary) {
      boundary = score(e);
      boundary_f32 = score_f32(e);
    }
  }
  bool expert_tie = true, exact = true;
  std::int32_t lowest_ref_only = std::numeric_limits<std::int32_t>::max();
  std::int32_t highest_got_only = std::numeric_limits<std::int32_t>::min();
  for (const auto* side : {&ref, &got}) {
    const auto* other = side == &ref ? &got : &ref;
    for (std::int32_t e : *side) {
      if (std::find(other->begin(), other->end(), e) != other->end()) continue;
      expert_tie = expert_tie && nearly_equal(score(e), boundary);
      exact = exact && score_f32(e) == boundary_f32;
      if (side == &ref) {
        lowest_ref_only = std::min(lowest_ref_only, e);
      } else {
        highest_got_only = std::max(highest_got_only, e);
      }
    }
  }
  if (f32_tie != nullptr) *f32_tie = expert_tie && exact && highest_got_only < lowest_ref_only;
  if (expert_tie) return true;
  if (s.group.empty()) return false;
  // the kept groups of the reference are those of its chosen experts plus, possibly, others
  // tied with them; a group tie shows as the weakest kept and the strongest dropped group tying.
  std::vector<double> sorted = s.group;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const auto kept = static_cast<std::size_t>(p.config.routing.topk_group);
  return kept < sorted.size() && nearly_equal(sorted[kept - 1], sorted[kept]);
}

struct Verdict {
  std::int64_t excluded_tokens = 0;  // near-ties left out of the output comparison
  std::int64_t f32_tied_tokens = 0;  // of those, the ties that are exact in fp32 scores
  Comparison comparison;
  // The global error of a perfect backend: the reference rounded to nearest in the output dtype,
  // see rounding_floor().
  double rounding_floor = 0;
};

// ||round(ref) - ref|| / ||ref|| over the finite, compared elements of an f32 reference output,
// where round() stores to `dtype` (round to nearest even, subnormals kept): the part of the
// global error the output format alone makes. While the values lie in the format's normal range
// it is at most the unit roundoff: 2^-11 = 4.9e-4 for f16 (a quarter of its 2e-3 bound), 2^-8 =
// 3.9e-3 for bf16 (0.39 of 1e-2), 0 for f32 (the reference writes f32). Below f16's smallest
// normal (6.1e-5) values are stored with a fixed spacing of 2^-24 (6e-8), so at an output RMS of
// 2e-6 this floor alone is 7e-3: no backend can meet the bound, and such a case says nothing
// about the backend.
inline double rounding_floor(const GuardedOutput& ref, DType dtype,
                             const std::uint8_t* skip_rows = nullptr) {
  double err2 = 0, ref2 = 0;
  for (std::int64_t r = 0; r < ref.rows(); ++r) {
    if (skip_rows != nullptr && skip_rows[r] != 0) continue;
    for (std::int64_t c = 0; c < ref.cols(); ++c) {
      const float f = ref.at(r, c);
      if (!std::isfinite(f)) continue;
      alignas(4) std::byte stored[4];
      core::store_f32(dtype, stored, 0, f);
      const double d = double{core::load_f32(dtype, stored, 0)} - double{f};
      err2 += d * d;
      ref2 += double{f} * f;
    }
  }
  return ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0;
}

// The first few elements outside element_atol + rtol·|ref| (the bound compare() applied; elements
// whose reference is not finite are left out), with the token's routing as the backend chose it
// and the element's term magnitude: what a failure report needs to tell a wrong row from a wrong
// element, and a wrong element from one that cancels.
inline std::string out_of_tolerance(const RunResult& ref, const RunResult& got,
                                    const Comparison& cmp, const Tolerance& tol,
                                    const std::vector<std::uint8_t>& skip, int most = 8) {
  const bool has_magnitude = ref.has_magnitude();
  std::ostringstream s;
  int listed = 0;
  std::int64_t last_row = -1;
  for (std::int64_t r = 0; r < ref.out.rows() && listed < most; ++r) {
    if (skip[static_cast<std::size_t>(r)] != 0) continue;
    for (std::int64_t c = 0; c < ref.out.cols() && listed < most; ++c) {
      const double want = ref.out.at(r, c), have = got.out.at(r, c);
      const double magnitude = has_magnitude ? ref.magnitude.at(r, c) : 0.0;
      const double atol = element_atol(cmp.atol, tol, magnitude);
      if (!std::isfinite(want) || std::abs(have - want) <= atol + tol.rtol * std::abs(want)) {
        continue;
      }
      if (r != last_row) {
        const std::int64_t k = static_cast<std::int64_t>(ref.ids_out.cols());
        s << "\n  token " << r << " (ids";
        for (std::int32_t e : got.ids(r, k)) s << ' ' << e;
        s << ", weights";
        for (float w : got.weights(r, k)) s << ' ' << w;
        s << "):";
        last_row = r;
      }
      s << " col " << c << " got " << have << " want " << want;
      if (has_magnitude) s << " (term magnitude " << magnitude << ")";
      s << ";";
      ++listed;
    }
  }
  return s.str();
}

// Whether CONTRACT.md's global bound can judge a backend on this reference output (f32, as the
// reference writes it) stored as `dtype`; if not, `why` says why. Two kinds of output cannot be
// judged by a relative global error:
// - outputs the format cannot hold to the bound: the reference rounded to `dtype` already takes
//   more than half of it (test::rounding_floor: outputs below f16's normal range);
// - outputs that are zero to within CONTRACT's per-element atol (RMS below 1e-5): there the
//   relative error measures only how a backend's fp32 arithmetic underflows (a gpt-oss gate of
//   -90 has sigmoid e^-153 in fp64 and 0 in fp32), not the layer's result.
// The per-element bounds still apply to such a case.
inline bool global_bound_applies(const GuardedOutput& ref, DType dtype,
                                 std::string* why = nullptr) {
  const Tolerance tol = tolerance_for(dtype);
  const double floor = rounding_floor(ref, dtype);
  double sum2 = 0;
  std::int64_t n = 0;
  for (std::int64_t r = 0; r < ref.rows(); ++r) {
    for (std::int64_t c = 0; c < ref.cols(); ++c) {
      const double f = ref.at(r, c);
      if (std::isfinite(f)) {
        sum2 += f * f;
        ++n;
      }
    }
  }
  const double rms = n > 0 ? std::sqrt(sum2 / static_cast<double>(n)) : 0.0;
  std::ostringstream s;
  if (floor > tol.global / 2) {
    s << "the reference rounded to " << to_string(dtype) << " scores global rel " << floor;
  } else if (n > 0 && rms < 1e-5) {
    s << "the reference's RMS is " << rms << ", zero to within the per-element atol";
  }
  if (why != nullptr) *why = s.str();
  return s.str().empty();
}

struct CheckOptions {
  // Allow near-tie exclusions (never with integer data: fp32 scores are exact there).
  bool allow_near_ties = true;
  // false: only the per-element bounds judge the output (see global_bound_applies).
  bool global_bound = true;
  // Expected count of invalid precomputed ids (-1: the problem's own count).
  std::int64_t expected_invalid_ids = -1;
};

// Checks a backend's run against the reference's for the same problem: statuses ok, no poison
// left, guards intact, routing ids equal as sets per token (near-ties excepted and counted),
// routing weights close, invalid-id counts exact, and the output within tolerance_for(dtype).
inline Verdict check_against(const Problem& p, const RunResult& ref, const RunResult& got,
                             CheckOptions opts = {}) {
  Verdict v;
  const LayerConfig& c = p.config;
  const std::int64_t t_count = p.tokens, k = c.top_k;
  EXPECT_TRUE(ref.status.ok()) << "reference: " << ref.status.to_string();
  EXPECT_TRUE(got.status.ok()) << "backend: " << got.status.to_string();
  if (!ref.status.ok() || !got.status.ok()) return v;
  EXPECT_TRUE(ref.out.guard_intact()) << "reference wrote outside out";
  EXPECT_TRUE(got.out.guard_intact()) << "backend wrote outside out (row padding or past the end)";
  EXPECT_TRUE(got.ids_out.guard_intact() && got.weights_out.guard_intact())
      << "backend wrote outside ids_out/weights_out";
  EXPECT_EQ(count_poison(ref.out.cref()), 0) << "reference left out elements unwritten";
  EXPECT_EQ(count_poison(got.out.cref()), 0) << "backend left out elements unwritten";
  EXPECT_EQ(count_poison(got.weights_out.cref()), 0) << "backend left weights_out unwritten";

  const std::int64_t want_invalid =
      opts.expected_invalid_ids >= 0 ? opts.expected_invalid_ids : p.invalid_id_count();
  EXPECT_EQ(ref.invalid_ids, want_invalid) << "reference's invalid id count";
  EXPECT_EQ(got.invalid_ids, want_invalid) << "backend's invalid id count";

  const bool integer = p.options.fill == Fill::integer;
  std::vector<std::uint8_t> skip(static_cast<std::size_t>(t_count), 0);
  int reported = 0;
  for (std::int64_t t = 0; t < t_count; ++t) {
    std::vector<std::int32_t> ri = ref.ids(t, k), gi = got.ids(t, k);
    const std::vector<float> rw = ref.weights(t, k), gw = got.weights(t, k);
    // pair up (id, weight) and sort by id: the order inside a token is free
    std::vector<std::pair<std::int32_t, float>> rp, gp;
    for (std::int64_t j = 0; j < k; ++j) {
      rp.emplace_back(ri[static_cast<std::size_t>(j)], rw[static_cast<std::size_t>(j)]);
      gp.emplace_back(gi[static_cast<std::size_t>(j)], gw[static_cast<std::size_t>(j)]);
    }
    std::sort(rp.begin(), rp.end());
    std::sort(gp.begin(), gp.end());
    bool same_ids = true;
    for (std::size_t j = 0; j < rp.size(); ++j) same_ids = same_ids && rp[j].first == gp[j].first;
    if (!same_ids) {
      bool f32_tie = false;
      const bool tie =
          c.routing.kind != RoutingKind::precomputed && is_near_tie(p, t, ri, gi, &f32_tie);
      if (tie && opts.allow_near_ties && !integer) {
        skip[static_cast<std::size_t>(t)] = 1;
        ++v.excluded_tokens;
        if (f32_tie) ++v.f32_tied_tokens;
        continue;
      }
      if (reported++ < 5) {
        std::ostringstream s;
        for (std::size_t j = 0; j < rp.size(); ++j) {
          s << " (" << rp[j].first << " vs " << gp[j].first << ")";
        }
        ADD_FAILURE() << "token " << t
                      << ": ids differ from the reference (ref vs backend):" << s.str()
                      << (tie ? " [a near-tie, but none is allowed here]" : "");
      }
      continue;
    }
    for (std::size_t j = 0; j < rp.size(); ++j) {
      const double want = rp[j].second, have = gp[j].second;
      const bool ok = (std::isnan(want) && std::isnan(have)) ||
                      std::abs(have - want) <= 1e-5 + 1e-4 * std::abs(want);
      if (!ok && reported++ < 5) {
        ADD_FAILURE() << "token " << t << " expert " << rp[j].first << ": routing weight " << have
                      << ", reference " << want;
      }
    }
  }
  // A handful of near-ties is chance; many would mean a broken router. Ties exact in fp32 are
  // not chance but the router's arithmetic (saturated sigmoids), and are not limited.
  EXPECT_LE(v.excluded_tokens - v.f32_tied_tokens, std::max<std::int64_t>(2, t_count / 50))
      << "too many near-tie exclusions (" << v.f32_tied_tokens << " more tie exactly in fp32)";
  if (v.excluded_tokens > 0) {
    std::printf("[ note ] %lld near-tie token(s) excluded, %lld of them exact in fp32 (%s)\n",
                static_cast<long long>(v.excluded_tokens),
                static_cast<long long>(v.f32_tied_tokens), p.describe().c_str());
  }
  // compare() scales atol by each element's term magnitude (CONTRACT.md's atol is for O(1) data;
  // an element that cancels to ~0 keeps the rounding error of the terms it came from).
  const Tolerance tol = tolerance_for(c.dtype);
  const bool has_magnitude = ref.has_magnitude();
  EXPECT_TRUE(!has_magnitude || ref.magnitude.guard_intact())
      << "reference wrote outside magnitude_out";
  EXPECT_TRUE(!has_magnitude || count_poison(ref.magnitude.cref()) == 0)
      << "reference left magnitude_out elements unwritten";
  Result<Comparison> cmp = compare(got.out.cref(), ref.out.cref(), tol, skip.data(),
                                   has_magnitude ? ref.magnitude.cref() : ConstTensorRef{});
  EXPECT_TRUE(cmp.ok()) << cmp.status().to_string();
  if (cmp.ok()) {
    v.comparison = cmp.value();
    v.rounding_floor = rounding_floor(ref.out, got.out.dtype(), skip.data());
    EXPECT_TRUE(opts.global_bound ? v.comparison.passed
                                  : v.comparison.failures == 0 && v.comparison.non_finite == 0)
        << v.comparison.summary() << " worst at flat index " << v.comparison.worst_index
        << "; the reference rounded to " << to_string(got.out.dtype()) << " scores global rel "
        << v.rounding_floor << " (see rounding_floor)"
        << out_of_tolerance(ref, got, v.comparison, tol, skip);
  }
  return v;
}

// The whole check: the reference and `backend` on the same problem.
inline Verdict expect_matches_reference(const Problem& p, Backend backend = Backend::cpu,
                                        CheckOptions opts = {}) {
  SCOPED_TRACE(p.describe());
  const RunResult ref = run_backend(p, Backend::reference);
  const RunResult got = run_backend(p, backend);
  return check_against(p, ref, got, opts);
}

// Token t's ids are in [0, E) and distinct (NaN scores included: CONTRACT.md).
inline void expect_valid_ids(const RunResult& r, std::int64_t t, const LayerConfig& c) {
  std::set<std::int32_t> seen;
  for (std::int32_t id : r.ids(t, c.top_k)) {
    EXPECT_GE(id, 0) << "token " << t;
    EXPECT_LT(id, c.experts) << "token " << t;
    EXPECT_TRUE(seen.insert(id).second) << "token " << t << ": expert " << id << " twice";
  }
}

// Bytes of the output elements (no padding), for bit-identity checks.
inline std::vector<std::byte> output_bytes(const RunResult& r) { return r.out.element_bytes(); }

}  // namespace fusedmoe::test
