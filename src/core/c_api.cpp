// The C ABI (fusedmoe.h) over the C++ API. Every entry point catches everything: nothing may
// unwind into C.
#include "fusedmoe/fusedmoe.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "fusedmoe/layer.hpp"
#include "fusedmoe/presets.hpp"

namespace {

using namespace fusedmoe;

thread_local std::string g_last_error;

// Records the message; when even that cannot be allocated, a short one that needs no memory
// (it fits the string's own buffer). Nothing may throw out of a C entry point.
void set_last_error(const Status& s) noexcept {
  try {
    g_last_error = s.to_string();
  } catch (...) {
    g_last_error.clear();
    g_last_error = "out of memory";
  }
}

fusedmoe_status fail(const Status& s) noexcept {
  set_last_error(s);
  return static_cast<fusedmoe_status>(s.code());
}

fusedmoe_status fail_out_of_memory() noexcept {
  g_last_error.clear();
  g_last_error = "out of memory";
  return FUSEDMOE_OUT_OF_MEMORY;
}

fusedmoe_status fail(StatusCode code, const char* message) noexcept {
  try {
    return fail(Status{code, message});
  } catch (...) {
    return fail_out_of_memory();
  }
}

template <class Fn>
fusedmoe_status guarded(Fn fn) {
  try {
    const Status s = fn();
    if (!s.ok()) return fail(s);
    return FUSEDMOE_OK;
  } catch (const std::bad_alloc&) {
    return fail_out_of_memory();
  } catch (const std::exception& e) {
    return fail(StatusCode::invalid_argument, e.what());
  } catch (...) {
    return fail(StatusCode::invalid_argument, "unknown error");
  }
}

// The sizes of a struct in the headers before this one. A struct grows only at its end, so such a
// size covers whole fields; when a field is appended, a specialization here lists the struct's
// old sizeof. ABI version 1 is the first: no struct has an older revision yet.
template <class T>
inline constexpr std::span<const std::size_t> kOlderSizes{};

// Reads a caller's struct of any ABI revision: fields its revision does not have keep their
// defaults, fields of a newer revision than this library's are not read. A size that is no
// revision's would cut a field (a pointer or a tensor's strides) in two: it is refused.
template <class T>
Status read_versioned(const T* in, T& out, const char* name) {
  if (in == nullptr) return {StatusCode::null_pointer, std::string(name) + " is null"};
  const std::size_t size = in->struct_size;
  if (size < sizeof(T) && std::ranges::find(kOlderSizes<T>, size) == kOlderSizes<T>.end()) {
    return {StatusCode::invalid_argument, std::string(name) + "->struct_size is " +
                                              std::to_string(size) +
                                              ", the size of no revision of it: set it to sizeof(" +
                                              name + ") (the *_init functions do)"};
  }
  std::memcpy(&out, in, std::min(size, sizeof(T)));
  return {};
}

Status to_cpp(const fusedmoe_tensor& t, const char* name, ConstTensorRef& out) {
  out = {};
  if (t.data == nullptr && t.rank == 0) return {};
  if (t.rank < 0 || t.rank > kMaxRank) {
    return {StatusCode::invalid_shape,
            std::string(name) + ".rank must be in [0, 4], got " + std::to_string(t.rank)};
  }
  if (t.dtype < FUSEDMOE_F32 || t.dtype > FUSEDMOE_I32) {
    return {StatusCode::invalid_dtype, std::string(name) + ".dtype is not a fusedmoe_dtype"};
  }
  if (t.device_kind != FUSEDMOE_DEVICE_CPU && t.device_kind != FUSEDMOE_DEVICE_CUDA) {
    return {StatusCode::invalid_argument,
            std::string(name) + ".device_kind is not a fusedmoe_device_kind"};
  }
  out.data = t.data;
  out.dtype = static_cast<DType>(t.dtype);
  out.device = {static_cast<DeviceKind>(t.device_kind), t.device_index};
  out.rank = t.rank;
  for (int d = 0; d < t.rank; ++d) {
    out.shape[static_cast<std::size_t>(d)] = t.shape[d];
    out.strides[static_cast<std::size_t>(d)] = t.strides[d];
  }
  return {};
}

Status to_cpp(const fusedmoe_tensor& t, const char* name, TensorRef& out) {
  ConstTensorRef c;
  Status s = to_cpp(t, name, c);
  out = {const_cast<void*>(c.data), c.dtype, c.device, c.rank, c.shape, c.strides};
  return s;
}

Status to_cpp(const fusedmoe_layer_config& c, LayerConfig& out) {
  if (c.routing_kind < FUSEDMOE_ROUTING_SOFTMAX_TOPK ||
      c.routing_kind > FUSEDMOE_ROUTING_PRECOMPUTED) {
    return {StatusCode::invalid_argument, "config.routing_kind is not a fusedmoe_routing_kind"};
  }
  if (c.activation < FUSEDMOE_ACTIVATION_SWIGLU || c.activation > FUSEDMOE_ACTIVATION_SWIGLU_OSS) {
    return {StatusCode::invalid_argument, "config.activation is not a fusedmoe_activation"};
  }
  if (c.dtype < FUSEDMOE_F32 || c.dtype > FUSEDMOE_I32) {
    return {StatusCode::invalid_dtype, "config.dtype is not a fusedmoe_dtype"};
  }
  out.hidden = c.hidden;
  out.intermediate = c.intermediate;
  out.experts = c.experts;
  out.top_k = c.top_k;
  out.routing = {static_cast<RoutingKind>(c.routing_kind),
                 c.renormalize != 0,
                 c.n_group,
                 c.topk_group,
                 c.scaling,
                 c.router_bias != 0,
                 c.correction_bias != 0};
  out.activation = static_cast<Activation>(c.activation);
  out.swiglu_limit = c.swiglu_limit;
  out.swiglu_alpha = c.swiglu_alpha;
  out.expert_bias = c.expert_bias != 0;
  out.shared = {c.shared_intermediate, c.shared_gated != 0};
  out.dtype = static_cast<DType>(c.dtype);
  return validate(out);
}

void from_cpp(const LayerConfig& c, fusedmoe_layer_config& out) {
  fusedmoe_layer_config_init(&out);
  out.hidden = c.hidden;
  out.intermediate = c.intermediate;
  out.experts = c.experts;
  out.top_k = c.top_k;
  out.routing_kind = static_cast<std::int32_t>(c.routing.kind);
  out.renormalize = c.routing.renormalize ? 1 : 0;
  out.n_group = c.routing.n_group;
  out.topk_group = c.routing.topk_group;
  out.scaling = c.routing.scaling;
  out.router_bias = c.routing.router_bias ? 1 : 0;
  out.correction_bias = c.routing.correction_bias ? 1 : 0;
  out.activation = static_cast<std::int32_t>(c.activation);
  out.swiglu_limit = c.swiglu_limit;
  out.swiglu_alpha = c.swiglu_alpha;
  out.expert_bias = c.expert_bias ? 1 : 0;
  out.shared_intermediate = c.shared.intermediate;
  out.shared_gated = c.shared.gated ? 1 : 0;
  out.dtype = static_cast<std::int32_t>(c.dtype);
}

}  // namespace

