"""Hugging Face transformers drop-in: swap a model's MoE blocks for fusedmoe ones.

    import fusedmoe.hf
    model = AutoModelForCausalLM.from_pretrained(..., dtype=torch.bfloat16).cuda().eval()
    swapped = fusedmoe.hf.patch(model)      # [("model.layers.0.mlp", "qwen3_moe"), ...]
    logits = model(input_ids).logits        # the MoE blocks now run fusedmoe

Blocks it knows (by class name), with the routing MODELS.md gives for each:

    MixtralSparseMoeBlock    mixtral      softmax, top-k, renormalised
    Qwen2MoeSparseMoeBlock   qwen2_moe    softmax, top-k, renormalised if norm_topk_prob;
                                          shared expert scaled by sigmoid(x . shared_expert_gate)
    Qwen3MoeSparseMoeBlock   qwen3_moe    softmax, top-k, renormalised if norm_topk_prob
    OlmoeSparseMoeBlock      olmoe        softmax, top-k, renormalised if norm_topk_prob
    DeepseekV3MoE            deepseek_v3  sigmoid, n_group/topk_group, e_score_correction_bias,
                                          norm_topk_prob, routed_scaling_factor; ungated shared
                                          experts

Expert weights are read in either form transformers has used: v4's list of per-expert modules
(w1/w3/w2 or gate_proj/up_proj/down_proj) and v5's fused parameters gate_up_proj / down_proj,
[E, 2I, H] and [E, H, I], or [E, H, 2I] and [E, I, H] where the experts module says
is_transposed (gate and up concatenated, or interleaved where it says is_concatenated=False).
Routing parameters come from the block and its router first, then from the model config.

Each replacement (FusedMoEBlock) returns what the block it replaces returned: a tensor of the
input's shape and dtype, or, where that transformers version's block returned a
(hidden, router_logits) pair, the same pair (the logits recomputed from the router weight, which
the replacement keeps). Which one is found by calling the original block once on a one-token
input when patching. The expert weights are packed into the fusedmoe layer and the original
block is dropped, so its parameters are freed unless something else holds them.

backend "best" runs each block where its weights are: "cuda" for a block on a GPU, "cpu" for
one on the CPU; "cpu", "reference" or "cuda" forces one (the block must be on a matching
device). The CUDA backend computes in bf16 and f16 only. Inference only: no backward, no router
jitter, and transformers v5's output_router_logits records nothing from a replaced block.
A block that cannot be mapped (another activation, expert biases, unknown weight form or return
value) raises fusedmoe.Error naming the module, before anything in the model is changed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Error, Layer
from .torch_ops import MoE

__all__ = ["FusedMoEBlock", "patch", "SUPPORTED_BLOCKS"]

SUPPORTED_BLOCKS = {
    "MixtralSparseMoeBlock": "mixtral",
    "Qwen2MoeSparseMoeBlock": "qwen2_moe",
    "Qwen3MoeSparseMoeBlock": "qwen3_moe",
    "OlmoeSparseMoeBlock": "olmoe",
    "DeepseekV3MoE": "deepseek_v3",
}

_DTYPES = {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}
# transformers' activation modules, by class name, as fusedmoe activations (the gated product
# act(gate) * up is what every block here computes)
_ACTIVATIONS = {"SiLU": "swiglu", "SiLUActivation": "swiglu", "PytorchGELUTanh": "geglu",
                "GELUTanh": "geglu", "NewGELUActivation": "geglu", "FastGELUActivation": "geglu"}
_HIDDEN_ACTS = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu",
                "gelu_new": "geglu"}


class FusedMoEBlock(torch.nn.Module):
    """A transformers MoE block running on fusedmoe (made by patch()).

    forward(hidden_states [..., H]) returns a tensor of the same shape and dtype, or, when
    `returns_router_logits`, (that tensor, router logits [tokens, E]) as transformers v4 blocks do.
    """

    def __init__(self, layer: Layer, arch: str, router_weight: torch.Tensor | None = None,
                 logits_dtype: torch.dtype | None = None):
        super().__init__()
        self.arch = arch
        self.moe = MoE(layer)
        self.returns_router_logits = router_weight is not None
        self.logits_dtype = logits_dtype
        if router_weight is not None:
            self.register_buffer("router_weight", router_weight, persistent=False)

    @property
    def layer(self) -> Layer:
        return self.moe.layer

    def forward(self, hidden_states: torch.Tensor):
        out = self.moe(hidden_states)
        if not self.returns_router_logits:
            return out
        rows = hidden_states.reshape(-1, hidden_states.shape[-1])
        logits = F.linear(rows.to(self.router_weight.dtype), self.router_weight)
        return out, logits.to(self.logits_dtype)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, returns_router_logits={self.returns_router_logits}"


def patch(model: torch.nn.Module, backend: str = "best") -> list[tuple[str, str]]:
    """Replaces every MoE block of `model` that fusedmoe knows with a FusedMoEBlock built from the
    block's own weights; returns [(module name, arch), ...] in model order.

    Raises fusedmoe.Error naming the module when a block cannot be mapped, when a module looks
    like an MoE block of an architecture fusedmoe does not know, or when there is nothing to
    patch; in each case before the model is changed. An error while packing (out of memory, say)
    leaves the blocks before it swapped."""
    if backend not in ("best", "cpu", "reference", "cuda"):
        raise Error(f"invalid_argument: backend '{backend}' (one of best, cpu, reference, cuda)")
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()

    found, already = [], 0
    for name, module in model.named_modules():
        if isinstance(module, FusedMoEBlock):
            already += 1
            continue
        arch = SUPPORTED_BLOCKS.get(type(module).__name__)
        if arch is not None:
            if not name:
                _fail(name, module, "patch() swaps blocks inside a model: pass the module that "
                      "holds this block")
            if not any(name.startswith(f"{outer}.") for outer, _, _ in found):
                found.append((name, module, arch))
            continue
        inside = any(name.startswith(f"{outer}.") for outer, _, _ in found)
        if not inside and _looks_like_moe_block(module):
            raise Error(f"unsupported_config: {name or 'model'} ({type(module).__name__}) looks "
                        "like an MoE block, but fusedmoe.hf knows only " +
                        ", ".join(SUPPORTED_BLOCKS))
    if not found and not already:
        raise Error(f"unsupported_config: {type(model).__name__} has no MoE block fusedmoe.hf "
                    "knows (" + ", ".join(SUPPORTED_BLOCKS) + ")")

    # Map every block first, so that one that cannot be mapped leaves the model as it was. Then
    # pack and swap one block at a time: host copies and packed weights exist for one block at
    # a time, and each original block is freed once it is swapped out (unless held elsewhere).
    plans = [_plan(name, module, arch, config, backend) for name, module, arch in found]
    del found, module
    swapped = []
    while plans:
        plan = plans.pop(0)
        _set_submodule(model, plan["name"], _build(plan))
        swapped.append((plan["name"], plan["arch"]))
        if plan["backend"] == "cuda":
            del plan
            torch.cuda.empty_cache()  # the packed weights are not allocated through torch
    return swapped


# ---- reading one block ---------------------------------------------------------------------------

def _looks_like_moe_block(module: torch.nn.Module) -> bool:
    return isinstance(getattr(module, "experts", None), torch.nn.Module) and any(
        isinstance(getattr(module, n, None), torch.nn.Module) for n in ("gate", "router"))


def _fail(name: str, module: torch.nn.Module, why: str):
    raise Error(f"unsupported_config: {name or 'model'} ({type(module).__name__}): {why}")


def _first(*values):
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def _host(t: torch.Tensor) -> torch.Tensor:
    """A tensor's values in host memory, contiguous, detached (no copy when already so)."""
    return t.detach().to("cpu").contiguous()


