"""FlashAttention forward: tritune's tuned kernel against PyTorch SDPA (flash and cuDNN backends).

    python -m tritune.bench.flash_bench [--json out.json] [--markdown out.md]
    python -m tritune.bench.flash_bench --dry      # tiny CPU run under the Triton interpreter

The sweep follows the FlashAttention papers' setup: B*S = 16k tokens and Hq*D = 2048 hidden,
S from 512 to 16k, head dims 64 and 128, causal and not, bf16 by default. Throughput counts
FLOPs = 4*B*Hq*Sq*Skv*D (halved for causal with Sq = Skv), so every backend is charged the same
work whatever it skips. Each backend's output is checked against a float32 reference (on
sampled query rows, with the dtype rule of ``tritune.kernels.compare``) before it is timed; a
backend that is unavailable or wrong gets no number. GPU times are the median of
``triton.testing.do_bench``. The ``--dry`` mode runs tiny shapes on CPU through the interpreter:
it checks the pipeline, and its times mean nothing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tritune.bench._common import (
    add_run_arguments,
    bench_main,
    environment,
    fmt,
    parse_config,
    progress,
    ratio,
    time_ms,
)

FULL_SEQS = (512, 1024, 2048, 4096, 8192, 16384)
DRY_SEQS = (16, 48)
BACKENDS = ("tritune", "sdpa_flash", "sdpa_cudnn")


@dataclass
class Point:
    seq: int
    batch: int
    heads: int
    head_dim: int
    causal: bool
    dtype: str
    ms: dict[str, float | None] = field(default_factory=dict)
    tflops: dict[str, float | None] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    config_rule: str = ""
    knob_ms: dict[str, float | None] = field(default_factory=dict)  # --knobs: each variant's time

    @property
    def flops(self) -> float:
        f = 4.0 * self.batch * self.heads * self.seq * self.seq * self.head_dim
        return f / 2 if self.causal else f


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tritune.bench.flash_bench",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dry", action="store_true",
                   help="tiny shapes on CPU under TRITON_INTERPRET=1 (pipeline check; times are meaningless)")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"), help="input dtype (default bf16)")
    p.add_argument("--seqs", type=int, nargs="+", help="sequence lengths (default 512..16384; dry: 16 48)")
    p.add_argument("--head-dims", type=int, nargs="+", help="head dims (default 64 128; dry: 32)")
    p.add_argument("--causal", choices=("both", "yes", "no"), default="both", help="causal masking (default both)")
    p.add_argument("--tokens", type=int, help="B*S tokens per point (default 16384; dry: 96)")
    p.add_argument("--hidden", type=int, help="Hq*D (default 2048; dry: 64)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="what to time")
    p.add_argument("--config", help="force a tritune config, e.g. block_m=128,block_n=64,num_warps=8,"
                                    "num_stages=3,split_diag=1,use_tma=1 (default: the runtime's tuned table)")
    p.add_argument("--knobs", action="store_true",
                   help="also time the runtime's config with each valid knob past stock Triton turned on "
                        "(warp_specialize, exp2_poly 25/50, persistent, and WS + exp2_poly), each verified; "
                        "'tritune' is the fastest, rule 'runtime+<knob>' (every variant's time in knob_ms)")
    p.add_argument("--search", type=int, default=0, metavar="N",
                   help="also time up to N configs of the search space per point (Hopper-minded "
                        "candidates first, then random valid ones) and report the fastest verified "
                        "one as 'tritune' (rule 'search'); 0 = only the runtime's config")
    add_run_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run, markdown)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from tritune.search_space import FlashAttentionConfig, FlashAttentionSpec

    device = "cpu" if args.dry else "cuda"
    if not args.dry and not torch.cuda.is_available():
        raise ValueError("no CUDA device: run on a GPU, or pass --dry for the CPU pipeline check")
    seqs = args.seqs or (DRY_SEQS if args.dry else FULL_SEQS)
    head_dims = args.head_dims or ((32,) if args.dry else (64, 128))
    tokens = args.tokens or (96 if args.dry else 16384)
    hidden = args.hidden or (64 if args.dry else 2048)
    causals = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    forced = parse_config(args.config, FlashAttentionConfig, ("split_diag", "use_tma", "warp_specialize")) if args.config else None
    notes: list[str] = []
    points: list[Point] = []
    plan = [(s, d, c) for d in head_dims for c in causals for s in seqs]
    for seq, head_dim, causal in progress(plan, "flash_bench"):
        if hidden % head_dim or tokens < seq:
            notes.append(f"skipped S={seq} D={head_dim}: tokens {tokens} < S or hidden {hidden} not a multiple of D")
            continue
        batch, heads = tokens // seq, hidden // head_dim
        point = Point(seq, batch, heads, head_dim, causal, args.dtype)
        spec = FlashAttentionSpec(batch, heads, heads, seq, seq, head_dim, args.dtype, causal)
        gen = torch.Generator(device="cpu").manual_seed(seq * 1000 + head_dim)
        q, k, v = (torch.randn(batch, heads, seq, head_dim, generator=gen).to(device=device, dtype=dtype)
                   for _ in range(3))
        for name in args.backends:
            if name == "tritune" and args.search and forced is None:
                _search(point, spec, q, k, v, causal, args, notes)
                continue
            fn, config, rule, why = _backend(name, q, k, v, causal, spec, forced, args.dry)
            if name == "tritune":
                point.config, point.config_rule = config, rule
            if fn is None:
                notes.append(f"{name} S={seq} D={head_dim} causal={causal}: {why}")
                point.ms[name] = point.tflops[name] = None
                continue
            ok, message = _check(fn, q, k, v, causal)
            if not ok:
                notes.append(f"{name} S={seq} D={head_dim} causal={causal}: wrong result, not timed ({message})")
                point.ms[name] = point.tflops[name] = None
                continue
            ms = time_ms(fn, args.dry, args.warmup, args.rep)
            point.ms[name] = ms
            point.tflops[name] = point.flops / (ms * 1e-3) / 1e12
            if name == "tritune" and args.knobs and forced is None:
                _knobs(point, spec, q, k, v, causal, args, notes, ms)
        points.append(point)
        del q, k, v
    return {
        "benchmark": "flash_attention_forward",
        "flops_formula": "4*B*Hq*Sq*Skv*D, halved for causal (Sq = Skv)",
        "timing": "median of triton.testing.do_bench" if not args.dry else "wall clock, interpreter (meaningless)",
        "dry": bool(args.dry),
        "environment": environment(args.dry),
        "setup": {"tokens": tokens, "hidden": hidden, "dtype": args.dtype},
        "points": [asdict(p) | {"flops": p.flops} for p in points],
        "notes": notes,
    }


def _backend(name: str, q, k, v, causal: bool, spec, forced, dry: bool):
    """(callable or None, config dict, config rule, reason when None) for one backend."""
    import torch

    if name == "tritune":
        from tritune import runtime
        from tritune.kernels import flash_attention as fa

        if forced is not None:
            config, rule = forced, "forced"
        else:
            sel = runtime.select(spec, q.device)
            config, rule = sel.config, sel.rule
        out = torch.empty_like(q)
        inputs = {"q": q, "k": k, "v": v, "causal": causal, "scale": None}
        return (lambda: fa.launch(inputs, config, out=out)), config.to_dict(), rule, None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if dry:
        backend = SDPBackend.MATH  # the GPU backends do not exist on CPU: exercise the plumbing
    else:
        backend = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}[name]

    def call():
        with sdpa_kernel([backend]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

    try:
        call()
    except RuntimeError as exc:
        return None, {}, "", f"unavailable ({str(exc).splitlines()[0][:120]})"
    return call, {}, "", None


# Hopper-minded starting points for --search: (block_m, block_n, num_warps, num_stages,
# split_diag, use_tma[, warp_specialize, exp2_poly, persistent, maxnreg]), as the Triton
# tutorial and FlashAttention-2/3/4 choose them.
SEARCH_SEEDS = (
    # Warp-specialized (Hopper; 12 warps run for 4) and exp2-on-FMA starting points first, so a
    # short search tries them: (..., warp_specialize, exp2_poly, persistent, maxnreg).
    (128, 64, 4, 3, False, True, True, 0, 0, 0), (128, 128, 4, 2, False, True, True, 0, 0, 0),
    (128, 128, 8, 3, True, False, False, 50, 0, 0), (128, 64, 4, 3, False, True, True, 50, 0, 0),
    (128, 64, 8, 3, True, True), (128, 128, 8, 3, True, True), (128, 64, 8, 3, True, False),
    (128, 128, 8, 2, True, False), (128, 64, 4, 3, True, True), (64, 64, 4, 3, True, True),
    (128, 32, 8, 4, True, True), (64, 128, 4, 3, True, True), (128, 64, 8, 4, False, True),
    (256, 64, 8, 2, True, True),
)


def _search(point: Point, spec, q, k, v, causal: bool, args: argparse.Namespace, notes: list[str]) -> None:
    """Time up to ``args.search`` valid configs; keep the fastest verified one as 'tritune'."""
    import random

    import torch
    from tritune.kernels import flash_attention as fa
    from tritune.search_space import FlashAttentionConfig, detect, space_for

    hw = detect(q.device)
    space = space_for(spec, hw)
    candidates = [fa.FAMILY.default_config(spec, hw)]
    for seed in SEARCH_SEEDS:
        cfg = FlashAttentionConfig(*seed)
        if space.is_valid(cfg.to_dict()) and cfg not in candidates:
            candidates.append(cfg)
    for values in space.sample(random.Random(point.seq), args.search):
        cfg = FlashAttentionConfig.from_dict(values)
        if cfg not in candidates:
            candidates.append(cfg)
    best: tuple[float, FlashAttentionConfig] | None = None
    out = torch.empty_like(q)
    inputs = {"q": q, "k": k, "v": v, "causal": causal, "scale": None}
    for cfg in candidates[: args.search]:
        def fn(cfg=cfg):
            return fa.launch(inputs, cfg, out=out)
        try:
            ok, message = _check(fn, q, k, v, causal)
        except Exception as exc:  # a config that fails to compile or launch is skipped, not fatal
            notes.append(f"search S={point.seq} D={point.head_dim} {cfg.key()}: {type(exc).__name__}")
            continue
        if not ok:
            notes.append(f"search S={point.seq} D={point.head_dim} {cfg.key()}: wrong result ({message})")
            continue
        ms = time_ms(fn, args.dry, args.warmup, args.rep)
        if best is None or ms < best[0]:
            best = (ms, cfg)
    if best is None:
        point.ms["tritune"] = point.tflops["tritune"] = None
        return
    point.ms["tritune"] = best[0]
    point.tflops["tritune"] = point.flops / (best[0] * 1e-3) / 1e12
    point.config, point.config_rule = best[1].to_dict(), f"search best of {min(len(candidates), args.search)}"


def knob_variants(config: Any, space: Any) -> dict[str, Any]:
    """The runtime's ``config`` with each knob past stock Triton on, where the space allows it.

    Warp specialization brings the settings it needs (descriptors, one key loop, 4 warps: see
    the space's rule); the others change one knob.
    """
    ws = config.replace(warp_specialize=True, use_tma=True, split_diag=False, num_warps=4, maxnreg=0,
                        block_m=max(64, config.block_m))
    variants = {"ws": ws, "exp2_50": config.replace(exp2_poly=50), "exp2_25": config.replace(exp2_poly=25),
                "persistent": config.replace(persistent=1), "ws+exp2_50": ws.replace(exp2_poly=50),
                "ws+persistent": ws.replace(persistent=1)}
    return {name: cfg for name, cfg in variants.items() if cfg != config and space.is_valid(cfg.to_dict())}


def _knobs(point: Point, spec, q, k, v, causal: bool, args: argparse.Namespace, notes: list[str],
           base_ms: float) -> None:
    """Time ``knob_variants`` of the point's config; keep the fastest verified as 'tritune'."""
    import torch
    from tritune.kernels import flash_attention as fa
    from tritune.search_space import FlashAttentionConfig, detect, space_for

    base = FlashAttentionConfig.from_dict(point.config)
    out = torch.empty_like(q)
    inputs = {"q": q, "k": k, "v": v, "causal": causal, "scale": None}
    best = (base_ms, base, point.config_rule)
    for name, cfg in knob_variants(base, space_for(spec, detect(q.device))).items():
        def fn(cfg=cfg):
            return fa.launch(inputs, cfg, out=out)
        try:
            ok, message = _check(fn, q, k, v, causal)
        except Exception as exc:  # a variant that fails to compile or launch is a note, not fatal
            point.knob_ms[name] = None
            notes.append(f"knob {name} S={point.seq} D={point.head_dim} causal={causal}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else ''}")
            continue
        if not ok:
            point.knob_ms[name] = None
            notes.append(f"knob {name} S={point.seq} D={point.head_dim} causal={causal}: wrong result ({message})")
            continue
        ms = time_ms(fn, args.dry, args.warmup, args.rep)
        point.knob_ms[name] = ms
        if ms < best[0]:
            best = (ms, cfg, f"{point.config_rule}+{name}")
    point.ms["tritune"] = best[0]
    point.tflops["tritune"] = point.flops / (best[0] * 1e-3) / 1e12
    point.config, point.config_rule = best[1].to_dict(), best[2]


def _check(fn: Callable, q, k, v, causal: bool, rows: int = 128) -> tuple[bool, str]:
    """Compare ``fn``'s output on sampled query rows of two (batch, head) pairs with fp32 math."""
    import torch
    from tritune.kernels import compare

    out = fn()
    batch, heads, seq, head_dim = q.shape
    idx = torch.unique(torch.cat([torch.arange(min(rows, seq)), torch.arange(max(0, seq - rows // 2), seq),
                                  torch.randint(0, seq, (rows,), generator=torch.Generator().manual_seed(0))]))
    idx = idx.to(q.device)
    scale = 1.0 / math.sqrt(head_dim)
    for b, h in {(0, 0), (batch - 1, heads - 1)}:
        qs, ks, vs = q[b, h, idx], k[b, h], v[b, h]
        refs = []
        for dt in (torch.float32, q.dtype):
            s = (qs.to(dt) @ ks.to(dt).T) * scale
            if causal:
                s = s.masked_fill(torch.arange(seq, device=q.device)[None, :] > idx[:, None], float("-inf"))
            refs.append(torch.softmax(s.float(), dim=-1).to(dt) @ vs.to(dt))
        verdict = compare(out[b, h, idx], refs[0], refs[1])
        if not verdict.ok:
            return False, verdict.message or "mismatch"
    return True, ""


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"FlashAttention forward, {result['setup']['dtype']}, {env['device']}, torch {env['torch']}, "
        f"triton {env['triton']}, {env['date']}" + (" (DRY RUN: times meaningless)" if result["dry"] else ""),
        f"TFLOP/s with FLOPs = {result['flops_formula']}; {result['timing']}.",
        "",
        "| S | B | Hq | D | causal | tritune | SDPA flash | SDPA cuDNN | vs flash | vs cuDNN | config (rule) | knobs ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["points"]:
        t = p["tflops"]
        cfg = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in p["config"].items())
        knobs = ", ".join(f"{n} {'fail' if ms is None else f'{ms:.3f}'}" for n, ms in p.get("knob_ms", {}).items())
        lines.append(
            f"| {p['seq']} | {p['batch']} | {p['heads']} | {p['head_dim']} | {'yes' if p['causal'] else 'no'} | "
            f"{fmt(t.get('tritune'))} | {fmt(t.get('sdpa_flash'))} | {fmt(t.get('sdpa_cudnn'))} | "
            f"{ratio(t.get('tritune'), t.get('sdpa_flash'))} | {ratio(t.get('tritune'), t.get('sdpa_cudnn'))} | "
            f"{cfg} ({p['config_rule']}) | {knobs or '-'} |")
    for note in result["notes"]:
        lines.append(f"\n- {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