struct fusedmoe_layer {
  Layer layer;
};

extern "C" {

uint32_t fusedmoe_abi_version(void) { return FUSEDMOE_ABI_VERSION; }

const char* fusedmoe_status_string(fusedmoe_status status) {
  static thread_local std::string name;
  name = std::string(to_string(static_cast<StatusCode>(status)));
  return name.c_str();
}

const char* fusedmoe_last_error(void) { return g_last_error.c_str(); }

int fusedmoe_backend_available(fusedmoe_backend backend) {
  if (backend < FUSEDMOE_BACKEND_REFERENCE || backend > FUSEDMOE_BACKEND_CUDA) return 0;
  return backend_available(static_cast<Backend>(backend)) ? 1 : 0;
}

fusedmoe_tensor fusedmoe_cpu_tensor(void* data, fusedmoe_dtype dtype, int32_t rank,
                                    const int64_t* shape) {
  fusedmoe_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.device_kind = FUSEDMOE_DEVICE_CPU;
  t.rank = std::clamp(rank, 0, static_cast<int32_t>(kMaxRank));
  int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.shape[d] = shape != nullptr ? shape[d] : 0;
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

int32_t fusedmoe_preset_count(void) { return static_cast<int32_t>(presets().size()); }

const char* fusedmoe_preset_name(int32_t index) {
  if (index < 0 || index >= fusedmoe_preset_count()) return nullptr;
  // names are string literals: NUL-terminated
  return presets()[static_cast<std::size_t>(index)].name.data();
}

fusedmoe_status fusedmoe_preset_config(const char* name, fusedmoe_layer_config* config) {
  return guarded([&]() -> Status {
    if (name == nullptr || config == nullptr) {
      return {StatusCode::null_pointer, "name and config must not be null"};
    }
    const Preset* p = find_preset(name);
    if (p == nullptr) {
      return {StatusCode::invalid_argument, std::string("no preset named '") + name + "'"};
    }
    from_cpp(p->config, *config);
    return {};
  });
}

void fusedmoe_layer_config_init(fusedmoe_layer_config* config) {
  if (config == nullptr) return;
  *config = fusedmoe_layer_config{};
  config->struct_size = sizeof(fusedmoe_layer_config);
  const LayerConfig d;
  config->routing_kind = static_cast<std::int32_t>(d.routing.kind);
  config->renormalize = d.routing.renormalize ? 1 : 0;
  config->n_group = d.routing.n_group;
  config->topk_group = d.routing.topk_group;
  config->scaling = d.routing.scaling;
  config->activation = static_cast<std::int32_t>(d.activation);
  config->swiglu_limit = d.swiglu_limit;
  config->swiglu_alpha = d.swiglu_alpha;
  config->dtype = static_cast<std::int32_t>(d.dtype);
}

void fusedmoe_weights_init(fusedmoe_weights* weights) {
  if (weights == nullptr) return;
  *weights = fusedmoe_weights{};
  weights->struct_size = sizeof(fusedmoe_weights);
}

void fusedmoe_forward_args_init(fusedmoe_forward_args* args) {
  if (args == nullptr) return;
  *args = fusedmoe_forward_args{};
  args->struct_size = sizeof(fusedmoe_forward_args);
}

fusedmoe_status fusedmoe_layer_create(const fusedmoe_layer_config* config,
                                      const fusedmoe_weights* weights, fusedmoe_backend backend,
                                      fusedmoe_layer** layer) {
  return guarded([&]() -> Status {
    if (layer == nullptr) return {StatusCode::null_pointer, "layer (the output) is null"};
    *layer = nullptr;
    fusedmoe_layer_config c;
    fusedmoe_layer_config_init(&c);
    FUSEDMOE_RETURN_IF_ERROR(read_versioned(config, c, "fusedmoe_layer_config"));
    fusedmoe_weights w;
    fusedmoe_weights_init(&w);
    FUSEDMOE_RETURN_IF_ERROR(read_versioned(weights, w, "fusedmoe_weights"));
    if (backend < FUSEDMOE_BACKEND_REFERENCE || backend > FUSEDMOE_BACKEND_CUDA) {
      return {StatusCode::invalid_argument, "backend is not a fusedmoe_backend"};
    }
    if (w.layout < FUSEDMOE_LAYOUT_GATE_UP_ROWS || w.layout > FUSEDMOE_LAYOUT_SEPARATE) {
      return {StatusCode::invalid_argument, "weights.layout is not a fusedmoe_weight_layout"};
    }
    LayerConfig cfg;
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(c, cfg));
    WeightSet set;
    set.experts.layout = static_cast<WeightLayout>(w.layout);
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.router, "router", set.router.weight));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.router_bias, "router_bias", set.router.bias));
    FUSEDMOE_RETURN_IF_ERROR(
        to_cpp(w.correction_bias, "correction_bias", set.router.correction_bias));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.gate_up, "gate_up", set.experts.gate_up));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.down, "down", set.experts.down));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.gate_up_bias, "gate_up_bias", set.experts.gate_up_bias));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.down_bias, "down_bias", set.experts.down_bias));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.shared_gate, "shared_gate", set.shared.gate));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.shared_up, "shared_up", set.shared.up));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.shared_down, "shared_down", set.shared.down));
    FUSEDMOE_RETURN_IF_ERROR(
        to_cpp(w.shared_gate_weight, "shared_gate_weight", set.shared.gate_weight));
    std::vector<ConstTensorRef> w1, w3, w2;
    if (w.separate_count < 0 || w.separate_count > (1 << 16)) {
      return {StatusCode::invalid_argument, "weights.separate_count must be in [0, 65536]"};
    }
    if (w.separate_count > 0) {
      if (w.w1 == nullptr || w.w3 == nullptr || w.w2 == nullptr) {
        return {StatusCode::null_pointer,
                "weights.w1/w3/w2 must not be null when "
                "separate_count > 0"};
      }
      for (std::int64_t e = 0; e < w.separate_count; ++e) {
        w1.emplace_back();
        w3.emplace_back();
        w2.emplace_back();
        FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.w1[e], "w1", w1.back()));
        FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.w3[e], "w3", w3.back()));
        FUSEDMOE_RETURN_IF_ERROR(to_cpp(w.w2[e], "w2", w2.back()));
      }
    }
    set.experts.w1 = w1;
    set.experts.w3 = w3;
    set.experts.w2 = w2;
    auto packed = pack_weights(cfg, set, static_cast<Backend>(backend));
    if (!packed.ok()) return packed.status();
    auto created = Layer::create(cfg, std::move(packed).value());
    if (!created.ok()) return created.status();
    *layer = new fusedmoe_layer{std::move(created).value()};
    return {};
  });
}