def _materialise(weights: dict) -> dict:
    """The weights dict with every tensor in host memory: tensors (views of the block's own
    parameters until now) are copied one block at a time, and a callable (a re-ordering that
    needs a new tensor) is called first."""
    def one(v):
        if callable(v):
            v = v()
        return _host(v) if isinstance(v, torch.Tensor) else v
    return {k: [one(t) for t in v] if isinstance(v, list) else one(v) for k, v in weights.items()}


def _activation(name, block, act_module, config) -> str:
    if act_module is not None:
        kind = _ACTIVATIONS.get(type(act_module).__name__)
        if kind is None:
            _fail(name, block, f"activation {type(act_module).__name__} (fusedmoe has SiLU and "
                  "tanh-approximated GELU gates)")
        return kind
    act = getattr(config, "hidden_act", None)
    if act not in _HIDDEN_ACTS:
        _fail(name, block, f"hidden_act {act!r} (fusedmoe has silu and gelu_pytorch_tanh)")
    return _HIDDEN_ACTS[act]


def _linear_weight(name, block, linear, what) -> torch.Tensor:
    if not isinstance(linear, torch.nn.Linear):
        _fail(name, block, f"{what} is {type(linear).__name__}, not nn.Linear")
    if linear.bias is not None:
        _fail(name, block, f"{what} has a bias (fusedmoe's routed and shared experts have none)")
    return linear.weight


