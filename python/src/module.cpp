// fusedmoe._fusedmoe: the C++ API for Python, through nanobind. Tensors cross as DLPack arrays
// (numpy, torch, anything with __dlpack__), zero-copy; statuses become fusedmoe.Error. The Python
// package (fusedmoe/__init__.py) builds the friendlier surface on top of this module.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fusedmoe/checkpoint.hpp"
#include "fusedmoe/config.hpp"
#include "fusedmoe/layer.hpp"
#include "fusedmoe/presets.hpp"
#include "fusedmoe/tensor.hpp"
#include "fusedmoe/weights.hpp"

namespace nb = nanobind;

namespace fusedmoe::python {
namespace {

using Array = nb::ndarray<nb::ro>;
using MutableArray = nb::ndarray<>;

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(const Status& s) {
  if (!s.ok()) throw Error(s.to_string());
}

// The enum value whose to_string is `name`, over [0, count).
template <class Enum>
Enum parse_enum(std::string_view what, const std::string& name, int count) {
  for (int i = 0; i < count; ++i) {
    if (to_string(static_cast<Enum>(i)) == name) return static_cast<Enum>(i);
  }
  std::string known;
  for (int i = 0; i < count; ++i)
    known += (i ? ", " : "") + std::string(to_string(static_cast<Enum>(i)));
  throw Error("invalid_argument: unknown " + std::string(what) + " '" + name + "' (one of " +
              known + ")");
}

DType dtype_of(const nb::dlpack::dtype& d) {
  using nb::dlpack::dtype_code;
  const auto code = static_cast<dtype_code>(d.code);
  if (d.lanes == 1 && code == dtype_code::Float && d.bits == 32) return DType::f32;
  if (d.lanes == 1 && code == dtype_code::Float && d.bits == 16) return DType::f16;
  if (d.lanes == 1 && code == dtype_code::Bfloat && d.bits == 16) return DType::bf16;
  if (d.lanes == 1 && code == dtype_code::Int && d.bits == 32) return DType::i32;
  throw Error("invalid_dtype: fusedmoe takes float32, float16, bfloat16 and int32 arrays");
}

Device device_of(int type, int id) {
  if (type == nb::device::cpu::value) return Device::cpu();
  if (type == nb::device::cuda::value) return Device::cuda(id);
  throw Error("device_mismatch: fusedmoe takes CPU or CUDA arrays (DLPack device type " +
              std::to_string(type) + ")");
}

// A view of an array as a tensor reference; nothing is copied.
template <class Ref, class A>
Ref as_ref(const A& a) {
  if (a.ndim() > static_cast<std::size_t>(kMaxRank)) {
    throw Error("invalid_shape: at most " + std::to_string(kMaxRank) + " dimensions");
  }
  Ref r;
  r.data = const_cast<void*>(static_cast<const void*>(a.data()));
  r.dtype = dtype_of(a.dtype());
  r.device = device_of(a.device_type(), a.device_id());
  r.rank = static_cast<int>(a.ndim());
  for (int d = 0; d < r.rank; ++d) {
    r.shape[static_cast<std::size_t>(d)] =
        static_cast<std::int64_t>(a.shape(static_cast<std::size_t>(d)));
    r.strides[static_cast<std::size_t>(d)] = a.stride(static_cast<std::size_t>(d));
  }
  return r;
}
ConstTensorRef cref(const std::optional<Array>& a) {
  return a ? as_ref<ConstTensorRef>(*a) : ConstTensorRef{};
}
TensorRef ref(const std::optional<MutableArray>& a) {
  return a ? as_ref<TensorRef>(*a) : TensorRef{};
}

LayerConfig config_from(const nb::dict& d) {
  LayerConfig c;
  const auto get = [&](const char* key) -> std::optional<nb::handle> {
    if (!d.contains(key)) return std::nullopt;
    return d[key];
  };
  const auto i64 = [&](const char* key, std::int64_t& v) {
    if (auto h = get(key)) v = nb::cast<std::int64_t>(*h);
  };
  i64("hidden", c.hidden);
  i64("intermediate", c.intermediate);
  i64("experts", c.experts);
  i64("top_k", c.top_k);
  if (auto h = get("dtype")) c.dtype = parse_enum<DType>("dtype", nb::cast<std::string>(*h), 3);
  if (auto h = get("activation")) {
    c.activation = parse_enum<Activation>("activation", nb::cast<std::string>(*h), 3);
  }
  if (auto h = get("swiglu_limit")) c.swiglu_limit = nb::cast<float>(*h);
  if (auto h = get("swiglu_alpha")) c.swiglu_alpha = nb::cast<float>(*h);
  if (auto h = get("expert_bias")) c.expert_bias = nb::cast<bool>(*h);
  if (auto h = get("routing")) {
    const nb::dict r = nb::cast<nb::dict>(*h);
    if (r.contains("kind")) {
      c.routing.kind = parse_enum<RoutingKind>("routing kind", nb::cast<std::string>(r["kind"]), 4);
    }
    if (r.contains("renormalize")) c.routing.renormalize = nb::cast<bool>(r["renormalize"]);
    if (r.contains("n_group")) c.routing.n_group = nb::cast<int>(r["n_group"]);
    if (r.contains("topk_group")) c.routing.topk_group = nb::cast<int>(r["topk_group"]);
    if (r.contains("scaling")) c.routing.scaling = nb::cast<float>(r["scaling"]);
    if (r.contains("router_bias")) c.routing.router_bias = nb::cast<bool>(r["router_bias"]);
    if (r.contains("correction_bias")) {
      c.routing.correction_bias = nb::cast<bool>(r["correction_bias"]);
    }
  }
  if (auto h = get("shared")) {
    const nb::dict s = nb::cast<nb::dict>(*h);
    if (s.contains("intermediate"))
      c.shared.intermediate = nb::cast<std::int64_t>(s["intermediate"]);
    if (s.contains("gated")) c.shared.gated = nb::cast<bool>(s["gated"]);
  }
  return c;
}

nb::dict config_to(const LayerConfig& c) {
  nb::dict d, r, s;
  d["hidden"] = c.hidden;
  d["intermediate"] = c.intermediate;
  d["experts"] = c.experts;
  d["top_k"] = c.top_k;
  d["dtype"] = std::string(to_string(c.dtype));
  d["activation"] = std::string(to_string(c.activation));
  d["swiglu_limit"] = c.swiglu_limit;
  d["swiglu_alpha"] = c.swiglu_alpha;
  d["expert_bias"] = c.expert_bias;
  r["kind"] = std::string(to_string(c.routing.kind));
  r["renormalize"] = c.routing.renormalize;
  r["n_group"] = c.routing.n_group;
  r["topk_group"] = c.routing.topk_group;
  r["scaling"] = c.routing.scaling;
  r["router_bias"] = c.routing.router_bias;
  r["correction_bias"] = c.routing.correction_bias;
  d["routing"] = r;
  s["intermediate"] = c.shared.intermediate;
  s["gated"] = c.shared.gated;
  d["shared"] = s;
  return d;
}

// The layer and its own host workspace (CPU backends) in one object.
class PyLayer {
 public:
  PyLayer(const nb::dict& config, const nb::dict& w, const std::string& backend_name) {
    const LayerConfig c = config_from(config);
    const Backend backend = parse_backend(backend_name);
    const auto arr = [&](const char* key) -> ConstTensorRef {
      if (!w.contains(key) || w[key].is_none()) return {};
      return as_ref<ConstTensorRef>(nb::cast<Array>(w[key]));
    };
    const auto list = [&](const char* key, std::vector<ConstTensorRef>& out) {
      if (!w.contains(key) || w[key].is_none()) return;
      for (nb::handle h : nb::cast<nb::sequence>(w[key]))
        out.push_back(as_ref<ConstTensorRef>(nb::cast<Array>(h)));
    };
    WeightSet ws;
    ws.router = {arr("router"), arr("router_bias"), arr("correction_bias")};
    if (w.contains("layout")) {
      ws.experts.layout = parse_enum<WeightLayout>("layout", nb::cast<std::string>(w["layout"]), 4);
    }
    ws.experts.gate_up = arr("gate_up");
    ws.experts.down = arr("down");
    std::vector<ConstTensorRef> w1, w3, w2;
    list("w1", w1);
    list("w3", w3);
    list("w2", w2);
    ws.experts.w1 = w1;
    ws.experts.w3 = w3;
    ws.experts.w2 = w2;
    ws.experts.gate_up_bias = arr("gate_up_bias");
    ws.experts.down_bias = arr("down_bias");
    ws.shared = {arr("shared_gate"), arr("shared_up"), arr("shared_down"),
                 arr("shared_gate_weight")};
    build(c, ws, backend);
  }

