"""torch.ops.fusedmoe.moe_forward: the custom operator against the Layer it wraps.

On the CPU (whenever torch is installed): torch.library.opcheck, the op equal bit for bit to a
direct Layer call (same backend, same inputs), torch.compile(fullgraph=True) equal to eager, the
registry's lifetime rules. With a GPU and a CUDA build: the CUDA backend through the op within
CONTRACT.md's bf16 tolerance of the float64 reference backend, torch.compile on the GPU, and a
CUDA-graph capture replayed on new inputs, equal to eager calls.
"""

import gc
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusedmoe  # noqa: E402
from fusedmoe import torch_ops  # noqa: E402
from fusedmoe.torch_ops import MoE  # noqa: E402

HIDDEN, INTER, EXPERTS, TOP_K = 64, 48, 8, 2
TORCH_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
CUDA = (torch.cuda.is_available() and fusedmoe.backend_available("cuda"))
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a GPU and a CUDA build of fusedmoe")


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def make_layer(dtype: str, backend: str, seed: int, shared: bool = False):
    """A small softmax top-k layer with Gaussian weights scaled by 1/sqrt(fan_in) (O(1) outputs).
    Weights are host tensors: every backend packs from host memory."""
    g = torch.Generator().manual_seed(seed)
    c = {"hidden": HIDDEN, "intermediate": INTER, "experts": EXPERTS, "top_k": TOP_K,
         "dtype": dtype, "routing": {"kind": "softmax_topk", "renormalize": True}}
    td = TORCH_DTYPES[dtype]

    def rand(*shape):
        return (torch.randn(*shape, generator=g) / shape[-1] ** 0.5).to(td)

    w = {"layout": "gate_up_rows", "router": rand(EXPERTS, HIDDEN).float(),
         "gate_up": rand(EXPERTS, 2 * INTER, HIDDEN), "down": rand(EXPERTS, HIDDEN, INTER)}
    if shared:
        c["shared"] = {"intermediate": 32, "gated": True}
        w.update(shared_gate=rand(32, HIDDEN), shared_up=rand(32, HIDDEN),
                 shared_down=rand(HIDDEN, 32), shared_gate_weight=rand(1, HIDDEN).float())
    return fusedmoe.Layer(c, w, backend), w, c


def randn(shape, dtype, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype).to(device)


def check_close(out, ref, dtype: str, what: str):
    """CONTRACT.md: |out - ref| <= atol·max(1, rms(ref)) + rtol·|ref| per element, and the global
    relative L2 error; the same scheme as the C++ suite's compare()."""
    atol, rtol, glob = {"f32": (1e-5, 1e-5, 1e-6), "f16": (1e-5, 1e-3, 2e-3),
                        "bf16": (1e-5, 1.6e-2, 1e-2)}[dtype]
    out = out.detach().double().cpu()
    ref = ref.detach().double().cpu()
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    scale = max(1.0, ref.pow(2).mean().sqrt().item())
    err = (out - ref).abs()
    bad = err > atol * scale + rtol * ref.abs()
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements out of tolerance, "
                           f"worst {err.max():.3g}")
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel <= glob, f"{what}: global relative error {rel:.3g} > {glob}"


# ---- CPU -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("shape", [(7, HIDDEN), (2, 5, HIDDEN), (1, HIDDEN)])
def test_op_equals_the_layer_call(dtype, shape):
    seed = seed_of(f"op-eq-{dtype}-{shape}")
    layer, _, _ = make_layer(dtype, "cpu", seed, shared=True)
    x = randn(shape, TORCH_DTYPES[dtype], seed + 1)
    got = layer.torch_op(x)
    want = layer(x.reshape(-1, HIDDEN)).reshape(shape)
    assert got.shape == x.shape and got.dtype == x.dtype and got.device == x.device
    assert torch.equal(got, want), f"seed {seed}"


def test_op_reads_strided_rows_and_empty_batches():
    seed = seed_of("strided")
    layer, _, _ = make_layer("f32", "cpu", seed)
    big = randn((10, 2 * HIDDEN), torch.float32, seed + 1)
    strided = big[::2, :HIDDEN]  # every other row, first half of each
    assert torch.equal(layer.torch_op(strided), layer.torch_op(strided.contiguous()))
    cols = randn((HIDDEN, 6), torch.float32, seed + 2).t()  # column stride != 1: copied first
    assert torch.equal(layer.torch_op(cols), layer.torch_op(cols.contiguous()))
    empty = layer.torch_op(torch.empty(0, HIDDEN))
    assert empty.shape == (0, HIDDEN)


@pytest.mark.parametrize("shape", [(5, HIDDEN), (2, 3, HIDDEN)])
def test_opcheck(shape):
    seed = seed_of(f"opcheck-{shape}")
    layer, _, _ = make_layer("f32", "cpu", seed)
    x = randn(shape, torch.float32, seed + 1)
    torch.library.opcheck(torch.ops.fusedmoe.moe_forward.default, (x, layer.torch_id))


