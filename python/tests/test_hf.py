"""fusedmoe.hf.patch against the transformers blocks it replaces.

Small randomly initialised models of each architecture (H = 64, a few layers) from whichever
transformers is installed: v4 blocks (per-expert modules, (hidden, router_logits) returns) or v5
ones (fused gate_up_proj / down_proj, tensor returns). The MoE weights are redrawn as Gaussians
scaled by 1/sqrt(fan_in), so outputs are O(1) and routing is far from uniform.

What "correct" means here (CONTRACT.md: output against a float64 reference of the same math):
* Each patched block, in the model's dtype, against the original block evaluated in float64 on
  the same weights (the model's weights, already rounded to its dtype, widened to float64) and
  the same input, within CONTRACT's per-element and global tolerance for that dtype. The original
  block computed in bf16 would not do as a reference: it rounds its intermediates and misses the
  bf16 per-element bound itself.
* The whole model's logits, patched, are compared with the float64 model, next to the unpatched
  model in the same dtype: the median over tokens of the per-token relative error must be at most
  twice transformers' own (or within CONTRACT's global bound), and in float32 the global error
  too. Attention, norms and routing decisions amplify rounding through the layers, and in bf16 a
  token whose top-k scores nearly tie can be routed differently by any two computations (the
  unpatched bf16 model and the float64 one included), which moves that token's logits a lot:
  hence the median in bf16. This is the check that the patched model is wired right and no
  worse than the original; the per-block check is the one that bounds fusedmoe's own error.

With a GPU and a CUDA build the blocks run on the CUDA backend in bf16 (what it computes in);
otherwise on the CPU backend in float32 and bf16.
"""

import copy
import zlib

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fusedmoe  # noqa: E402
import fusedmoe.hf  # noqa: E402

CUDA = torch.cuda.is_available() and fusedmoe.backend_available("cuda")
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = ["bf16"] if CUDA else ["f32", "bf16"]
TORCH_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
TOL = {"f32": (1e-5, 1e-5, 1e-6), "f16": (1e-5, 1e-3, 2e-3), "bf16": (1e-5, 1.6e-2, 1e-2)}
HIDDEN, VOCAB = 64, 128


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def rel_err(out, ref) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return ((out - ref).norm() / ref.norm()).item()


def median_token_err(out, ref) -> float:
    """The median over tokens of each token's relative L2 error (rows of the last dimension)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return ((out - ref).norm(dim=-1) / ref.norm(dim=-1)).flatten().median().item()


def check_close(out, ref, dtype: str, what: str):
    """Per element |out - ref| <= atol·max(1, rms(ref)) + rtol·|ref|, and the global relative L2
    error (CONTRACT.md; the same scheme as the C++ suite's compare())."""
    atol, rtol, glob = TOL[dtype]
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} vs {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    scale = max(1.0, ref.pow(2).mean().sqrt().item())
    err = (out - ref).abs()
    bad = err > atol * scale + rtol * ref.abs()
    assert not bad.any(), (f"{what}: {int(bad.sum())}/{bad.numel()} elements out of tolerance, "
                           f"worst {err.max().item():.3g}")
    assert rel_err(out, ref) <= glob, f"{what}: global relative error {rel_err(out, ref):.3g}"


# ---- the five architectures, tiny ----------------------------------------------------------------

COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
              pad_token_id=2)


def config_for(arch: str):
    t = transformers
    if arch == "mixtral":
        return t.MixtralConfig(intermediate_size=128, num_local_experts=8, num_experts_per_tok=2,
                               **COMMON)
    if arch == "qwen2_moe":
        return t.Qwen2MoeConfig(intermediate_size=128, moe_intermediate_size=64,
                                shared_expert_intermediate_size=128, num_experts=8,
                                num_experts_per_tok=4, norm_topk_prob=False, **COMMON)
    if arch == "qwen3_moe":
        return t.Qwen3MoeConfig(intermediate_size=128, moe_intermediate_size=64, num_experts=8,
                                num_experts_per_tok=2, norm_topk_prob=True, head_dim=16, **COMMON)
    if arch == "olmoe":
        return t.OlmoeConfig(intermediate_size=64, num_experts=8, num_experts_per_tok=2,
                             norm_topk_prob=False, **COMMON)
    if arch == "deepseek_v3":  # layer 0 dense (first_k_dense_replace), layers 1 and 2 MoE
        return t.DeepseekV3Config(intermediate_size=128, moe_intermediate_size=64,
                                  n_routed_experts=16, num_experts_per_tok=4, n_group=4,
                                  topk_group=2, n_shared_experts=1, routed_scaling_factor=2.5,
                                  first_k_dense_replace=1, q_lora_rank=32, kv_lora_rank=32,
                                  qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=16,
                                  **{**COMMON, "num_hidden_layers": 3, "num_key_value_heads": 4})
    raise AssertionError(arch)


