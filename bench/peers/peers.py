#!/usr/bin/env python3
"""The peers benchmark: one MoE layer forward timed for four implementations in ONE process, on
the SAME inputs, next to its floor (PERF.md). See bench/peers/README.md.

  hf-loop           Hugging Face MoE block's per-expert loop (eager; host syncs, no graph)
  torch-grouped-mm  sort by expert -> gather -> torch._grouped_mm (gate_up) -> silu*up ->
                    torch._grouped_mm (down) -> routing weight -> unsort -> sum over k
  vllm-algorithm    the published vLLM fused_moe algorithm in Triton (moe_triton.py)
  fusedmoe-cuda     this library, through its C ABI (fusedmoe_abi.py) from a shared library

Modes: `experts` (routing given: ids/weights from softmax top-k of Gaussian logits; the vLLM
peer's align precomputed; fusedmoe uses FUSEDMOE_ROUTING_PRECOMPUTED) and `layer` (router GEMM,
each implementation's top-k, align, GEMMs, activation and sum, with the preset's routing).

GPU-only imports (torch, triton) happen inside functions, so `--help` works anywhere.
"""

import argparse
import datetime
import gc
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

# name: H, I, E, k, routing ("softmax" / "sigmoid-grouped"), renormalize, n_group, topk_group,
# scaling. qwen2-57b-a14b without its shared expert; deepseek-v3 routed experts only.
PRESETS = {
    "mixtral-8x7b": dict(H=4096, I=14336, E=8, k=2, routing="softmax", renorm=True),
    "qwen3-30b-a3b": dict(H=2048, I=768, E=128, k=8, routing="softmax", renorm=True),
    "qwen2-57b-a14b": dict(H=3584, I=2560, E=64, k=8, routing="softmax", renorm=False),
    "deepseek-v3": dict(H=7168, I=2048, E=256, k=8, routing="sigmoid-grouped", renorm=True,
                        n_group=8, topk_group=4, scaling=2.5),
}
TOKENS = [1, 16, 64, 256, 1024, 4096]
QUICK_TOKENS = [1, 64, 1024]
IMPLS = ["hf-loop", "torch-grouped-mm", "vllm-algorithm", "fusedmoe-cuda"]
MODES = ["experts", "layer"]
GRAPH_MAX_TOKENS = 64

# Tiles as (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages).
# vLLM's published H200 table for E=8, N=14336 (Mixtral-8x7B), keyed by token count; the nearest
# key to T is used, as vLLM does.
MIXTRAL_H200_TILES = {
    1: (16, 128, 128, 16, 4, 5), 2: (32, 64, 128, 1, 4, 5), 4: (16, 64, 64, 1, 4, 5),
    8: (16, 128, 128, 1, 4, 5), 16: (16, 64, 256, 16, 4, 3), 24: (16, 128, 256, 16, 4, 2),
    32: (16, 128, 128, 16, 8, 3), 48: (32, 128, 128, 16, 4, 3), 64: (32, 128, 128, 64, 4, 3),
    96: (32, 128, 128, 64, 4, 3), 128: (64, 128, 128, 1, 8, 4), 256: (128, 256, 64, 1, 8, 4),
    512: (128, 256, 64, 16, 8, 4), 1024: (128, 256, 64, 16, 8, 4),
    1536: (128, 256, 64, 16, 8, 4), 2048: (128, 256, 64, 32, 8, 4),
    3072: (128, 256, 64, 16, 8, 4), 4096: (128, 256, 64, 16, 8, 4),
}
# For the other presets: the fastest of these 8 (PERF.md), timed once per cell.
SEARCH_TILES = [
    (16, 64, 128, 1, 4, 4), (16, 128, 128, 16, 4, 4), (32, 64, 128, 1, 4, 4),
    (32, 128, 128, 16, 4, 3), (64, 128, 64, 8, 4, 4), (64, 128, 128, 1, 8, 4),
    (128, 128, 64, 8, 8, 4), (128, 256, 64, 16, 8, 4),
]
REL_ERR_LIMIT = 2e-2
DEFAULT_L2_BYTES = 60 * 1024 * 1024

_T0 = time.time()


def log(msg):
    print(f"[peers {time.time() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def tile_dict(tile, source):
    bm, bn, bk, gm, w, s = tile
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": gm, "num_warps": w,
            "num_stages": s, "source": source}


def mixtral_tile(tokens):
    key = min(MIXTRAL_H200_TILES, key=lambda m: (abs(m - tokens), m))
    return MIXTRAL_H200_TILES[key]


