"""fusedmoe as a PyTorch custom operator, for torch.compile and CUDA graphs.

    import fusedmoe
    from fusedmoe.torch_ops import MoE
    layer = fusedmoe.Layer(config, weights, backend="cuda")
    moe = MoE(layer)                  # an nn.Module: y = moe(x), x [..., H] on the layer's device
    y = torch.compile(moe, fullgraph=True)(x)
    y = layer.torch_op(x)             # the same operator, called eagerly

The operator is `fusedmoe::moe_forward(Tensor x, int layer_id) -> Tensor`. A custom operator
cannot take a Python object, so layers live in a process-wide registry keyed by an int:
register(layer) gives the key (also `layer.torch_id`); the entry goes when the layer is freed.
The registry holds layers weakly: keep the Layer (or the MoE module, which holds it) alive as
long as anything, a compiled graph or a captured CUDA graph included, may run its key.

x is [..., H] in the layer's dtype, on the CPU for the cpu and reference backends and on a GPU
for the cuda backend; the result has x's shape, dtype and device. Inside the operator nothing
syncs with the host and nothing is allocated outside torch: the output and the workspace come
from torch's allocator, and the kernels run on torch's current stream, so the call can be
captured in a torch.cuda.CUDAGraph. Under torch.compile the fake (meta) implementation gives
the output's shape without running anything. There is no backward: this is an inference op.

Importing this module imports torch; `import fusedmoe` alone does not.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref

import torch

from . import _export

__all__ = ["MoE", "moe_forward", "register", "registered"]

_layers: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
_next_id = itertools.count(1)


def register(layer) -> int:
    """The registry key of `layer` (a fusedmoe.Layer), registering it on first use."""
    key = getattr(layer, "_torch_id", None)
    if key is None or _layers.get(key) is not layer:
        key = next(_next_id)
        _layers[key] = layer
        layer._torch_id = key
    return key


def registered(layer_id: int):
    """The layer registered under `layer_id`; KeyError if it was never registered or is freed."""
    layer = _layers.get(layer_id)
    if layer is None:
        raise KeyError(f"fusedmoe::moe_forward: no layer registered under id {layer_id} (never "
                       "registered, or the Layer was freed)")
    return layer


@torch.library.custom_op("fusedmoe::moe_forward", mutates_args=())
def moe_forward(x: torch.Tensor, layer_id: int) -> torch.Tensor:
    """MoE(x) for x [..., H] with the layer registered under layer_id."""
    layer = registered(layer_id)
    hidden = x.shape[-1]
    rows = x.reshape(-1, hidden)  # a view when it can be; rows may be strided, columns not
    # (the CUDA kernels also want 16-byte aligned rows: a view that is not gets copied)
    if rows.numel() and (rows.stride(-1) != 1 or (x.is_cuda and (
            rows.data_ptr() % 16 or rows.stride(0) * rows.element_size() % 16))):
        rows = rows.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    tokens = rows.shape[0]
    if tokens == 0:
        return out
    workspace = torch.empty(max(layer.workspace_size(tokens), 1), dtype=torch.uint8,
                            device=x.device)
    if not x.is_cuda:
        layer._layer.forward(_export(rows), _export(out.view(tokens, hidden)), None, None, None,
                             None, _export(workspace), 0)
        return out
    # DLPack export wants the tensors' device to be the current one
    same = x.device.index == torch.cuda.current_device()
    with contextlib.nullcontext() if same else torch.cuda.device(x.device):
        layer._layer.forward(_export(rows), _export(out.view(tokens, hidden)), None, None, None,
                             None, _export(workspace), torch.cuda.current_stream().cuda_stream)
    return out


@moe_forward.register_fake
def _moe_forward_fake(x: torch.Tensor, layer_id: int) -> torch.Tensor:
    return x.new_empty(x.shape)


class MoE(torch.nn.Module):
    """A fusedmoe.Layer as an nn.Module whose forward is torch.ops.fusedmoe.moe_forward.

    It holds the layer (so its registry entry lives as long as the module) and no parameters:
    the weights were packed into the layer when it was created."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.layer_id = register(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.fusedmoe.moe_forward(x, self.layer_id)

    def extra_repr(self) -> str:
        c = self.layer.config
        return (f"hidden={c['hidden']}, intermediate={c['intermediate']}, experts={c['experts']}, "
                f"top_k={c['top_k']}, dtype={c['dtype']}, backend={self.layer.backend}")