MODEL_CLASSES = {"mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
                 "qwen3_moe": "Qwen3MoeForCausalLM", "olmoe": "OlmoeForCausalLM",
                 "deepseek_v3": "DeepseekV3ForCausalLM"}
MOE_LAYERS = {"mixtral": 2, "qwen2_moe": 2, "qwen3_moe": 2, "olmoe": 2, "deepseek_v3": 2}
ARCHS = list(MODEL_CLASSES)


def moe_blocks(model):
    return [(n, m) for n, m in model.named_modules()
            if type(m).__name__ in fusedmoe.hf.SUPPORTED_BLOCKS]


def make_model(arch: str, seed: int):
    """A float32 model on the CPU, its MoE weights redrawn (see the module docstring)."""
    torch.manual_seed(seed)
    model = getattr(transformers, MODEL_CLASSES[arch])(config_for(arch)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, block in moe_blocks(model):
            for pname, p in block.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            for bname, b in block.named_buffers():
                if "correction_bias" in bname:  # both signs, small: it moves selection only
                    b.copy_((torch.rand(b.shape, generator=g) - 0.5) * 0.2)
    return model


def float64_twin(model):
    """The same weights, widened to float64, on the CPU, with transformers' plain per-expert
    loop (v5's grouped_mm kernels have no float64). transformers v4's DeepSeek-V3 block adds its
    float64 expert outputs into a buffer of its float32 routing weights' dtype and fails in
    float64; it gets a float32 twin, whose own rounding (~1e-7) is far inside the tolerances."""
    for dtype in (torch.float64, torch.float32):
        twin = copy.deepcopy(model).to("cpu", dtype)
        if hasattr(twin, "set_experts_implementation"):
            twin.set_experts_implementation("eager")
        try:
            with torch.no_grad():
                for _, block in moe_blocks(twin):
                    block(torch.randn(1, 2, HIDDEN, dtype=dtype))
            return twin
        except RuntimeError:
            if dtype == torch.float32:
                raise
    raise AssertionError("unreachable")


def first_tensor(r):
    return r[0] if isinstance(r, tuple) else r


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_patched_blocks_match_float64_originals(arch, dtype):
    seed = seed_of(f"block-{arch}-{dtype}")
    model = make_model(arch, seed).to(DEVICE, TORCH_DTYPES[dtype])
    twin = float64_twin(model)
    originals = {n: m for n, m in moe_blocks(model)}
    swapped = fusedmoe.hf.patch(model)
    assert swapped == [(n, arch) for n in originals], swapped
    assert len(swapped) == MOE_LAYERS[arch]
    g = torch.Generator().manual_seed(seed + 2)
    for name, original in originals.items():
        new = model.get_submodule(name)
        assert isinstance(new, fusedmoe.hf.FusedMoEBlock)
        x = torch.randn(2, 7, HIDDEN, generator=g).to(TORCH_DTYPES[dtype])
        with torch.no_grad():
            got = new(x.to(DEVICE))
            want = twin.get_submodule(name)(x.to(twin.dtype))
            same_dtype = original(x.to(DEVICE))
        # the same kind of result as the block it replaced: a tensor, or (hidden, router_logits)
        assert type(got) is type(same_dtype)
        if isinstance(got, tuple):
            assert len(got) == len(same_dtype) == 2
            torch.testing.assert_close(got[1], same_dtype[1])  # the router logits
        out = first_tensor(got)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device.type == DEVICE
        check_close(out, first_tensor(want), dtype, f"{arch} {name} {dtype}, seed {seed}")


@pytest.mark.parametrize("arch", ARCHS)
def test_patched_model_logits(arch):
    dtype = DTYPES[0]
    seed = seed_of(f"model-{arch}-{dtype}")
    model = make_model(arch, seed).to(DEVICE, TORCH_DTYPES[dtype])
    twin = float64_twin(model)
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(seed + 3))
    with torch.no_grad():
        want = twin(ids).logits
        original = model(ids.to(DEVICE)).logits
        fusedmoe.hf.patch(model)
        got = model(ids.to(DEVICE)).logits
    assert got.shape == original.shape and got.dtype == original.dtype
    m_orig, m_got = median_token_err(original, want), median_token_err(got, want)
    assert m_got <= max(2 * m_orig, TOL[dtype][2]), (
        f"{arch} {dtype} seed {seed}: patched logits' median token error {m_got:.3g}, "
        f"transformers' own {m_orig:.3g}")
    if dtype == "f32":
        e_orig, e_got = rel_err(original, want), rel_err(got, want)
        assert e_got <= max(2 * e_orig, TOL[dtype][2]), (
            f"{arch} seed {seed}: patched logits' error {e_got:.3g}, transformers' own "
            f"{e_orig:.3g}")