def test_compile_fullgraph_equals_eager():
    seed = seed_of("compile")
    layer, _, _ = make_layer("bf16", "cpu", seed, shared=True)
    moe = MoE(layer)

    def block(x):  # the op between ordinary torch ops, as in a model
        return x + moe(x * 0.5)

    compiled = torch.compile(block, fullgraph=True, dynamic=True)
    for tokens in (3, 17, 40):  # several sizes: one graph, dynamic in the token count
        x = randn((tokens, HIDDEN), torch.bfloat16, seed + tokens)
        assert torch.equal(compiled(x), block(x)), f"seed {seed}, T={tokens}"


def test_registry_lifetime_and_errors():
    seed = seed_of("registry")
    layer, _, _ = make_layer("f32", "cpu", seed)
    key = layer.torch_id
    assert layer.torch_id == key and torch_ops.registered(key) is layer
    other, _, _ = make_layer("f32", "cpu", seed + 1)
    assert other.torch_id != key
    module = MoE(other)
    other_key = other.torch_id
    del other
    gc.collect()
    assert torch_ops.registered(other_key) is module.layer  # the module keeps its layer
    del module
    gc.collect()
    with pytest.raises(KeyError, match="no layer registered"):
        torch_ops.registered(other_key)
    x = randn((3, HIDDEN), torch.float32, seed + 2)
    with pytest.raises(KeyError):
        torch.ops.fusedmoe.moe_forward(x, other_key)
    with pytest.raises(fusedmoe.Error, match="invalid_dtype"):
        layer.torch_op(x.double())
    with pytest.raises(fusedmoe.Error, match="invalid_shape"):
        layer.torch_op(torch.zeros(3, HIDDEN + 1))


def test_gradients_are_not_silently_wrong():
    """The op has no backward: it runs on inputs that require grad (no copy of the graph), and
    asking for a gradient through it raises instead of returning zeros."""
    layer, _, _ = make_layer("f32", "cpu", seed_of("grad"))
    x = randn((3, HIDDEN), torch.float32, 1).requires_grad_()
    y = layer.torch_op(x)
    assert torch.equal(y.detach(), layer.torch_op(x.detach()))
    with pytest.raises(RuntimeError):
        y.sum().backward()


# ---- CUDA ----------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_cuda_op_matches_the_reference(dtype):
    seed = seed_of(f"cuda-ref-{dtype}")
    layer, w, c = make_layer(dtype, "cuda", seed, shared=True)
    reference = fusedmoe.Layer(c, w, "reference")
    x = randn((2, 33, HIDDEN), TORCH_DTYPES[dtype], seed + 1)
    got = layer.torch_op(x.cuda())
    assert got.is_cuda and got.shape == x.shape and got.dtype == x.dtype
    want = reference(x.reshape(-1, HIDDEN), out=torch.empty(66, HIDDEN, dtype=torch.float32))
    check_close(got.reshape(-1, HIDDEN), want, dtype, f"cuda {dtype}, seed {seed}")


@needs_cuda
def test_cuda_compile_fullgraph_equals_eager():
    seed = seed_of("cuda-compile")
    layer, _, _ = make_layer("bf16", "cuda", seed)
    moe = MoE(layer)
    compiled = torch.compile(lambda x: moe(x) * 2, fullgraph=True)
    x = randn((2, 9, HIDDEN), torch.bfloat16, seed + 1, "cuda")
    assert torch.equal(compiled(x), moe(x) * 2)


@needs_cuda
def test_cuda_graph_capture_replays_new_inputs():
    """Captured on a side stream (as torch.cuda.graph does), replayed after copying new tokens into
    the static input: each replay equals an eager call on those tokens, and the workspace came
    from the graph's memory pool (nothing outside torch allocates inside the capture)."""
    seed = seed_of("cuda-graph")
    layer, _, _ = make_layer("bf16", "cuda", seed, shared=True)
    moe = MoE(layer)
    static_x = randn((16, HIDDEN), torch.bfloat16, seed, "cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream, as the torch docs advise
        for _ in range(2):
            moe(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = moe(static_x)
    for i in range(3):
        fresh = randn((16, HIDDEN), torch.bfloat16, seed + 10 + i, "cuda")
        static_x.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_y, moe(fresh)), f"replay {i}, seed {seed}"


@needs_cuda
def test_cuda_op_runs_on_the_current_stream():
    seed = seed_of("cuda-stream")
    layer, _, _ = make_layer("bf16", "cuda", seed)
    x = randn((64, HIDDEN), torch.bfloat16, seed, "cuda")
    want = layer.torch_op(x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = layer.torch_op(x)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(got, want)


def test_numpy_call_and_torch_op_give_the_same_bits():
    layer, _, _ = make_layer("f32", "cpu", seed_of("numpy"))
    x = np.random.default_rng(0).standard_normal((4, HIDDEN)).astype(np.float32)
    assert np.array_equal(layer(x), layer.torch_op(torch.from_numpy(x)).numpy())