  // Layer `layer` of a Hugging Face safetensors checkpoint (a file, a folder or an index), its
  // configuration from the checkpoint's config.json; `arch` overrides the model type there.
  static PyLayer from_checkpoint(const std::string& path, int layer,
                                 const std::string& backend_name,
                                 const std::optional<std::string>& arch) {
    Result<LayerWeights> weights = [&]() -> Result<LayerWeights> {
      nb::gil_scoped_release release;
      Result<Checkpoint> ckpt = Checkpoint::open(path);
      if (!ckpt.ok()) return ckpt.status();
      std::optional<Architecture> a;
      if (arch) {
        a = parse_architecture(*arch);
        if (!a) return Status{StatusCode::invalid_argument, "unknown architecture '" + *arch + "'"};
      }
      Result<ModelConfig> model = read_model_config(ckpt.value(), a);
      if (!model.ok()) return model.status();
      return load_moe_layer(ckpt.value(), model.value(), layer);
    }();
    check(weights.status());
    PyLayer l;
    l.build(weights->config, weights->weights, parse_backend(backend_name));
    return l;
  }

  nb::dict config() const { return config_to(layer_->config()); }
  std::string backend() const { return std::string(to_string(layer_->backend())); }
  std::size_t workspace_size(std::int64_t tokens) const { return layer_->workspace_size(tokens); }
  std::string describe(std::int64_t tokens) const { return layer_->describe(tokens); }
  std::int64_t take_invalid_id_count() const { return layer_->take_invalid_id_count(); }