def test_patched_block_compiles_with_fullgraph():
    dtype = DTYPES[0]
    model = make_model("qwen2_moe", seed_of("compile")).to(DEVICE, TORCH_DTYPES[dtype])
    name, _ = fusedmoe.hf.patch(model)[0]
    block = model.get_submodule(name)
    compiled = torch.compile(block, fullgraph=True)
    x = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(1))
    x = x.to(DEVICE, TORCH_DTYPES[dtype])
    with torch.no_grad():
        got, want = compiled(x), block(x)
    assert type(got) is type(want)
    assert torch.equal(first_tensor(got), first_tensor(want))


def test_patch_twice_and_generate():
    """A patched model still generates (KV cache, several forward calls), and patching again
    finds nothing new to swap."""
    model = make_model("qwen3_moe", seed_of("generate")).to(DEVICE, TORCH_DTYPES[DTYPES[0]])
    reference = copy.deepcopy(model)
    fusedmoe.hf.patch(model)
    assert fusedmoe.hf.patch(model) == []
    ids = torch.tensor([[5, 9, 17, 33]], device=DEVICE)
    with torch.no_grad():
        a = model.generate(ids, min_new_tokens=4, max_new_tokens=4, do_sample=False)
        b = reference.generate(ids, min_new_tokens=4, max_new_tokens=4, do_sample=False)
    assert a.shape == b.shape == (1, 8)
    if DTYPES[0] == "f32":  # greedy tokens agree when both compute in float32
        assert torch.equal(a, b)


# ---- every weight form and return convention, on small blocks written here -----------------------
# transformers shows only one of its forms per version; these blocks carry each form
# (the class name is what patch() recognises) with a plain softmax top-k MoE forward of their own.

class _Expert(torch.nn.Module):
    def __init__(self, names, hidden, inter):
        super().__init__()
        self.names = names
        for n, shape in zip(names, [(inter, hidden), (inter, hidden), (hidden, inter)]):
            setattr(self, n, torch.nn.Linear(shape[1], shape[0], bias=False))
        self.act_fn = torch.nn.SiLU()

    def forward(self, x):
        gate, up, down = (getattr(self, n) for n in self.names)
        return down(self.act_fn(gate(x)) * up(x))


class _FusedExperts(torch.nn.Module):
    """v5-style fused parameters in one of four orders (rows/columns, concatenated/interleaved)."""

    def __init__(self, e, hidden, inter, transposed, concatenated, g):
        super().__init__()
        self.is_transposed, self.is_concatenated = transposed, concatenated
        self.gate = torch.randn(e, inter, hidden, generator=g) / hidden ** 0.5
        self.up = torch.randn(e, inter, hidden, generator=g) / hidden ** 0.5
        self.down = torch.randn(e, hidden, inter, generator=g) / inter ** 0.5
        if concatenated:
            rows = torch.cat([self.gate, self.up], dim=1)
        else:
            rows = torch.stack([self.gate, self.up], dim=2).reshape(e, 2 * inter, hidden)
        self.gate_up_proj = torch.nn.Parameter(rows.transpose(1, 2) if transposed else rows)
        self.down_proj = torch.nn.Parameter(self.down.transpose(1, 2) if transposed else self.down)
        self.act_fn = torch.nn.SiLU()