def _experts(name, block, hidden: int) -> tuple[dict, int, torch.Tensor, object]:
    """The expert weights as a fusedmoe weights dict (experts part), I, one expert tensor (for
    dtype and device) and the activation module (or None)."""
    experts = block.experts
    if isinstance(experts, torch.nn.ModuleList):  # transformers v4: one module per expert
        first = experts[0]
        for names in (("w1", "w3", "w2"), ("gate_proj", "up_proj", "down_proj")):
            if all(hasattr(first, n) for n in names):
                break
        else:
            _fail(name, block, f"experts[0] ({type(first).__name__}) has neither w1/w3/w2 nor "
                  "gate_proj/up_proj/down_proj")
        gate, up, down = ([_linear_weight(name, block, getattr(e, n), f"experts[{i}].{n}")
                           for i, e in enumerate(experts)] for n in names)
        inter = gate[0].shape[0]
        w = {"layout": "separate", "w1": gate, "w3": up, "w2": down}
        return w, inter, gate[0], getattr(first, "act_fn", None)

    gate_up = getattr(experts, "gate_up_proj", None)
    down = getattr(experts, "down_proj", None)
    if not (isinstance(gate_up, torch.Tensor) and isinstance(down, torch.Tensor)):
        _fail(name, block, f"experts ({type(experts).__name__}) is neither a ModuleList nor "
              "fused gate_up_proj/down_proj parameters")
    if getattr(experts, "has_bias", False) or getattr(experts, "gate_up_proj_bias",
                                                      None) is not None:
        _fail(name, block, "the experts have biases")
    if not getattr(experts, "has_gate", True):
        _fail(name, block, "the experts have no gate projection")
    if getattr(experts, "has_post_expert_norm", False):
        _fail(name, block, "the experts have a post-expert norm")
    own_gate = type(experts).__dict__.get("_apply_gate")
    if own_gate is not None and getattr(own_gate, "__name__", "") != "_default_apply_gate":
        _fail(name, block, "the experts module has its own gating function (_apply_gate)")
    if gate_up.dim() != 3 or down.dim() != 3:
        _fail(name, block, f"gate_up_proj {tuple(gate_up.shape)} and down_proj "
              f"{tuple(down.shape)} are not 3-d")
    transposed = getattr(experts, "is_transposed", None)
    if transposed is None:  # older v5 code states no layout: [E, H, 2I] only when it can't be rows
        transposed = gate_up.shape[1] == hidden and gate_up.shape[2] != hidden
    concatenated = getattr(experts, "is_concatenated", True)
    n, k = (gate_up.shape[2], gate_up.shape[1]) if transposed else gate_up.shape[1:]
    if k != hidden or n % 2:
        _fail(name, block, f"gate_up_proj {tuple(gate_up.shape)} does not fit H={hidden} "
              f"(is_transposed={transposed})")
    inter = n // 2
    want_down = (gate_up.shape[0], inter, hidden) if transposed else (gate_up.shape[0], hidden,
                                                                      inter)
    if tuple(down.shape) != want_down:
        _fail(name, block, f"down_proj is {tuple(down.shape)}, expected {want_down}")
    if transposed and not concatenated:  # gate/up interleaved by column: fusedmoe's own layout
        w = {"layout": "interleaved_cols", "gate_up": gate_up, "down": down}
    else:
        rows = gate_up.detach().transpose(1, 2) if transposed else gate_up.detach()
        if not concatenated:  # rows interleaved: gate rows 0, 2, ...; up rows 1, 3, ...
            rows = lambda rows=rows: torch.cat([rows[:, 0::2], rows[:, 1::2]], dim=1)  # noqa: E731
        w = {"layout": "gate_up_rows", "gate_up": rows,
             "down": down.detach().transpose(1, 2) if transposed else down}
    return w, inter, gate_up, getattr(experts, "act_fn", None)


def _returns(name, block, hidden, experts, dtype, device):
    """What the block's forward returns: None for a tensor, else the router logits' dtype of a
    (hidden, router_logits) pair. Found by running it once on one token."""
    probe = torch.zeros(1, 1, hidden, dtype=dtype, device=device)
    with torch.no_grad():
        got = block(probe)
    if isinstance(got, torch.Tensor):
        if got.shape != probe.shape:
            _fail(name, block, f"forward returned {tuple(got.shape)} for input [1, 1, {hidden}]")
        return None
    if (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)
            and got[0].shape == probe.shape and got[1].shape[-1] == experts):
        return got[1].dtype
    _fail(name, block, "forward returned neither a tensor nor (hidden, router_logits) "
          f"({type(got).__name__})")