  // out (and the optional outputs) are written in place. Without `workspace`, a host workspace
  // owned by the layer is used (CPU backends only).
  void forward(const Array& x, const MutableArray& out, const std::optional<Array>& topk_ids,
               const std::optional<Array>& topk_weights, const std::optional<MutableArray>& ids_out,
               const std::optional<MutableArray>& weights_out,
               const std::optional<MutableArray>& workspace, std::uintptr_t stream) {
    ForwardArgs a;
    a.x = as_ref<ConstTensorRef>(x);
    a.out = as_ref<TensorRef>(out);
    a.topk_ids = cref(topk_ids);
    a.topk_weights = cref(topk_weights);
    a.ids_out = ref(ids_out);
    a.weights_out = ref(weights_out);
    a.stream = reinterpret_cast<void*>(stream);
    const std::int64_t tokens = a.x.rank == 2 ? a.x.size(0) : 0;
    if (workspace) {
      // any dtype: only the bytes matter; it must live where the backend computes
      const Device where = device_of(workspace->device_type(), workspace->device_id());
      if ((where.kind == DeviceKind::cuda) != (layer_->backend() == Backend::cuda)) {
        throw Error("device_mismatch: the workspace must be " +
                    std::string(layer_->backend() == Backend::cuda ? "CUDA" : "host") +
                    " memory for the " + backend() + " backend");
      }
      a.workspace = {workspace->data(), workspace->size() * workspace->itemsize()};
    } else {
      if (layer_->backend() == Backend::cuda) {
        throw Error(
            "invalid_argument: the cuda backend needs a device workspace "
            "(workspace_size(tokens) bytes)");
      }
      const std::size_t need = layer_->workspace_size(tokens);
      if (host_workspace_.size() < need) host_workspace_.resize(need);
      a.workspace = {host_workspace_.data(), host_workspace_.size()};
    }
    Status s;
    {
      nb::gil_scoped_release release;
      s = layer_->forward(a);
    }
    check(s);
  }

 private:
  PyLayer() = default;

  static Backend parse_backend(const std::string& name) {
    return name == "best" ? best_backend() : parse_enum<Backend>("backend", name, 3);
  }

  void build(const LayerConfig& c, const WeightSet& ws, Backend backend) {
    Result<PackedWeights> packed = [&] {
      nb::gil_scoped_release release;
      return pack_weights(c, ws, backend);
    }();
    check(packed.status());
    Result<Layer> layer = Layer::create(c, std::move(packed).value());
    check(layer.status());
    layer_.emplace(std::move(layer).value());
  }

  std::optional<Layer> layer_;
  std::vector<std::byte> host_workspace_;
};

}  // namespace
}  // namespace fusedmoe::python

NB_MODULE(_fusedmoe, m) {
  using namespace fusedmoe;
  using namespace fusedmoe::python;
  m.doc() = "fusedmoe: a fused Mixture-of-Experts layer forward (C++ core)";
  nb::exception<Error>(m, "Error", PyExc_RuntimeError);

  m.def("backend_available", [](const std::string& name) {
    return backend_available(parse_enum<Backend>("backend", name, 3));
  });
  m.def("best_backend", [] { return std::string(to_string(best_backend())); });
  m.def("preset_names", [] {
    std::vector<std::string> names;
    for (const Preset& p : presets()) names.emplace_back(p.name);
    return names;
  });
  m.def("preset_config", [](const std::string& name) {
    const Preset* p = find_preset(name);
    if (p == nullptr) throw Error("invalid_argument: unknown preset '" + name + "'");
    return config_to(p->config);
  });
  m.def("with_experts", [](const nb::dict& config, std::int64_t experts) {
    return config_to(with_experts(config_from(config), experts));
  });
  m.def("validate", [](const nb::dict& config) { check(validate(config_from(config))); });

  nb::class_<PyLayer>(m, "Layer")
      .def(nb::init<const nb::dict&, const nb::dict&, const std::string&>(), nb::arg("config"),
           nb::arg("weights"), nb::arg("backend") = "best")
      .def_static("from_checkpoint", &PyLayer::from_checkpoint, nb::arg("path"), nb::arg("layer"),
                  nb::arg("backend") = "best", nb::arg("arch") = nb::none())
      .def_prop_ro("config", &PyLayer::config)
      .def_prop_ro("backend", &PyLayer::backend)
      .def("workspace_size", &PyLayer::workspace_size, nb::arg("tokens"))
      .def("describe", &PyLayer::describe, nb::arg("tokens"))
      .def("take_invalid_id_count", &PyLayer::take_invalid_id_count)
      .def("forward", &PyLayer::forward, nb::arg("x"), nb::arg("out"),
           nb::arg("topk_ids") = nb::none(), nb::arg("topk_weights") = nb::none(),
           nb::arg("ids_out") = nb::none(), nb::arg("weights_out") = nb::none(),
           nb::arg("workspace") = nb::none(), nb::arg("stream") = 0);
}
