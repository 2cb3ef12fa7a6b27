#!/usr/bin/env python3
"""Hugging Face MoE blocks, unpatched against fusedmoe.hf.patch, on the GPU machine.

For each architecture a small model (2 MoE layers, randomly initialised, bf16, on the GPU) is
built from the installed transformers; its MoE weights are redrawn as Gaussians scaled by
1/sqrt(fan_in) so that outputs are O(1) and routing is spread. Then, for each T:

  hf              the model's own first MoE block, as transformers runs it by default
                  (hf_experts_impl says which experts implementation that is in v5)
  hf-eager        v5 only, when the default is not "eager": transformers' per-expert loop
  fusedmoe        the same block after fusedmoe.hf.patch (the torch op, eager)
  fusedmoe-graph  the patched block replayed from a torch.cuda.CUDAGraph (T <= --graph-max-tokens)

Each is timed with CUDA events around one call, after warm-up, as the median of --reps (p10 and
p90 too); L2 is flushed outside the timed interval before each call. Each block output is
compared with the original block evaluated in float32 on the same input (rel_err, max_abs_err).
Once per architecture the whole model's logits are compared, on the fusedmoe rows: patched
against unpatched (logits_rel_err, logits_max_abs_err, logits_argmax_agree), and both against the
model in float32 (logits_ref_err_hf, logits_ref_err_fusedmoe: the median over tokens of each
token's relative error, robust to the few tokens whose near-tied top-k any two bf16 computations
may route differently); logits_ok says whether the patched median is at most twice transformers'
own (or under 1e-2), the test suite's criterion.

--mixtral-block adds a Mixtral-8x7B-sized block (H 4096, I 14336, E 8, k 2; one layer).
--smoke shrinks every model to H 64 and may run on the CPU (wall-clock timing, no graphs): it
checks this script, not performance.

    python3 bench/peers/hf_patch.py --mixtral-block --out "$OUT/hf_patch.jsonl"

JSON lines are appended to --out, one per (arch, tokens, impl), keys in this order: arch, tokens,
impl, us_median, us_p10, us_p90, gpu, commit, dtype, H, I, E, k, shared, rel_err, max_abs_err,
then graph, reps, hf_experts_impl, the logits_* keys (fusedmoe rows), transformers, torch, date,
command, status ("ok"; an architecture that failed gets one line with status "error" and error).
The run starts no new architecture after --max-minutes. torch and transformers are imported
after argument parsing, so --help works anywhere.
"""

import argparse
import copy
import datetime
import json
import os
import shlex
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from peers import git_commit  # noqa: E402  (the same provenance as the peers' results)

# name: transformers config class and model class, config keywords. Per-layer sizes are the real
# models' where a layer is small (qwen1.5-moe-a2.7b, qwen3-30b-a3b, olmoe-1b-7b); Mixtral and
# DeepSeek-V3 are scaled down (see --mixtral-block for Mixtral's real size).
ATTENTION = dict(num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                 vocab_size=4096, bos_token_id=0, eos_token_id=1, pad_token_id=2)
MODELS = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                dict(hidden_size=2048, intermediate_size=7168, num_local_experts=8,
                     num_experts_per_tok=2, num_hidden_layers=2)),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
                       shared_expert_intermediate_size=5632, num_experts=60, num_experts_per_tok=4,
                       norm_topk_prob=False, num_hidden_layers=2)),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                  dict(hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                       num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, head_dim=128,
                       num_hidden_layers=2)),
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM",
              dict(hidden_size=2048, intermediate_size=1024, num_experts=64, num_experts_per_tok=8,
                   norm_topk_prob=False, num_hidden_layers=2)),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM",
                    dict(hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1024,
                         n_routed_experts=64, num_experts_per_tok=8, n_group=8, topk_group=4,
                         n_shared_experts=1, routed_scaling_factor=2.5, first_k_dense_replace=1,
                         num_hidden_layers=3, q_lora_rank=512, kv_lora_rank=256,
                         qk_rope_head_dim=32, qk_nope_head_dim=64, v_head_dim=64,
                         num_key_value_heads=16)),
}
MIXTRAL_BLOCK = ("MixtralConfig", "MixtralForCausalLM",
                 dict(hidden_size=4096, intermediate_size=14336, num_local_experts=8,
                      num_experts_per_tok=2, num_hidden_layers=1))