def parse_list(text, conv=str):
    return [conv(v) for v in text.split(",") if v.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time MoE layer peers (HF loop, torch._grouped_mm, the vLLM fused_moe "
        "algorithm in Triton) and fusedmoe's CUDA backend in one process on the same inputs; "
        "append JSON lines to --out.")
    p.add_argument("--presets", default=",".join(PRESETS),
                   help="comma list of presets (default: all: %(default)s)")
    p.add_argument("--tokens", default=None,
                   help="comma list of token counts (default 1,16,64,256,1024,4096; "
                   "--quick: 1,64,1024)")
    p.add_argument("--zipf", default=None, metavar="S[,S...]",
                   help="Zipf-skewed routing with exponent S over experts instead of uniform "
                   "(a comma list runs each); add --with-uniform to run uniform too")
    p.add_argument("--with-uniform", action="store_true",
                   help="with --zipf: also run uniform routing")
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per measurement, median reported (default 20; "
                   "--quick: 10); hf-loop caps its reps on slow cells")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 3)")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma list (default: %(default)s)")
    p.add_argument("--modes", default=",".join(MODES), help="comma list (default: %(default)s)")
    p.add_argument("--out", default=os.path.join("bench", "results", "h200", "peers.jsonl"),
                   help="JSON lines appended here (default: %(default)s, relative to the "
                   "repository root)")
    p.add_argument("--lib", default=None,
                   help="fusedmoe shared library (default: build/libfusedmoe.so, else "
                   "build-shared/libfusedmoe.so)")
    p.add_argument("--commit", default=None,
                   help="commit of the library under test (default: `git rev-parse HEAD`; a "
                        "copied tree's git state can be stale, so pass the build's commit)")
    p.add_argument("--quick", action="store_true",
                   help="fewer tokens (1,64,1024), 10 reps, short tile search and hf-loop budget")
    p.add_argument("--hf-budget-s", type=float, default=None,
                   help="hf-loop: cap reps so one measurement takes about this long "
                   "(default 1.5 s; --quick 0.4 s); at least 5 reps")
    p.add_argument("--graph-max-tokens", type=int, default=GRAPH_MAX_TOKENS,
                   help="time through a CUDA graph when T <= this (default %(default)s)")
    p.add_argument("--no-graph", action="store_true", help="never use CUDA graphs")
    p.add_argument("--seed", type=int, default=0, help="weights/inputs seed (default 0)")
    p.add_argument("--max-minutes", type=float, default=9.0,
                   help="start no new cell after this many minutes (the results so far are "
                   "kept and the table printed; default %(default)s)")
    a = p.parse_args(argv)
    a.presets = parse_list(a.presets)
    for name in a.presets:
        if name not in PRESETS:
            p.error(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    a.tokens = parse_list(a.tokens, int) if a.tokens else (QUICK_TOKENS if a.quick else TOKENS)
    if any(t < 1 for t in a.tokens):
        p.error("--tokens must be >= 1")
    a.impls = parse_list(a.impls)
    for name in a.impls:
        if name not in IMPLS:
            p.error(f"unknown impl {name!r}; known: {', '.join(IMPLS)}")
    a.modes = parse_list(a.modes)
    for name in a.modes:
        if name not in MODES:
            p.error(f"unknown mode {name!r}; known: {', '.join(MODES)}")
    if a.zipf:
        a.skews = (["uniform"] if a.with_uniform else []) + [
            f"zipf-{float(s):g}" for s in parse_list(a.zipf)]
    else:
        a.skews = ["uniform"]
    if a.reps is None:
        a.reps = 10 if a.quick else 20
    if a.warmup is None:
        a.warmup = 2 if a.quick else 3
    if a.hf_budget_s is None:
        a.hf_budget_s = 0.4 if a.quick else 1.5
    a.search_reps = 5 if a.quick else 10
    if a.reps < 1:
        p.error("--reps must be >= 1")
    return a


def skew_exponent(skew):
    return None if skew == "uniform" else float(skew.split("-", 1)[1])


def git_commit(given):
    if given:
        return given
    try:
        r = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                           text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except Exception:
        pass
    return "unknown"


def default_lib():
    for rel in ("build/libfusedmoe.so", "build-shared/libfusedmoe.so"):
        path = os.path.join(REPO, rel)
        if os.path.exists(path):
            return path
    return os.path.join(REPO, "build/libfusedmoe.so")


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    pos = (len(sorted_vals) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


# =============================================================================================
# Everything below runs on the GPU machine (torch imported in main()).
# =============================================================================================
torch = None
F = None


def import_gpu_modules():
    global torch, F
    import torch as _torch
    import torch.nn.functional as _F
    torch, F = _torch, _F
    if not torch.cuda.is_available():
        raise SystemExit("peers.py: no CUDA device visible to torch")
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference and router stay fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


# ---- the ceilings ---------------------------------------------------------------------------
def time_cuda(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return sorted(s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends))  # seconds


def measure_read_bw():
    """Bytes read per second by a read-only reduction over 4 GiB (best of torch.sum and a Triton
    read kernel, each the median of 20 passes)."""
    n = 1 << 30  # 4 GiB of fp32
    buf = torch.empty(n, dtype=torch.float32, device="cuda")
    buf.normal_()
    nbytes = buf.numel() * buf.element_size()
    results = {}
    t = statistics.median(time_cuda(lambda: torch.sum(buf), 20, 3))
    results["torch.sum"] = nbytes / t
    try:
        import moe_triton
        partial = moe_triton.read_sum(buf)
        t = statistics.median(time_cuda(lambda: moe_triton.read_sum(buf, partial), 20, 3))
        results["triton-read"] = nbytes / t
    except Exception as ex:  # the torch.sum figure stands alone
        log(f"triton read kernel failed ({type(ex).__name__}: {ex}); using torch.sum only")
    buf = None
    torch.cuda.empty_cache()
    best = max(results, key=results.get)
    return results[best], best, results


def measure_bf16_rate():
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    t = statistics.median(time_cuda(lambda: torch.matmul(a, b), 20, 5))
    a = b = None
    torch.cuda.empty_cache()
    return 2.0 * n ** 3 / t


# ---- timing ---------------------------------------------------------------------------------
class Timer:
    def __init__(self, l2_bytes):
        self.flush_buf = torch.empty(max(4 * l2_bytes, 256 << 20), dtype=torch.uint8,
                                     device="cuda")

    def run(self, fn, reps, warmup, flush, graph):
        """Returns (sorted µs list, graph_used, note). fn() must be re-callable; with graph=True
        it is captured once (after warm-up on a side stream) and replayed. With flush, L2 is
        overwritten before each repetition, outside the timed interval."""
        note = None
        run = fn
        g = None
        if graph:
            try:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        fn()
                torch.cuda.current_stream().wait_stream(s)
                torch.cuda.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    fn()
                run = g.replay
            except Exception as ex:
                note = f"graph capture failed, timed eagerly: {type(ex).__name__}: {ex}"[:400]
                g = None
                run = fn
                try:
                    torch.cuda.synchronize()
                except Exception:
                    pass
        for _ in range(warmup):
            run()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            if flush:
                self.flush_buf.zero_()
            starts[i].record()
            run()
            ends[i].record()
        torch.cuda.synchronize()
        us = sorted(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))
        del g
        return us, run is not fn, note

    def one_call_s(self, fn):
        fn()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e) * 1e-3