void fusedmoe_layer_destroy(fusedmoe_layer* layer) { delete layer; }

size_t fusedmoe_layer_workspace_size(const fusedmoe_layer* layer, int64_t tokens) {
  return layer == nullptr ? 0 : layer->layer.workspace_size(tokens);
}

size_t fusedmoe_layer_describe(const fusedmoe_layer* layer, int64_t tokens, char* buffer,
                               size_t size) {
  const std::string text = layer == nullptr ? std::string{} : layer->layer.describe(tokens);
  if (buffer != nullptr && size > 0) {
    const std::size_t n = std::min(text.size(), size - 1);
    std::memcpy(buffer, text.data(), n);
    buffer[n] = '\0';
  }
  return text.size();
}

fusedmoe_status fusedmoe_layer_forward(const fusedmoe_layer* layer,
                                       const fusedmoe_forward_args* args) {
  return guarded([&]() -> Status {
    if (layer == nullptr) return {StatusCode::null_pointer, "layer is null"};
    fusedmoe_forward_args a;
    fusedmoe_forward_args_init(&a);
    FUSEDMOE_RETURN_IF_ERROR(read_versioned(args, a, "fusedmoe_forward_args"));
    ForwardArgs f;
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(a.x, "x", f.x));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(a.out, "out", f.out));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(a.topk_ids, "topk_ids", f.topk_ids));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(a.topk_weights, "topk_weights", f.topk_weights));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(a.ids_out, "ids_out", f.ids_out));
    FUSEDMOE_RETURN_IF_ERROR(to_cpp(a.weights_out, "weights_out", f.weights_out));
    f.workspace = {a.workspace, a.workspace_bytes};
    f.stream = a.stream;
    return layer->layer.forward(f);
  });
}

int64_t fusedmoe_layer_take_invalid_id_count(const fusedmoe_layer* layer) {
  return layer == nullptr ? 0 : layer->layer.take_invalid_id_count();
}

}  // extern "C"