def _plan(name: str, block: torch.nn.Module, arch: str, config, backend: str) -> dict:
    """Everything a FusedMoEBlock needs, read from the block and checked; the weights are still
    the block's own tensors (or views of them)."""
    router = getattr(block, "gate", None)
    if router is None or not isinstance(getattr(router, "weight", None), torch.Tensor):
        _fail(name, block, "no router weight at .gate.weight")
    if getattr(router, "bias", None) is not None:
        _fail(name, block, "the router has a bias")
    router_weight = router.weight
    num_experts, hidden = router_weight.shape
    weights, inter, sample, act_module = _experts(name, block, hidden)

    dtype = _DTYPES.get(sample.dtype)
    if dtype is None:
        _fail(name, block, f"expert weights are {sample.dtype} (fusedmoe takes bf16, f16, f32)")
    device = sample.device
    chosen = backend
    if backend == "best":
        chosen = "cuda" if device.type == "cuda" else "cpu"
    if (chosen == "cuda") != (device.type == "cuda"):
        _fail(name, block, f"its weights are on {device} but the backend is {chosen}: move the "
              "model or choose the other backend")
    if chosen == "cuda" and dtype == "f32":
        _fail(name, block, "float32 weights: fusedmoe's CUDA backend computes in bf16 or f16 "
              "(model.to(torch.bfloat16))")

    top_k = _first(getattr(block, "top_k", None), getattr(router, "top_k", None),
                   getattr(config, "num_experts_per_tok", None))
    if top_k is None:
        _fail(name, block, "top_k is in neither the block, its router nor the config")
    norm = _first(getattr(block, "norm_topk_prob", None), getattr(router, "norm_topk_prob", None),
                  getattr(config, "norm_topk_prob", None))
    weights["router"] = router_weight.detach().float()  # tiny; routing is fp32 anyway
    shared = {"intermediate": 0, "gated": False}
    shared_module = None
    if arch == "mixtral":
        routing = {"kind": "softmax_topk", "renormalize": True}
    elif arch in ("qwen2_moe", "qwen3_moe", "olmoe"):
        routing = {"kind": "softmax_topk", "renormalize": bool(norm)}
        if arch == "qwen2_moe":
            shared_module = getattr(block, "shared_expert", None)
            gate_linear = getattr(block, "shared_expert_gate", None)
            if shared_module is not None:
                if gate_linear is None:
                    _fail(name, block, "a shared expert without shared_expert_gate")
                weights["shared_gate_weight"] = _linear_weight(
                    name, block, gate_linear, "shared_expert_gate").detach().float()
                shared["gated"] = True
    else:  # deepseek_v3
        n_group = _first(getattr(router, "n_group", None), getattr(router, "num_group", None),
                         getattr(config, "n_group", None), 1)
        topk_group = _first(getattr(router, "topk_group", None),
                            getattr(config, "topk_group", None), 1)
        scaling = _first(getattr(router, "routed_scaling_factor", None),
                         getattr(config, "routed_scaling_factor", None), 1.0)
        if norm is None:
            norm = True
        routing = {"kind": "sigmoid_topk", "renormalize": bool(norm), "n_group": int(n_group),
                   "topk_group": int(topk_group), "scaling": float(scaling)}
        bias = getattr(router, "e_score_correction_bias", None)
        if bias is not None:
            routing["correction_bias"] = True
            weights["correction_bias"] = bias.detach().float()
        shared_module = getattr(block, "shared_experts", None)

    kind = _activation(name, block, act_module, config)
    if shared_module is not None:
        parts = [_linear_weight(name, block, getattr(shared_module, p, None), f"shared {p}")
                 for p in ("gate_proj", "up_proj", "down_proj")]
        if parts[0].shape[0] > 0:
            shared_act = getattr(shared_module, "act_fn", None)
            if shared_act is not None and _activation(name, block, shared_act, config) != kind:
                _fail(name, block, "the shared expert's activation differs from the experts'")
            shared["intermediate"] = int(parts[0].shape[0])
            weights["shared_gate"], weights["shared_up"], weights["shared_down"] = parts
        else:
            shared["gated"] = False
            weights.pop("shared_gate_weight", None)

    layer_config = {"hidden": int(hidden), "intermediate": int(inter), "experts": int(num_experts),
                    "top_k": int(top_k), "dtype": dtype, "activation": kind, "routing": routing,
                    "shared": shared}
    logits_dtype = _returns(name, block, hidden, num_experts, sample.dtype, device)
    return {"name": name, "arch": arch, "what": type(block).__name__, "config": layer_config,
            "weights": weights, "backend": chosen, "device": device,
            "logits_weight": router_weight.detach() if logits_dtype is not None else None,
            "logits_dtype": logits_dtype}


def _build(plan: dict) -> FusedMoEBlock:
    """The fusedmoe layer of one planned block (its weights copied to the host and packed)."""
    try:
        weights = _materialise(plan["weights"])
        if plan["backend"] == "cuda":
            with torch.cuda.device(plan["device"]):  # the CUDA backend packs onto the current GPU
                layer = Layer(plan["config"], weights, "cuda")
        else:
            layer = Layer(plan["config"], weights, plan["backend"])
    except Error as e:
        code, _, message = str(e).partition(": ")
        raise Error(f"{code}: {plan['name']} ({plan['what']}): {message}") from e
    return FusedMoEBlock(layer, plan["arch"], plan["logits_weight"], plan["logits_dtype"])


def _set_submodule(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