# --smoke: every model shrunk to H 64 (the expert counts kept)
SMOKE = dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=64,
             shared_expert_intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
             head_dim=16, q_lora_rank=32, kv_lora_rank=32, qk_rope_head_dim=16,
             qk_nope_head_dim=16, v_head_dim=16, vocab_size=256)
L2_FLUSH_BYTES = 256 * 1024 * 1024
LOGIT_TOKENS = 128

_T0 = time.time()


def log(msg):
    print(f"[hf_patch {time.time() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time transformers MoE blocks unpatched and patched by fusedmoe.hf.patch on "
        "the GPU; check outputs and logits; append JSON lines to --out.")
    p.add_argument("--archs", default=",".join(MODELS),
                   help="comma list (default: %(default)s)")
    p.add_argument("--tokens", default="1,16,64,256,1024",
                   help="comma list of T = batch 1 x sequence T (default: %(default)s)")
    p.add_argument("--mixtral-block", action="store_true",
                   help="also a Mixtral-8x7B-sized single block (H 4096, I 14336)")
    p.add_argument("--reps", type=int, default=20, help="timed calls, median kept (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up calls (default 5)")
    p.add_argument("--graph-max-tokens", type=int, default=256,
                   help="fusedmoe-graph for T <= this (default %(default)s)")
    p.add_argument("--out", default=os.path.join("bench", "results", "h200", "hf_patch.jsonl"),
                   help="JSON lines appended here (default: %(default)s)")
    p.add_argument("--commit", default=None,
                   help="commit of the code under test (default: `git rev-parse HEAD`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="tiny models (H 64), on the CPU when there is no GPU: checks the script")
    p.add_argument("--max-minutes", type=float, default=3.0,
                   help="start no new architecture after this many minutes (default 3)")
    a = p.parse_args(argv)
    a.archs = [s for s in a.archs.split(",") if s]
    for name in a.archs:
        if name not in MODELS:
            p.error(f"unknown arch {name!r}; known: {', '.join(MODELS)}")
    a.tokens = [int(s) for s in a.tokens.split(",") if s]
    if a.reps < 20:
        log("note: fewer than 20 reps; medians are noisier than the house rule (>= 20)")
    return a


class Bench:
    def __init__(self, args):
        import torch
        import transformers

        import fusedmoe
        import fusedmoe.hf

        self.torch, self.transformers, self.fusedmoe = torch, transformers, fusedmoe
        self.args = args
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.l2 = (torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=self.device)
                   if self.cuda else None)
        self.common = {
            "gpu": torch.cuda.get_device_name() if self.cuda else "none (cpu)",
            "commit": git_commit(args.commit),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(s) for s in sys.argv),
        }

    # ---- building --------------------------------------------------------------------------------

    def build(self, spec, seed):
        torch, t = self.torch, self.transformers
        config_name, model_name, kwargs = spec
        kwargs = {**ATTENTION, **kwargs}
        if self.args.smoke:
            kwargs.update({k: v for k, v in SMOKE.items() if k in kwargs})
        config = getattr(t, config_name)(**kwargs)
        torch.manual_seed(seed)
        with torch.device(self.device):
            model = getattr(t, model_name)(config)
        model = model.to(torch.bfloat16).eval()
        gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        with torch.no_grad():
            for _, block in self.blocks(model):
                for p in block.parameters():
                    p.normal_(generator=gen).div_(p.shape[-1] ** 0.5)
                for name, b in block.named_buffers():
                    if "correction_bias" in name:
                        b.uniform_(-0.1, 0.1, generator=gen)
        return model

    def blocks(self, model):
        names = self.fusedmoe.hf.SUPPORTED_BLOCKS
        return [(n, m) for n, m in model.named_modules() if type(m).__name__ in names]

    # ---- timing ----------------------------------------------------------------------------------

    def time_us(self, fn):
        torch = self.torch
        for _ in range(self.args.warmup):
            fn()
        if not self.cuda:  # --smoke on the CPU: wall clock
            us = []
            for _ in range(self.args.reps):
                start = time.perf_counter()
                fn()
                us.append((time.perf_counter() - start) * 1e6)
            us.sort()
            q = statistics.quantiles(us, n=10) if len(us) > 1 else [us[0]] * 9
            return statistics.median(us), q[0], q[-1]
        torch.cuda.synchronize()
        events = []
        for _ in range(self.args.reps):
            self.l2.zero_()  # flush L2, outside the timed interval
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize()
        us = sorted(s.elapsed_time(e) * 1000.0 for s, e in events)
        q = statistics.quantiles(us, n=10) if len(us) > 1 else [us[0]] * 9
        return statistics.median(us), q[0], q[-1]

    def graph_of(self, block, x):
        torch = self.torch
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                block(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = block(static_x)
        return graph, static_out

    # ---- one architecture ------------------------------------------------------------------------

    def run_arch(self, arch, spec, out_file):
        torch, args = self.torch, self.args
        first = lambda r: r[0] if isinstance(r, tuple) else r  # noqa: E731
        log(f"{arch}: building")
        model = self.build(spec, args.seed)
        cfg = model.config
        name, block = self.blocks(model)[0]
        with torch.no_grad():
            gen = torch.Generator(device=self.device).manual_seed(args.seed + 2)
            ids = torch.randint(3, cfg.vocab_size, (1, LOGIT_TOKENS), device=self.device,
                                generator=gen)
            logits_hf = model(ids).logits.float()
            inputs = {t: torch.randn(1, t, cfg.hidden_size, device=self.device, generator=gen)
                      .to(torch.bfloat16) for t in args.tokens}
            # the reference: the model in float32 (TF32 off: torch's default for matmul), with
            # transformers' per-expert loop (grouped_mm kernels may lack float32)
            twin = copy.deepcopy(model).float()
            if hasattr(twin, "set_experts_implementation"):
                twin.set_experts_implementation("eager")
            logits_ref = twin(ids).logits.float()
            refs = {t: first(twin.get_submodule(name)(x.float())) for t, x in inputs.items()}
            del twin
        hf_impl = getattr(cfg, "_experts_implementation", None)
        rows = []
        sizes = {"I": None, "E": None, "k": None, "shared": None}  # from the fusedmoe layer

        def row(t, impl, timing, output, **extra):
            err = (output.float() - refs[t]).abs()
            rows.append({"arch": arch, "tokens": t, "impl": impl, "us_median": timing[0],
                         "us_p10": timing[1], "us_p90": timing[2],
                         "gpu": self.common["gpu"], "commit": self.common["commit"],
                         "dtype": "bf16", "H": cfg.hidden_size, **sizes,
                         "rel_err": (err.norm() / refs[t].norm()).item(),
                         "max_abs_err": err.max().item(), **extra})

        with torch.no_grad():
            impls = [("hf", None)]
            if hf_impl not in (None, "eager") and hasattr(model, "set_experts_implementation"):
                impls.append(("hf-eager", "eager"))
            for impl, setting in impls:
                if setting is not None:
                    model.set_experts_implementation(setting)
                for t, x in inputs.items():
                    log(f"{arch}: {impl} T={t}")
                    timing = self.time_us(lambda: block(x))
                    row(t, impl, timing, first(block(x)), graph=False, reps=args.reps,
                        hf_experts_impl=hf_impl)
            if len(impls) > 1:
                model.set_experts_implementation(hf_impl)

            swapped = self.fusedmoe.hf.patch(model)
            log(f"{arch}: patched {len(swapped)} blocks")
            patched = model.get_submodule(name)
            c = patched.layer.config
            sizes.update(I=c["intermediate"], E=c["experts"], k=c["top_k"],
                         shared=c["shared"]["intermediate"])
            for r in rows:  # the hf rows were made before the sizes were known (same key order)
                r.update(sizes)
            logits_fm = model(ids).logits.float()
            diff = (logits_fm - logits_hf).abs()
            e_hf, e_fm = (median_token_err(x, logits_ref) for x in (logits_hf, logits_fm))
            logits = {"logits_rel_err": (diff.norm() / logits_hf.norm()).item(),
                      "logits_max_abs_err": diff.max().item(),
                      "logits_argmax_agree": (logits_fm.argmax(-1) == logits_hf.argmax(-1))
                      .float().mean().item(),
                      "logits_ref_err_hf": e_hf, "logits_ref_err_fusedmoe": e_fm,
                      "logits_ok": e_fm <= max(2 * e_hf, 1e-2)}
            log(f"{arch}: logits {logits}")
            for t, x in inputs.items():
                log(f"{arch}: fusedmoe T={t}")
                timing = self.time_us(lambda: patched(x))
                row(t, "fusedmoe", timing, first(patched(x)), graph=False, reps=args.reps,
                    hf_experts_impl=hf_impl, **logits)
                if self.cuda and t <= args.graph_max_tokens:
                    graph, static_out = self.graph_of(patched, x)
                    timing = self.time_us(graph.replay)
                    row(t, "fusedmoe-graph", timing, first(static_out), graph=True,
                        reps=args.reps, hf_experts_impl=hf_impl, **logits)
                    del graph
        for r in rows:
            r.update({k: v for k, v in self.common.items() if k not in ("gpu", "commit")},
                     status="ok")
            out_file.write(json.dumps(r) + "\n")
        out_file.flush()
        if self.cuda:
            torch.cuda.empty_cache()
        return rows

    def run(self):
        args = self.args
        plan = [(a, MODELS[a]) for a in args.archs]
        if args.mixtral_block:
            plan.append(("mixtral-8x7b-block", MIXTRAL_BLOCK))
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        all_rows = []
        with open(args.out, "a") as out_file:
            for arch, spec in plan:
                if time.time() - _T0 > args.max_minutes * 60:
                    log(f"past --max-minutes: {arch} and later not run")
                    break
                try:
                    all_rows += self.run_arch(arch, spec, out_file)
                except Exception as e:  # one architecture failing does not stop the others
                    log(f"{arch}: error: {type(e).__name__}: {e}")
                    out_file.write(json.dumps({"arch": arch, "status": "error",
                                               "error": f"{type(e).__name__}: {e}",
                                               **self.common}) + "\n")
                    out_file.flush()
                    if self.cuda:
                        self.torch.cuda.empty_cache()
        table(all_rows)


def median_token_err(x, ref):
    """The median over tokens of each token's relative L2 error."""
    return ((x - ref).norm(dim=-1) / ref.norm(dim=-1)).median().item()


def table(rows):
    cells = {}
    for r in rows:
        cells.setdefault((r["arch"], r["tokens"]), {})[r["impl"]] = r
    print(f"{'arch':20} {'T':>5} {'hf us':>9} {'fusedmoe us':>12} {'graph us':>9} {'speedup':>8} "
          f"{'rel_err':>8} {'logits ok':>9}")
    for (arch, t), by in sorted(cells.items()):
        hf, fm, fg = by.get("hf"), by.get("fusedmoe"), by.get("fusedmoe-graph")
        best = min(v["us_median"] for v in (fm, fg) if v) if (fm or fg) else None
        print(f"{arch:20} {t:5d} {hf['us_median'] if hf else float('nan'):9.1f} "
              f"{fm['us_median'] if fm else float('nan'):12.1f} "
              f"{fg['us_median'] if fg else float('nan'):9.1f} "
              f"{(hf['us_median'] / best) if hf and best else float('nan'):8.2f} "
              f"{fm['rel_err'] if fm else float('nan'):8.1e} "
              f"{str(fm['logits_ok']) if fm else '-':>9}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch
    if not torch.cuda.is_available() and not args.smoke:
        sys.exit("hf_patch.py times CUDA blocks: no GPU here (--smoke runs on the CPU)")
    import fusedmoe
    if torch.cuda.is_available() and not fusedmoe.backend_available("cuda"):
        sys.exit("this fusedmoe build has no CUDA backend (pip install . on the GPU machine)")
    Bench(args).run()


if __name__ == "__main__":
    main()