def _fake_block(form: str, returns_logits: bool, hidden=64, inter=32, e=8, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    block = torch.nn.Module()
    block.top_k = k
    block.gate = torch.nn.Linear(hidden, e, bias=False)
    with torch.no_grad():
        block.gate.weight.copy_(torch.randn(e, hidden, generator=g) / hidden ** 0.5)
    if form in ("w1w3w2", "gate_proj"):
        names = ("w1", "w3", "w2") if form == "w1w3w2" else ("gate_proj", "up_proj", "down_proj")
        block.experts = torch.nn.ModuleList(_Expert(names, hidden, inter) for _ in range(e))
        with torch.no_grad():
            for p in block.experts.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
        gate = torch.stack([getattr(x, names[0]).weight for x in block.experts]).double()
        up = torch.stack([getattr(x, names[1]).weight for x in block.experts]).double()
        down = torch.stack([getattr(x, names[2]).weight for x in block.experts]).double()
    else:
        transposed = form.startswith("transposed")
        block.experts = _FusedExperts(e, hidden, inter, transposed, form.endswith("concat"), g)
        gate, up, down = (t.double() for t in (block.experts.gate, block.experts.up,
                                               block.experts.down))

    def forward(x):  # softmax over E, top-k, renormalised (Mixtral), in float64
        rows = x.reshape(-1, hidden).double()
        probs = torch.softmax(rows @ block.gate.weight.double().t(), dim=-1)
        w, ids = probs.topk(k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        h = torch.einsum("th,teih->tei", rows, gate[ids])
        u = torch.einsum("th,teih->tei", rows, up[ids])
        y = torch.einsum("tei,tehi->teh", torch.nn.functional.silu(h) * u, down[ids])
        out = (w[..., None] * y).sum(1).reshape(x.shape)
        if returns_logits:
            logits = torch.nn.functional.linear(x.reshape(-1, hidden), block.gate.weight)
            return out.to(x.dtype), logits
        return out.to(x.dtype)

    block.forward = forward
    block.__class__ = type("MixtralSparseMoeBlock", (torch.nn.Module,), {})
    return block


@pytest.mark.parametrize("form", ["w1w3w2", "gate_proj", "rows_concat", "rows_interleaved",
                                  "transposed_concat", "transposed_interleaved"])
@pytest.mark.parametrize("returns_logits", [False, True])
def test_every_weight_form_and_return_convention(form, returns_logits):
    seed = seed_of(f"form-{form}-{returns_logits}")
    block = _fake_block(form, returns_logits, seed=seed)
    holder = torch.nn.ModuleDict({"moe": block})
    assert fusedmoe.hf.patch(holder, backend="cpu") == [("moe", "mixtral")]
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        got, want = holder["moe"](x), block(x)
    assert isinstance(got, tuple) == returns_logits
    if returns_logits:
        torch.testing.assert_close(got[1], want[1])
    check_close(first_tensor(got), first_tensor(want), "f32", f"{form}, seed {seed}")


# ---- errors --------------------------------------------------------------------------------------

def test_unsupported_activation_names_the_module_and_changes_nothing():
    holder = torch.nn.ModuleDict({"ok": _fake_block("gate_proj", False),
                                  "bad": _fake_block("gate_proj", False, seed=1)})
    for expert in holder["bad"].experts:
        expert.act_fn = torch.nn.ReLU()
    with pytest.raises(fusedmoe.Error, match=r"unsupported_config: bad \(MixtralSparseMoeBlock\)"
                       r".*activation ReLU"):
        fusedmoe.hf.patch(holder, backend="cpu")
    assert not any(isinstance(m, fusedmoe.hf.FusedMoEBlock) for m in holder.values())


def test_unknown_moe_block_and_models_without_one():
    block = _fake_block("gate_proj", False)
    block.__class__ = type("SomeOtherSparseMoeBlock", (torch.nn.Module,), {})
    with pytest.raises(fusedmoe.Error, match="moe .SomeOtherSparseMoeBlock. looks like an MoE"):
        fusedmoe.hf.patch(torch.nn.ModuleDict({"moe": block}))
    with pytest.raises(fusedmoe.Error, match="no MoE block"):
        fusedmoe.hf.patch(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(fusedmoe.Error, match="invalid_argument: backend 'gpu'"):
        fusedmoe.hf.patch(torch.nn.ModuleDict({"moe": _fake_block("gate_proj", False)}), "gpu")


def test_expert_biases_and_device_mismatch_are_refused():
    block = _fake_block("gate_proj", False)
    block.experts[3].up_proj.bias = torch.nn.Parameter(torch.zeros(32))
    with pytest.raises(fusedmoe.Error, match=r"experts\[3\].up_proj has a bias"):
        fusedmoe.hf.patch(torch.nn.ModuleDict({"moe": block}), backend="cpu")
    if not CUDA:
        with pytest.raises(fusedmoe.Error, match="weights are on cpu but the backend is cuda"):
            fusedmoe.hf.patch(torch.nn.ModuleDict({"moe": _fake_block("w1w3w2", False)}), "cuda")