# ---- routing ----------------------------------------------------------------------------------
def select_topk(logits, p, corr_bias):
    """The preset's routing on fp32 logits [T, E]: returns (weights fp32 [T, k], ids int32)."""
    k = p["k"]
    if p["routing"] == "softmax":
        probs = torch.softmax(logits, dim=-1)
        w, ids = torch.topk(probs, k, dim=-1)
        if p["renorm"]:
            w = w / w.sum(dim=-1, keepdim=True)
        return w, ids.to(torch.int32)
    # DeepSeek-V3: sigmoid scores; selection on score + correction bias restricted to the best
    # topk_group of n_group groups (group score = sum of its top 2); weights are the unbiased
    # scores renormalised and scaled.
    t, e = logits.shape
    g = p["n_group"]
    s = torch.sigmoid(logits)
    c = s + corr_bias if corr_bias is not None else s
    group_score = c.view(t, g, e // g).topk(2, dim=-1).values.sum(dim=-1)
    keep = group_score.topk(p["topk_group"], dim=-1).indices
    gmask = torch.zeros((t, g), dtype=torch.bool, device=logits.device)
    gmask.scatter_(1, keep, True)
    emask = gmask.unsqueeze(-1).expand(t, g, e // g).reshape(t, e)
    c = c.masked_fill(~emask, float("-inf"))
    ids = c.topk(k, dim=-1).indices
    w = s.gather(1, ids)
    if p["renorm"]:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    w = w * p.get("scaling", 1.0)
    return w, ids.to(torch.int32)


def routing_stats(ids, experts):
    """The experts hit and the most rows any one of them got (the rows set the tiles' count)."""
    rows = torch.bincount(ids.flatten().long(), minlength=experts)
    return {"experts_hit": int((rows > 0).sum()), "rows_max": int(rows.max())}


def route(x, router, p, corr_bias):
    """Router GEMM in fp32 (x·Wᵀ, router [E, H] fp32) and the preset's top-k."""
    logits = torch.mm(x.float(), router.t())
    return select_topk(logits, p, corr_bias)


def experts_only_routing(logits, p):
    """Routing given to the experts-only mode: softmax top-k of the Gaussian logits."""
    probs = torch.softmax(logits, dim=-1)
    w, ids = torch.topk(probs, p["k"], dim=-1)
    if p["renorm"]:
        w = w / w.sum(dim=-1, keepdim=True)
    return w.contiguous(), ids.to(torch.int32).contiguous()


# ---- the fp32 reference -------------------------------------------------------------------------
def reference(x, w13, w2, topk_w, topk_ids):
    t, h = x.shape
    inter = w2.shape[2]
    out = torch.zeros((t, h), dtype=torch.float32, device=x.device)
    xf = x.float()
    ids = topk_ids.long()
    for e in torch.unique(ids).tolist():
        tok, slot = torch.where(ids == e)
        hcat = xf.index_select(0, tok) @ w13[e].float().t()
        act = F.silu(hcat[:, :inter]) * hcat[:, inter:]
        y = act @ w2[e].float().t()
        out.index_add_(0, tok, y * topk_w[tok, slot].float().unsqueeze(1))
    return out


def rel_l2(out, ref):
    d = (out.float() - ref).norm().item()
    n = ref.norm().item()
    return d / n if n > 0 else (0.0 if d == 0 else float("inf"))


# ---- the peers ----------------------------------------------------------------------------------
def hf_loop(x, w13, w2, topk_w, topk_ids, num_experts):
    """Hugging Face MoE block: for each expert hit, gather its tokens, run gate/up/down with
    F.linear, silu(gate)*up, scale by the routing weight and index_add_ into the output."""
    inter = w2.shape[2]
    out = torch.zeros_like(x)
    w = topk_w.to(x.dtype)
    mask = F.one_hot(topk_ids.long(), num_classes=num_experts).permute(2, 1, 0)  # [E, k, T]
    hit = (mask.sum(dim=(1, 2)) > 0).nonzero().flatten().tolist()
    for e in hit:
        slot, tok = torch.where(mask[e])
        xs = x.index_select(0, tok)
        gate = F.linear(xs, w13[e, :inter])
        up = F.linear(xs, w13[e, inter:])
        y = F.linear(F.silu(gate) * up, w2[e])
        out.index_add_(0, tok, y * w[tok, slot].unsqueeze(1))
    return out


class GroupedMM:
    """sort by expert -> gather -> _grouped_mm(gate_up) -> silu*up -> _grouped_mm(down) ->
    routing weight -> unsort -> sum over k. mat_b is [E, K, N]: a transposed view of the
    [E, N, K] weights (K-contiguous, which _grouped_mm accepts), or a contiguous copy made once
    if this PyTorch rejects the view."""

    def __init__(self, w13, w2):
        self.num_experts = w13.shape[0]
        self.inter = w2.shape[2]
        self.layout = "transposed-view"
        self.b13 = w13.transpose(1, 2)
        self.b2 = w2.transpose(1, 2)
        try:
            self._probe()
        except Exception as ex:
            log(f"torch._grouped_mm rejected the transposed view ({type(ex).__name__}: {ex}); "
                "using contiguous [E, K, N] copies")
            self.layout = "contiguous-copy"
            self.b13 = w13.transpose(1, 2).contiguous()
            self.b2 = w2.transpose(1, 2).contiguous()
            self._probe()

    def _probe(self):
        h = self.b13.shape[1]
        xs = torch.randn((16, h), dtype=self.b13.dtype, device=self.b13.device)
        offs = torch.full((self.num_experts,), 16, dtype=torch.int32, device=xs.device)
        y = torch._grouped_mm(xs, self.b13, offs=offs)
        a = F.silu(y[:, :self.inter]) * y[:, self.inter:]
        torch._grouped_mm(a, self.b2, offs=offs)
        torch.cuda.synchronize()

    def __call__(self, x, topk_w, topk_ids):
        t, h = x.shape
        k = topk_ids.shape[1]
        flat = topk_ids.reshape(-1).long()
        order = torch.argsort(flat, stable=True)
        counts = torch.zeros(self.num_experts, dtype=torch.int32, device=x.device)
        counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
        offs = torch.cumsum(counts, 0, dtype=torch.int32)
        xs = x.index_select(0, order // k)
        hcat = torch._grouped_mm(xs, self.b13, offs=offs)
        act = F.silu(hcat[:, :self.inter]) * hcat[:, self.inter:]
        y = torch._grouped_mm(act, self.b2, offs=offs)
        y = y * topk_w.reshape(-1).index_select(0, order).to(y.dtype).unsqueeze(1)
        out_k = torch.empty_like(y)
        out_k.index_copy_(0, order, y)
        return out_k.view(t, k, h).sum(dim=1)


class FusedMoeCuda:
    """fusedmoe's CUDA backend through the C ABI."""

    def __init__(self, lib_path):
        import fusedmoe_abi as fa
        self.fa = fa
        self.lib = fa.Library(lib_path)  # raises with a readable reason
        if not self.lib.backend_available(fa.BACKEND_CUDA):
            raise RuntimeError(f"{lib_path}: fusedmoe_backend_available(FUSEDMOE_BACKEND_CUDA) "
                               "is 0 (built without the CUDA backend, or no GPU seen)")
        self.path = lib_path
        self.layer = None
        self.weights_from = None

    def config(self, preset, p, mode):
        fa = self.fa
        try:
            cfg = self.lib.preset_config(preset)
        except Exception:
            cfg = self.lib.default_config()
            cfg.routing_kind = fa.ROUTING_SOFTMAX_TOPK
        cfg.hidden, cfg.intermediate, cfg.experts, cfg.top_k = p["H"], p["I"], p["E"], p["k"]
        cfg.shared_intermediate = 0  # routed experts only
        cfg.shared_gated = 0
        cfg.dtype = fa.BF16
        cfg.activation = 0  # SwiGLU
        cfg.expert_bias = 0
        cfg.router_bias = 0
        if mode == "experts":
            cfg.routing_kind = fa.ROUTING_PRECOMPUTED
            cfg.n_group, cfg.topk_group, cfg.correction_bias, cfg.scaling = 1, 1, 0, 1.0
        elif p["routing"] == "softmax":
            cfg.routing_kind = fa.ROUTING_SOFTMAX_TOPK
            cfg.renormalize = 1 if p["renorm"] else 0
            cfg.n_group, cfg.topk_group, cfg.correction_bias, cfg.scaling = 1, 1, 0, 1.0
        else:
            cfg.routing_kind = fa.ROUTING_SIGMOID_TOPK
            cfg.renormalize = 1 if p["renorm"] else 0
            cfg.n_group, cfg.topk_group = p["n_group"], p["topk_group"]
            cfg.correction_bias = 1
            cfg.scaling = p["scaling"]
        return cfg

    def _tensor(self, t, dtype):
        fa = self.fa
        kind = fa.DEVICE_CUDA if t.is_cuda else fa.DEVICE_CPU
        index = t.device.index if t.is_cuda else 0
        return fa.tensor(t.data_ptr(), dtype, kind, index or 0, list(t.shape), list(t.stride()))

    def create(self, preset, p, mode, host, dev):
        """host/dev: dicts of w13, w2, router, corr (CPU and CUDA tensors). The CUDA backend
        packs from host memory; should this build want device weights (device_mismatch), the
        CUDA tensors are passed instead."""
        fa = self.fa
        self.close()
        cfg = self.config(preset, p, mode)
        last = None
        for source in (host, dev):
            w = fa.new_weights()
            w.gate_up = self._tensor(source["w13"], fa.BF16)
            w.down = self._tensor(source["w2"], fa.BF16)
            if mode == "layer":
                w.router = self._tensor(source["router"], fa.F32)
                if cfg.correction_bias:
                    w.correction_bias = self._tensor(source["corr"], fa.F32)
            try:
                self.layer = fa.Layer(self.lib, cfg, w, fa.BACKEND_CUDA)
                self.weights_from = "host" if source is host else "device"
                torch.cuda.synchronize()
                return
            except fa.FusedMoeError as ex:
                last = ex
                if ex.status != fa.DEVICE_MISMATCH:
                    break
        raise last

    def prepare(self, x, topk_w=None, topk_ids=None):
        """Builds the forward args for this cell once; returns fn() -> out."""
        fa = self.fa
        t = x.shape[0]
        out = torch.empty_like(x)
        ws_bytes = self.layer.workspace_size(t)
        ws = torch.empty(max(ws_bytes, 256), dtype=torch.uint8, device=x.device)
        a = fa.new_forward_args()
        a.x = self._tensor(x, fa.BF16)
        a.out = self._tensor(out, fa.BF16)
        a.workspace = ws.data_ptr()
        a.workspace_bytes = ws_bytes
        if topk_ids is not None:
            a.topk_ids = self._tensor(topk_ids, fa.I32)
            a.topk_weights = self._tensor(topk_w, fa.F32)
        keep = (x, out, ws, topk_w, topk_ids)
        layer = self.layer

        def fn():
            a.stream = torch.cuda.current_stream().cuda_stream
            layer.forward(a)
            return keep[1]

        fn.workspace_bytes = ws_bytes
        fn.kernels = self.layer.describe(t)
        return fn

    def close(self):
        if self.layer is not None:
            self.layer.close()
            self.layer = None


# ---- one preset ----------------------------------------------------------------------------------
class PresetState:
    def __init__(self, name, seed):
        p = PRESETS[name]
        self.name, self.p = name, p
        h, inter, e = p["H"], p["I"], p["E"]
        g = torch.Generator(device="cuda")
        g.manual_seed(zlib.crc32(f"{seed}|{name}|weights".encode()))
        # bf16 Gaussian weights scaled 1/sqrt(fan_in)
        self.w13 = torch.randn((e, 2 * inter, h), generator=g, dtype=torch.bfloat16,
                               device="cuda").mul_(h ** -0.5)
        self.w2 = torch.randn((e, h, inter), generator=g, dtype=torch.bfloat16,
                              device="cuda").mul_(inter ** -0.5)
        self.router = torch.randn((e, h), generator=g, dtype=torch.float32,
                                  device="cuda").mul_(h ** -0.5)
        self.corr = (0.1 * torch.randn((e,), generator=g, dtype=torch.float32, device="cuda")
                     if p["routing"] == "sigmoid-grouped" else None)
        self.perm = torch.randperm(e, generator=g, device="cuda")  # Zipf rank -> expert
        self.gmm = None
        self.host = None
        self.expert_bytes = 3 * h * inter * 2

    def zipf_bias(self, s):
        e = self.p["E"]
        ranks = torch.arange(1, e + 1, dtype=torch.float64, device="cuda")
        logp = -s * torch.log(ranks)
        logp = logp - torch.logsumexp(logp, 0)
        bias = torch.empty(e, dtype=torch.float64, device="cuda")
        bias[self.perm] = logp
        return bias

    def cell_inputs(self, tokens, skew, seed):
        """x [T, H] bf16 and experts-only routing (fp32 weights, int32 ids), deterministic per
        cell. Zipf: expert e's logit is shifted by log p_e (p_e ∝ rank^-s): added to the
        Gaussian logits for experts-only, and put into x (x = z + mu with W mu = bias) for the
        router of the whole-layer mode."""
        p = self.p
        g = torch.Generator(device="cuda")
        g.manual_seed(zlib.crc32(f"{seed}|{self.name}|{tokens}|{skew}".encode()))
        z = torch.randn((tokens, p["H"]), generator=g, dtype=torch.float32, device="cuda")
        logits = torch.randn((tokens, p["E"]), generator=g, dtype=torch.float32, device="cuda")
        s = skew_exponent(skew)
        if s is not None:
            bias = self.zipf_bias(s)
            w = self.router.double()
            mu = w.t() @ torch.linalg.solve(w @ w.t(), bias)
            z = z + mu.float()
            logits = logits + bias.float()
        x = z.to(torch.bfloat16).contiguous()
        w_exp, ids_exp = experts_only_routing(logits, p)
        return x, w_exp, ids_exp

    def host_copies(self):
        if self.host is None:
            t0 = time.time()
            self.host = {"w13": self.w13.cpu(), "w2": self.w2.cpu(), "router": self.router.cpu(),
                         "corr": self.corr.cpu() if self.corr is not None else None}
            log(f"{self.name}: host copy of the weights for fusedmoe ({time.time() - t0:.1f}s)")
        return self.host

    def device_dict(self):
        return {"w13": self.w13, "w2": self.w2, "router": self.router, "corr": self.corr}


# ---- the run ---------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import_gpu_modules()
    command = " ".join(shlex.quote(a) for a in ["python3"] + sys.argv)
    commit = git_commit(args.commit)
    gpu = torch.cuda.get_device_name(0)
    props = torch.cuda.get_device_properties(0)
    l2_bytes = int(getattr(props, "L2_cache_size", 0) or DEFAULT_L2_BYTES)
    out_path = args.out if os.path.isabs(args.out) else os.path.join(REPO, args.out)
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    log(f"{gpu}, L2 {l2_bytes / 2**20:.0f} MiB, torch {torch.__version__}, commit {commit}")

    # ---- implementations available ----
    impls = list(args.impls)
    skipped = {}
    mt = None
    if "vllm-algorithm" in impls:
        try:
            import moe_triton as mt  # noqa: F811
            import triton
            log(f"triton {triton.__version__}")
        except Exception as ex:
            skipped["vllm-algorithm"] = f"cannot import triton / moe_triton: {ex}"
    if "torch-grouped-mm" in impls and not hasattr(torch, "_grouped_mm"):
        skipped["torch-grouped-mm"] = "this PyTorch has no torch._grouped_mm"
    fm = None
    if "fusedmoe-cuda" in impls:
        lib_path = args.lib or default_lib()
        try:
            fm = FusedMoeCuda(lib_path)
            log(f"fusedmoe-cuda: {lib_path}")
        except Exception as ex:
            skipped["fusedmoe-cuda"] = f"{type(ex).__name__}: {ex}"
    for name, why in skipped.items():
        log(f"SKIPPING {name}: {why}")
    impls = [i for i in impls if i not in skipped]

    # ---- ceilings, in this process ----
    read_bw, read_src, read_all = measure_read_bw()
    rate = measure_bf16_rate()
    log("read bandwidth " + ", ".join(f"{k} {v / 1e9:.0f} GB/s" for k, v in read_all.items())
        + f" -> {read_bw / 1e9:.0f} GB/s; bf16 matmul 8192^3 {rate / 1e12:.0f} TFLOP/s")

    timer = Timer(l2_bytes)
    date = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    results = []
    tile_cache = {}
    out_file = open(out_path, "a")
    stopped = False

    def emit(rec):
        out_file.write(json.dumps(rec) + "\n")
        out_file.flush()
        results.append(rec)

    for preset in args.presets:
        if stopped or time.time() - _T0 > 60.0 * args.max_minutes:
            if not stopped:
                log(f"--max-minutes {args.max_minutes} reached: no new cells")
            stopped = True
            break
        st = PresetState(preset, args.seed)
        p = st.p
        log(f"{preset}: H {p['H']} I {p['I']} E {p['E']} k {p['k']}, experts "
            f"{(st.w13.numel() + st.w2.numel()) * 2 / 1e9:.1f} GB")
        if "torch-grouped-mm" in impls:
            try:
                st.gmm = GroupedMM(st.w13, st.w2)
            except Exception as ex:
                log(f"{preset}: torch-grouped-mm unusable: {type(ex).__name__}: {ex}")
        for mode in args.modes:
            if stopped:
                break
            fm_ok = False
            if fm is not None:
                try:
                    t0 = time.time()
                    fm.create(preset, p, mode, st.host_copies(), st.device_dict())
                    fm_ok = True
                    log(f"{preset}: fusedmoe layer ({mode}) created from {fm.weights_from} "
                        f"weights in {time.time() - t0:.1f}s")
                except Exception as ex:
                    log(f"{preset}: fusedmoe-cuda layer ({mode}) not created: {ex}")
            for tokens in args.tokens:
                for skew in args.skews:
                    if time.time() - _T0 > 60.0 * args.max_minutes:
                        if not stopped:
                            log(f"--max-minutes {args.max_minutes} reached: no new cells")
                        stopped = True
                        continue
                    try:
                        run_cell(args, st, mode, tokens, skew, impls, fm if fm_ok else None, mt,
                                 timer, tile_cache, read_bw, rate, l2_bytes, emit,
                                 dict(gpu=gpu, commit=commit, date=date, command=command,
                                      read_bw_gbps=round(read_bw / 1e9, 1),
                                      bf16_tflops=round(rate / 1e12, 1)))
                    except Exception as ex:
                        log(f"{preset} T={tokens} {skew} {mode}: cell aborted: "
                            f"{type(ex).__name__}: {ex}")
                        try:
                            torch.cuda.synchronize()
                        except Exception:
                            pass
            if fm is not None:
                fm.close()
        del st
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    out_file.close()
    print_table(results, impls)
    if skipped:
        print("\nskipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    print(f"\n{len(results)} records appended to {out_path}")
    return 0


def run_cell(args, st, mode, tokens, skew, impls, fm, mt, timer, tile_cache, read_bw, rate,
             l2_bytes, emit, common):
    p = st.p
    h, inter, e, k = p["H"], p["I"], p["E"], p["k"]
    x, w_exp, ids_exp = st.cell_inputs(tokens, skew, args.seed)
    corr = st.corr

    if mode == "experts":
        w_ref, ids_ref = w_exp, ids_exp
    else:
        w_ref, ids_ref = route(x, st.router, p, corr)
    ref = reference(x, st.w13, st.w2, w_ref, ids_ref)
    routing = routing_stats(ids_ref, e)
    hit = routing["experts_hit"]
    nbytes = hit * 3 * h * inter * 2 + 2 * tokens * h * 2
    flops = 2.0 * tokens * k * 3 * h * inter
    t_mem, t_mat = nbytes / read_bw, flops / rate
    floor_us = max(t_mem, t_mat) * 1e6
    bound = "memory" if t_mem >= t_mat else "compute"
    flush = hit * st.expert_bytes < 3 * l2_bytes
    use_graph = (not args.no_graph) and tokens <= args.graph_max_tokens

    # vLLM tile: Mixtral from the published H200 table, others the best of 8 for this cell
    tile = None
    tile_info = None
    if "vllm-algorithm" in impls:
        key = (st.name, tokens, skew)
        if key not in tile_cache:
            tile_cache[key] = choose_tile(args, st, mt, timer, x, w_exp, ids_exp, tokens, flush,
                                          use_graph)
        tile, tile_info = tile_cache[key]

    fns = {}
    if "hf-loop" in impls:
        if mode == "experts":
            fns["hf-loop"] = lambda: hf_loop(x, st.w13, st.w2, w_exp, ids_exp, e)
        else:
            fns["hf-loop"] = lambda: hf_loop(x, st.w13, st.w2, *route(x, st.router, p, corr), e)
    if "torch-grouped-mm" in impls and st.gmm is not None:
        if mode == "experts":
            fns["torch-grouped-mm"] = lambda: st.gmm(x, w_exp, ids_exp)
        else:
            fns["torch-grouped-mm"] = lambda: st.gmm(x, *route(x, st.router, p, corr))
    if "vllm-algorithm" in impls and tile is not None:
        if mode == "experts":
            al = mt.align_block_size(ids_exp, e, tile[0])  # precomputed, outside the timing
            fns["vllm-algorithm"] = lambda: mt.fused_experts(x, st.w13, st.w2, w_exp, ids_exp,
                                                             al, tile)
        else:
            def vllm_layer():
                w, ids = route(x, st.router, p, corr)
                return mt.fused_experts(x, st.w13, st.w2, w, ids,
                                        mt.align_block_size(ids, e, tile[0]), tile)
            fns["vllm-algorithm"] = vllm_layer
    if "fusedmoe-cuda" in impls and fm is not None:
        try:
            fns["fusedmoe-cuda"] = (fm.prepare(x, w_exp, ids_exp) if mode == "experts"
                                    else fm.prepare(x))
        except Exception as ex:
            log(f"fusedmoe-cuda prepare failed: {ex}")

    line = []
    for impl in impls:
        if impl not in fns:
            if impl == "vllm-algorithm":  # no tile config compiled and passed the check
                emit(record(st, tokens, skew, impl, None, floor_us, bound, common, mode, False,
                            None, tile_info, None, routing, 0, flush, "error",
                            "no tile config compiled and passed the correctness check"))
                line.append(f"{impl} ERROR")
            continue  # fusedmoe-cuda without a layer: already reported
        fn = fns[impl]
        graph = use_graph and impl != "hf-loop"
        status, err_msg, rel = "ok", None, None
        try:
            out = fn()
            torch.cuda.synchronize()
            rel = rel_l2(out, ref)
            del out
            if not (rel < REL_ERR_LIMIT):
                status, err_msg = "failed", f"rel_err {rel:.3g} >= {REL_ERR_LIMIT}"
        except Exception as ex:
            status, err_msg = "error", f"{type(ex).__name__}: {ex}"[:500]
            torch.cuda.synchronize()
        us = None
        used_graph = False
        reps = 0
        note = None
        if status == "ok":
            reps, warmup = args.reps, args.warmup
            if impl == "hf-loop":
                t1 = timer.one_call_s(fn)
                reps = max(5, min(reps, int(args.hf_budget_s / max(t1, 1e-9))))
                warmup = 1
            try:
                us, used_graph, note = timer.run(fn, reps, warmup, flush, graph)
            except Exception as ex:
                status, err_msg = "error", f"timing: {type(ex).__name__}: {ex}"[:500]
                torch.cuda.synchronize()
        if impl == "fusedmoe-cuda" and fm is not None:
            extra = (f"{fm.path}; weights packed from {fm.weights_from}; workspace "
                     f"{fn.workspace_bytes} B; kernels {fn.kernels}")
            note = f"{note}; {extra}" if note else extra
        rec = record(st, tokens, skew, impl, us, floor_us, bound, common, mode, used_graph, rel,
                     tile_info if impl == "vllm-algorithm" else None, note, routing, reps,
                     flush, status, err_msg)
        emit(rec)
        if status == "ok":
            line.append(f"{impl} {rec['us_median']:.1f}us ({100 * floor_us / rec['us_median']:.0f}%"
                        f"{', graph' if used_graph else ''})")
        else:
            line.append(f"{impl} {status.upper()} ({err_msg})")
        if status != "ok":
            log(f"{st.name} T={tokens} {skew} {mode} {impl}: {status}: {err_msg}")
    log(f"{st.name} T={tokens} {skew} {mode}: hit {hit}, at most {routing['rows_max']} rows an "
        f"expert, floor {floor_us:.1f}us ({bound}"
        f"{', L2 flushed' if flush else ''}) | " + " | ".join(line))


def choose_tile(args, st, mt, timer, x, w_exp, ids_exp, tokens, flush, use_graph):
    """(tile, tile_info dict) for the vLLM peer in this cell; (None, info) if none works."""
    p = st.p
    if st.name == "mixtral-8x7b":
        return mixtral_tile(tokens), tile_dict(mixtral_tile(tokens), "vllm-h200-table")
    ref = reference(x, st.w13, st.w2, w_exp, ids_exp)
    best, best_us, tried = None, None, []
    for tile in SEARCH_TILES:
        try:
            al = mt.align_block_size(ids_exp, p["E"], tile[0])
            fn = (lambda al=al, tile=tile:
                  mt.fused_experts(x, st.w13, st.w2, w_exp, ids_exp, al, tile))
            out = fn()
            torch.cuda.synchronize()
            rel = rel_l2(out, ref)
            del out
            if not (rel < REL_ERR_LIMIT):
                tried.append({"tile": list(tile), "error": f"rel_err {rel:.3g}"})
                continue
            us, _, _ = timer.run(fn, args.search_reps, 1, flush, use_graph)
            med = statistics.median(us)
            tried.append({"tile": list(tile), "us": round(med, 2)})
            if best_us is None or med < best_us:
                best, best_us = tile, med
        except Exception as ex:
            tried.append({"tile": list(tile), "error": f"{type(ex).__name__}: {ex}"[:200]})
            try:
                torch.cuda.synchronize()
            except Exception:
                pass
    info = tile_dict(best, "best-of-8") if best is not None else {"source": "best-of-8"}
    info["search"] = tried
    if best is None:
        log(f"{st.name} T={tokens}: no vLLM tile config worked: {tried}")
    return best, info


def record(st, tokens, skew, impl, us, floor_us, bound, common, mode, graph, rel, tile_info,
           note, routing, reps, flush, status, error):
    med = statistics.median(us) if us else None
    rec = {
        "preset": st.name,
        "tokens": tokens,
        "skew": skew,
        "impl": impl,
        "us_median": round(med, 2) if med is not None else None,
        "floor_us": round(floor_us, 2),
        "bound": bound,
        "gpu": common["gpu"],
        "commit": common["commit"],
        "mode": mode,
        "date": common["date"],
        "command": common["command"],
        "read_bw_gbps": common["read_bw_gbps"],
        "bf16_tflops": common["bf16_tflops"],
        "graph": bool(graph),
        "rel_err": float(f"{rel:.4g}") if rel is not None else None,
        "tile": tile_info,
        "us_p10": round(percentile(us, 0.1), 2) if us else None,
        "us_p90": round(percentile(us, 0.9), 2) if us else None,
        "pct_floor": round(100.0 * floor_us / med, 1) if med else None,
        **routing,
        "reps": reps,
        "l2_flush": bool(flush),
        "status": status,
    }
    if error:
        rec["error"] = error
    if note:
        rec["note"] = note
    return rec


def print_table(results, impls):
    if not results:
        print("no results")
        return
    cells = []
    by_cell = {}
    for r in results:
        key = (r["preset"], r["tokens"], r["skew"], r["mode"])
        if key not in by_cell:
            by_cell[key] = {}
            cells.append(key)
        by_cell[key][r["impl"]] = r
    cols = [i for i in IMPLS if i in impls or any(i in v for v in by_cell.values())]
    have_fm = "fusedmoe-cuda" in cols
    head = ["preset", "T", "skew", "mode", "hit", "floor µs"] + cols
    rows = []
    for key in cells:
        d = by_cell[key]
        any_rec = next(iter(d.values()))
        fm_rec = d.get("fusedmoe-cuda")
        fm_us = fm_rec["us_median"] if fm_rec else None
        row = [key[0], str(key[1]), key[2], key[3], str(any_rec["experts_hit"]),
               f"{any_rec['floor_us']:.1f}"]
        for impl in cols:
            r = d.get(impl)
            if r is None:
                row.append("-")
            elif r["us_median"] is None:
                row.append(r["status"])
            else:
                s = f"{r['us_median']:.1f} ({r['pct_floor']:.0f}%{'g' if r['graph'] else ''})"
                if have_fm and impl != "fusedmoe-cuda" and fm_us:
                    s += f" {r['us_median'] / fm_us:.2f}x"
                row.append(s)
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print()
    print("µs (% of floor; g = timed through a CUDA graph)"
          + ("; Nx = that peer's time / fusedmoe-cuda's" if have_fm else ""))
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    sys.exit(main())
