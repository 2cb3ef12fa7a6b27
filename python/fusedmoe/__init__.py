"""fusedmoe: a fused Mixture-of-Experts layer forward.

    import numpy as np, fusedmoe
    config = fusedmoe.preset_config("qwen3-30b-a3b")
    layer = fusedmoe.Layer(config, weights, backend="cpu")   # weights: dict of arrays
    out = layer(x)                                           # x: [T, H] array

Arrays cross to the C++ core through DLPack without copies: numpy arrays and torch CPU tensors
on the CPU backends, torch CUDA tensors on the CUDA backend (on torch's current stream). Failed
checks raise fusedmoe.Error, whose message starts with the status code ("invalid_shape: ...").

Weights (a dict; names follow fusedmoe/weights.hpp): "layout" ("gate_up_rows", "up_gate_rows",
"interleaved_cols" or "separate"), "router" [E, H], "router_bias", "correction_bias", "gate_up",
"down" (fused layouts) or "w1", "w3", "w2" (lists, one array per expert), "gate_up_bias",
"down_bias", "shared_gate", "shared_up", "shared_down", "shared_gate_weight". They are read once,
when the layer is created (the CUDA backend reads host arrays and copies them to the GPU).

PyTorch: `layer.torch_op(x)` runs the custom operator torch.ops.fusedmoe.moe_forward, which
torch.compile(fullgraph=True) and CUDA graphs take (fusedmoe.torch_ops says how);
fusedmoe.hf.patch(model) swaps a transformers model's MoE blocks for fusedmoe ones. Both import
torch only when used.
"""

from __future__ import annotations

from ._fusedmoe import Error
from ._fusedmoe import Layer as _Layer
from ._fusedmoe import backend_available, best_backend, preset_config, preset_names, validate
from ._fusedmoe import with_experts

__all__ = [
    "Error", "Layer", "backend_available", "best_backend", "preset_config", "preset_names",
    "validate", "with_experts", "status_code",
]
__version__ = "0.1.0"


def status_code(error: Error) -> str:
    """The status code of a fusedmoe.Error ("invalid_shape", "out_of_memory", ...)."""
    return str(error).split(":", 1)[0]


def _is_torch(a) -> bool:
    return type(a).__module__.startswith("torch")


def _export(a):
    """What crosses to the C++ core: a torch tensor becomes a DLPack capsule made without any stream
    synchronisation (stream=-1: the core runs on the caller's current stream anyway; some torch
    versions make the legacy default stream wait when no stream is named, which breaks CUDA-graph
    capture), detached from autograd. Anything else passes as it is."""
    if a is None or not _is_torch(a):
        return a
    return a.detach().__dlpack__(stream=-1)


def _empty_like(x, shape, dtype_of):
    """An uninitialised array of `shape` on x's device, of the library (numpy or torch) x is from."""
    if _is_torch(x):
        import torch
        dtype = {"f32": torch.float32, "i32": torch.int32}.get(dtype_of, x.dtype)
        return torch.empty(shape, dtype=dtype, device=x.device)
    import numpy as np
    dtype = {"f32": np.float32, "i32": np.int32}.get(dtype_of, x.dtype)
    return np.empty(shape, dtype=dtype)


class Layer:
    """One MoE layer: a config, its packed weights and a backend ("best", "cpu", "reference", "cuda").

    config: a dict as returned by preset_config() (hidden, intermediate, experts, top_k, dtype,
    activation, routing {kind, renormalize, n_group, topk_group, scaling, router_bias,
    correction_bias}, shared {intermediate, gated}, expert_bias, swiglu_limit, swiglu_alpha).
    """

    def __init__(self, config: dict, weights: dict, backend: str = "best"):
        weights = {key: [_export(a) for a in v] if isinstance(v, (list, tuple)) else _export(v)
                   for key, v in weights.items()}
        self._layer = _Layer(config, weights, backend)

    @classmethod
    def from_checkpoint(cls, path: str, layer: int, backend: str = "best", arch: str | None = None):
        """Layer `layer` of a Hugging Face safetensors checkpoint (a .safetensors file, a folder,
        or model.safetensors.index.json), configured from the config.json beside it. `arch`
        (a model_type such as "qwen3_moe") overrides the one config.json names."""
        self = cls.__new__(cls)
        self._layer = _Layer.from_checkpoint(path, layer, backend, arch)
        return self

    @property
    def config(self) -> dict:
        return self._layer.config

    @property
    def backend(self) -> str:
        return self._layer.backend

    def workspace_size(self, tokens: int) -> int:
        return self._layer.workspace_size(tokens)

    def describe(self, tokens: int) -> str:
        """What forward runs for `tokens` rows, in words: the CUDA backend's GEMM tiles, the CPU
        backend's instruction set. Not a stable format; "" for tokens <= 0."""
        return self._layer.describe(tokens)

    def take_invalid_id_count(self) -> int:
        """Precomputed ids outside [0, E) seen since the last call (they contributed zero)."""
        return self._layer.take_invalid_id_count()

    def __call__(self, x, topk_ids=None, topk_weights=None, *, out=None, return_routing=False):
        """out = MoE(x) for x [T, H]. With routing kind "precomputed", pass topk_ids [T, k] int32
        and topk_weights [T, k] float32. return_routing=True also returns (ids, weights) used."""
        tokens, hidden = x.shape
        k = self.config["top_k"]
        if out is None:
            out = _empty_like(x, (tokens, hidden), None)
        ids_out = weights_out = None
        if return_routing:
            ids_out = _empty_like(x, (tokens, k), "i32")
            weights_out = _empty_like(x, (tokens, k), "f32")
        workspace = None
        stream = 0
        if _is_torch(x) and x.is_cuda:
            import torch
            workspace = torch.empty(max(self.workspace_size(tokens), 1), dtype=torch.uint8,
                                    device=x.device)
            stream = torch.cuda.current_stream(x.device).cuda_stream
        self._layer.forward(*map(_export, (x, out, topk_ids, topk_weights, ids_out, weights_out,
                                           workspace)), stream)
        return (out, ids_out, weights_out) if return_routing else out

    @property
    def torch_id(self) -> int:
        """This layer's key in the registry of torch.ops.fusedmoe.moe_forward (registered on first
        use, dropped when the layer is freed); see fusedmoe.torch_ops."""
        from . import torch_ops
        return torch_ops.register(self)

    def torch_op(self, x):
        """torch.ops.fusedmoe.moe_forward(x, self.torch_id): MoE(x) for a torch tensor x [..., H]
        through the custom operator (a new tensor of x's shape, dtype and device). Under
        torch.compile, read torch_id once outside the compiled code (registering is not traceable),
        or use fusedmoe.torch_ops.MoE."""
        from . import torch_ops
        key = self.__dict__.get("_torch_id")
        return torch_ops.moe_forward(x, self.torch_id if key is None else key)
