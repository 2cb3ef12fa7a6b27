// libFuzzer harness: Layer::forward's argument checking, through the C++ API and the C ABI, on a
// few tiny layers (every routing kind, a shared expert, expert biases; the reference and the fast
// CPU backend). The input chooses a layer and a descriptor for each of x, out, topk_ids,
// topk_weights, ids_out, weights_out and the workspace, each near what forward expects and
// backed by a real buffer (fuzz_tensor.hpp). Properties besides "no crash, no out-of-bounds":
// a failed call leaves every caller buffer as it was, and an argument set forward accepts runs.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "fusedmoe/fusedmoe.h"
#include "fusedmoe/layer.hpp"
#include "fusedmoe/workload.hpp"
#include "fuzz_tensor.hpp"

namespace fusedmoe::fuzz {
namespace {

LayerConfig tiny(RoutingKind kind, DType dtype) {
  LayerConfig c;
  c.hidden = 8;
  c.intermediate = 5;
  c.experts = 8;
  c.top_k = 3;
  c.dtype = dtype;
  c.routing.kind = kind;
  switch (kind) {
    case RoutingKind::sigmoid_topk:
      c.routing = {RoutingKind::sigmoid_topk, true, 4, 2, 2.5f, false, true};
      c.shared = {6, false};
      break;
    case RoutingKind::topk_softmax:
      c.routing.renormalize = false;
      c.routing.router_bias = true;
      c.activation = Activation::swiglu_oss;
      c.expert_bias = true;
      break;
    case RoutingKind::softmax_topk:
      c.shared = {4, true};
      c.activation = Activation::geglu;
      break;
    default:
      break;
  }
  return c;
}

struct TinyLayer {
  Layer layer;
  fusedmoe_layer* c_layer = nullptr;  // the same layer through the C ABI
  TinyLayer(Layer l) : layer(std::move(l)) {}
  TinyLayer(const TinyLayer&) = delete;
  TinyLayer& operator=(const TinyLayer&) = delete;
  ~TinyLayer() { fusedmoe_layer_destroy(c_layer); }
};

constexpr std::array<RoutingKind, 4> kKinds = {RoutingKind::softmax_topk, RoutingKind::sigmoid_topk,
                                               RoutingKind::topk_softmax, RoutingKind::precomputed};
constexpr std::array<DType, 3> kDtypes = {DType::bf16, DType::f32, DType::f16};
constexpr std::array<Backend, 2> kBackends = {Backend::cpu, Backend::reference};

fusedmoe_tensor c_of(const ConstTensorRef& t) { return to_c(t); }

// Built once per process: (kind, dtype, backend).
TinyLayer& layer_for(std::size_t kind, std::size_t dtype, std::size_t backend) {
  static std::array<std::unique_ptr<TinyLayer>, kKinds.size() * kDtypes.size() * kBackends.size()>
      layers;
  auto& slot = layers[(kind * kDtypes.size() + dtype) * kBackends.size() + backend];
  if (slot != nullptr) return *slot;
  const LayerConfig c = tiny(kKinds[kind], kDtypes[dtype]);
  WorkloadOptions o;
  o.seed = 7 + kind;
  static std::vector<HostWeights> keep;  // the C ABI layer is created from these too
  keep.reserve(kKinds.size() * kDtypes.size() * kBackends.size());
  keep.push_back(HostWeights::random(c, o));
  const WeightSet w = keep.back().view();
  Result<PackedWeights> packed = pack_weights(c, w, kBackends[backend]);
  FUSEDMOE_FUZZ_REQUIRE(packed.ok());
  Result<Layer> layer = Layer::create(c, std::move(packed).value());
  FUSEDMOE_FUZZ_REQUIRE(layer.ok());
  slot = std::make_unique<TinyLayer>(std::move(layer).value());

  const fusedmoe_layer_config cc = to_c(c);
  fusedmoe_weights cw;
  fusedmoe_weights_init(&cw);
  cw.layout = static_cast<std::int32_t>(w.experts.layout);
  cw.router = c_of(w.router.weight);
  cw.router_bias = c_of(w.router.bias);
  cw.correction_bias = c_of(w.router.correction_bias);
  cw.gate_up = c_of(w.experts.gate_up);
  cw.down = c_of(w.experts.down);
  cw.gate_up_bias = c_of(w.experts.gate_up_bias);
  cw.down_bias = c_of(w.experts.down_bias);
  cw.shared_gate = c_of(w.shared.gate);
  cw.shared_up = c_of(w.shared.up);
  cw.shared_down = c_of(w.shared.down);
  cw.shared_gate_weight = c_of(w.shared.gate_weight);
  const fusedmoe_status created = fusedmoe_layer_create(
      &cc, &cw, static_cast<fusedmoe_backend>(kBackends[backend]), &slot->c_layer);
  FUSEDMOE_FUZZ_REQUIRE(created == FUSEDMOE_OK);
  return *slot;
}

// The workspace: exactly what forward needs, one byte less, none, or any size up to the cap;
// always a real buffer of the size it claims.
struct FuzzWorkspace {
  std::vector<std::byte> storage;
  Workspace ws;
};

FuzzWorkspace workspace(FuzzedDataProvider& in, std::size_t need) {
  FuzzWorkspace f;
  std::size_t bytes = 0;
  switch (in.ConsumeIntegralInRange(0, 3)) {
    case 0:
      bytes = need;
      break;
    case 1:
      bytes = need > 0 ? need - 1 : 0;
      break;
    case 2:
      bytes = 0;
      break;
    default:
      bytes = in.ConsumeIntegralInRange<std::size_t>(0, kMaxBufferBytes);
      break;
  }
  bytes = std::min(bytes, kMaxBufferBytes);
  const std::size_t misalign = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange(0, 15);
  if (bytes == 0 && in.ConsumeBool()) return f;  // null data, zero bytes
  f.storage.resize(bytes + misalign + 16);
  // operator new aligns to 16; the offset makes the workspace misaligned on purpose
  f.ws = {f.storage.data() + misalign, bytes};
  return f;
}

}  // namespace
}  // namespace fusedmoe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fusedmoe;
  using namespace fusedmoe::fuzz;
  FuzzedDataProvider in(data, size);
  const std::size_t kind = in.ConsumeIntegralInRange<std::size_t>(0, kKinds.size() - 1);
  const std::size_t dtype = in.ConsumeIntegralInRange<std::size_t>(0, kDtypes.size() - 1);
  const std::size_t backend = in.ConsumeIntegralInRange<std::size_t>(0, kBackends.size() - 1);
  const bool through_c = in.ConsumeBool();
  TinyLayer& tl = layer_for(kind, dtype, backend);
  const LayerConfig& c = tl.layer.config();
  const std::int64_t t = in.ConsumeIntegralInRange<std::int64_t>(0, 9);
  const std::int64_t h = c.hidden, k = c.top_k;
  const DType out_dtype =
      kBackends[backend] == Backend::reference && in.ConsumeBool() ? DType::f32 : c.dtype;
  const ConstTensorRef none;
  const bool precomputed = c.routing.kind == RoutingKind::precomputed;

  FuzzTensor x = mutate(in, make_tensor(none.data, c.dtype, {t, h}));
  FuzzTensor out = mutate(in, make_tensor(none.data, out_dtype, {t, h}));
  FuzzTensor ids, weights;
  if (precomputed || in.ConsumeIntegralInRange(0, 7) == 0) {
    ids = mutate(in, make_tensor(none.data, DType::i32, {t, k}));
    weights = mutate(in, make_tensor(none.data, DType::f32, {t, k}));
  }
  FuzzTensor ids_out, weights_out;
  if (in.ConsumeBool()) ids_out = mutate(in, make_tensor(none.data, DType::i32, {t, k}));
  if (in.ConsumeBool()) weights_out = mutate(in, make_tensor(none.data, DType::f32, {t, k}));
  const std::int64_t rows = x.ref.rank == 2 ? x.ref.size(0) : 0;
  FuzzWorkspace ws = workspace(in, tl.layer.workspace_size(rows));

  const std::array<const FuzzTensor*, 6> all = {&x, &out, &ids, &weights, &ids_out, &weights_out};
  std::array<std::vector<std::byte>, 6> before;
  for (std::size_t i = 0; i < all.size(); ++i) before[i] = all[i]->snapshot();

  Status s;
  if (through_c) {
    fusedmoe_forward_args a;
    fusedmoe_forward_args_init(&a);
    a.x = to_c(x.ref);
    a.out = to_c(out.ref);
    a.topk_ids = to_c(ids.ref);
    a.topk_weights = to_c(weights.ref);
    a.ids_out = to_c(ids_out.ref);
    a.weights_out = to_c(weights_out.ref);
    for (fusedmoe_tensor* ct : {&a.x, &a.out, &a.topk_ids, &a.ids_out}) corrupt_c(in, *ct);
    a.workspace = ws.ws.data;
    a.workspace_bytes = ws.ws.bytes;
    if (in.ConsumeBool()) {
      // a size no header had (ABI version 1 is the first) would cut a field in two: refused;
      // a newer caller's larger struct is read up to this library's fields
      a.struct_size = in.ConsumeIntegralInRange<std::uint32_t>(0, sizeof(a) + 8);
    }
    const fusedmoe_status code = fusedmoe_layer_forward(tl.c_layer, &a);
    FUSEDMOE_FUZZ_REQUIRE(a.struct_size >= sizeof(a) || code == FUSEDMOE_INVALID_ARGUMENT);
    s = code == FUSEDMOE_OK ? Status{}
                            : Status{static_cast<StatusCode>(code), fusedmoe_last_error()};
    FUSEDMOE_FUZZ_REQUIRE(s.ok() || !s.message().empty());
  } else {
    ForwardArgs a;
    a.x = x.ref;
    a.out = out.ref;
    a.topk_ids = ids.ref;
    a.topk_weights = weights.ref;
    a.ids_out = ids_out.ref;
    a.weights_out = weights_out.ref;
    a.workspace = ws.ws;
    s = tl.layer.forward(a);
    FUSEDMOE_FUZZ_REQUIRE(s.ok() || !s.message().empty());
  }
  // Nothing the caller owns changes on a failed call; inputs never change.
  for (std::size_t i = 0; i < all.size(); ++i) {
    const bool output = i == 1 || i >= 4;
    FUSEDMOE_FUZZ_REQUIRE((s.ok() && output) || all[i]->storage == before[i]);
  }
  tl.layer.take_invalid_id_count();
  fusedmoe_layer_take_invalid_id_count(tl.c_layer);
  return 0;
}
