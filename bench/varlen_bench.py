"""Serving steps: tritune's varlen kernel against vLLM's Triton unified_attention and our own kernels.

    python -m tritune.bench.varlen_bench [--vllm-path DIR] [--json out.json] [--markdown out.md]
    python -m tritune.bench.varlen_bench --dry      # tiny CPU run under the Triton interpreter

Batches typical of serving, in one paged cache (Llama-3-8B heads by default: Hq/Hkv 32/8, D 128,
page 16, bf16, causal): 64 decode rows at 1k-8k context plus one 512-token chunk on a 2k prefix;
8 rows of 4 speculative tokens at 4k; pure decode of 1, 8 and 64 sequences at 4k; 2 chunks of 2k
tokens on 8k prefixes. Each batch is timed whole for ``tritune`` (``launch_varlen`` with the
runtime's config) and ``vllm`` (vLLM's ``unified_attention``, called as its TRITON_ATTN backend
calls it; skipped with the reason when it cannot be imported); its decode-like rows (<= 8 new
tokens) for ``tritune`` and our ``paged_attention``, and its prefill chunks for ``tritune`` and our
``flash_attention`` (K/V gathered contiguous for it, untimed). Goals (owed to a GPU): >= 1.0x vLLM
on every batch, decode rows >= paged_attention, prefill chunks >= 0.9x flash_attention.

Work is counted as kernels/varlen_attention.py's ``work_of`` counts it: FLOPs = 4*D*Hq per
visible (query, key) pair; bytes = K and V read once per KV head over each sequence's visible
keys, plus Q and O. Reported: tokens/s (new tokens per second), GB/s, TFLOP/s, and the fraction
of the roofline floor max(bytes / copy bandwidth, FLOPs / matmul rate) with the device's copy
bandwidth and bf16 matmul rate measured in the same run (or passed in by the GPU suite). Times:
median of ``triton.testing.do_bench`` (L2 flushed between calls) and, on CUDA, the median per
call of a CUDA-graph replay over enough input copies to exceed L2 (launch gaps gone, as in a
captured decode step); the goals use the graph time where there is one. Every backend's output
is checked against the float64 reference on sampled rows before it is timed. ``--dry`` runs tiny
batches on CPU through the interpreter: a pipeline check, its times mean nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tritune.bench._common import (
    add_run_arguments,
    bench_device,
    bench_main,
    bench_parser,
    environment,
    fmt,
    graph_time_ms,
    measure_copy_gbps,
    parse_config,
    parse_heads,
    pct,
    progress,
    ratio,
    time_ms,
)
from tritune.bench._varlen_backends import (
    ServingBatch,
    check_rows,
    decode_contexts,
    expected_rows,
    flash_backend,
    load_vllm,
    make_serving_batch,
    paged_backend,
    roof,
    sub_batch,
    tritune_backend,
    vllm_backend,
    work,
)

FULL_BATCHES = (
    ServingBatch("mixed", (1,) * 64 + (512,), decode_contexts(64, 1024, 8192) + (2048 + 512,),
                 "64 decode rows at 1k-8k context + one 512-token chunk on a 2k prefix"),
    ServingBatch("spec", (4,) * 8, (4096,) * 8, "8 rows of 4 speculative tokens at 4k context"),
    ServingBatch("decode-1", (1,), (4096,), "decode, 1 sequence at 4k context"),
    ServingBatch("decode-8", (1,) * 8, (4096,) * 8, "decode, 8 sequences at 4k context"),
    ServingBatch("decode-64", (1,) * 64, (4096,) * 64, "decode, 64 sequences at 4k context"),
    ServingBatch("prefill", (2048, 2048), (8192 + 2048,) * 2, "2 chunks of 2k tokens on 8k prefixes"),
)
DRY_BATCHES = (
    ServingBatch("mixed", (1, 1, 1, 24), (20, 30, 40, 16 + 24), "3 decode rows + one 24-token chunk"),
    ServingBatch("spec", (4, 4), (30, 37), "2 rows of 4 speculative tokens"),
    ServingBatch("decode-3", (1, 1, 1), (33, 33, 33), "decode, 3 sequences"),
    ServingBatch("prefill", (20, 20), (36, 36), "2 chunks of 20 tokens on 16-token prefixes"),
)
FULL_SHAPE = {"heads": (32, 8), "head_dim": 128, "block_size": 16}
DRY_SHAPE = {"heads": (4, 2), "head_dim": 32, "block_size": 16}
BACKENDS = ("tritune", "vllm", "paged", "flash")
GRAPH_L2_COPIES = 3  # graph replays rotate over enough copies for 3x the L2 size (at most 8 copies)
GOALS = {"vs_vllm": 1.0, "decode_vs_paged": 1.0, "prefill_vs_flash": 0.9}


@dataclass
class Timing:
    ms: float | None = None
    graph_ms: float | None = None
    tokens_per_s: float | None = None
    gbps: float | None = None
    tflops: float | None = None
    of_roof: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    config_rule: str = ""

    @property
    def best_ms(self) -> float | None:
        return self.graph_ms if self.graph_ms is not None else self.ms


@dataclass
class Part:
    """The rows of one kind (all, decode or prefill) of a batch, and each backend's timing."""

    kind: str
    num_seqs: int
    total_q: int
    flops: float
    bytes: float
    bound: str = ""
    timings: dict[str, Timing] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser("python -m tritune.bench.varlen_bench", __doc__, dry_what="batches", dtype_what="query and cache")
    p.add_argument("--batches", nargs="+", help="batch names to run (default all: "
                   + " ".join(b.name for b in FULL_BATCHES) + ")")
    p.add_argument("--heads", help="Hq/Hkv (default 32/8)")
    p.add_argument("--head-dim", type=int, help="head dim (default 128)")
    p.add_argument("--block-size", type=int, help="tokens per cache page (default 16)")
    p.add_argument("--layout", choices=("vllm", "nhd"), default="vllm",
                   help="cache layout: vllm = K/V as strided views of one [blocks, Hkv, page, 2*D] tensor "
                        "(vLLM's; default), nhd = contiguous [blocks, page, Hkv, D] pages (flash-attn, FlashInfer)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="what to time")
    p.add_argument("--vllm-path", default=os.environ.get("TRITUNE_VLLM_PATH"), metavar="DIR",
                   help="folder to import vLLM's triton_unified_attention from (a vllm/ tree of its module files, "
                        "as scripts/vllm_triton_extract.sh writes .vllm-triton, or the module file itself); "
                        "default $TRITUNE_VLLM_PATH, else the installed vllm package")
    p.add_argument("--config", help="force a tritune config, e.g. block_m=16,block_n=64,pack_gqa=1,num_splits=4,"
                                    "split_diag=1,num_warps=4,num_stages=2 (default: the runtime's tuned table)")
    p.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph replay timing")
    p.add_argument("--copy-gbps", type=float, help="device copy bandwidth (read + write) to report against "
                                                   "(default: measured here)")
    p.add_argument("--matmul-tflops", type=float, help="bf16 matmul rate to report against (default: measured here)")
    p.add_argument("--deadline-s", type=float, help="start no new batch after this many seconds (the GPU suite's "
                                                   "time bound); batches not reached are listed in the notes")
    add_run_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run, markdown)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from tritune.search_space import VarlenAttentionConfig

    device = bench_device(args.dry)
    started = time.monotonic()
    shape = DRY_SHAPE if args.dry else FULL_SHAPE
    heads = parse_heads(args.heads) if args.heads else shape["heads"]
    head_dim = args.head_dim or shape["head_dim"]
    block_size = args.block_size or shape["block_size"]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    forced = parse_config(args.config, VarlenAttentionConfig, ("pack_gqa", "split_diag")) if args.config else None
    batches = _pick_batches(args)
    notes: list[str] = []
    unified = None
    if "vllm" in args.backends:
        unified, where = load_vllm(args.vllm_path)
        notes.append(f"vllm: {where}" if unified else f"vllm skipped: {where}")
        print(notes[-1], flush=True)
    copy_gbps = args.copy_gbps or measure_copy_gbps(device, args, 1 << 22)
    matmul_tflops = args.matmul_tflops or _matmul_tflops(device, args)
    results = []
    for i, batch in enumerate(progress(list(batches), "varlen_bench")):
        if args.deadline_s is not None and time.monotonic() - started > args.deadline_s:
            notes.append(f"{batch.name}: not reached within --deadline-s {args.deadline_s:.0f}")
            continue
        make = {"heads_q": heads[0], "heads_kv": heads[1], "head_dim": head_dim, "block_size": block_size,
                "dtype": dtype, "device": device, "vllm_layout": args.layout == "vllm"}
        x = make_serving_batch(batch, seed=1000 + i, **make)
        parts = _measure(batch, x, make, i, forced, unified, args, copy_gbps, matmul_tflops, notes)
        results.append({"name": batch.name, "description": batch.description, "num_seqs": len(batch.q_lens),
                        "total_q": sum(batch.q_lens), "max_seqlen_q": max(batch.q_lens),
                        "max_seqlen_k": max(batch.k_lens), "parts": {p.kind: _part_json(p) for p in parts},
                        "goals": _goals(parts, args.dry)})
        del x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "benchmark": "varlen_attention_serving",
        "work_formula": "kernels/varlen_attention.py work_of: FLOPs = 4*D*Hq per visible (query, key) pair; "
                        "bytes = K and V once per KV head over each sequence's visible keys + Q + O",
        "roof_formula": "fraction = max(bytes / copy bandwidth, FLOPs / matmul rate) / time",
        "timing": ("median of triton.testing.do_bench (L2 flushed); graph = median per call of a CUDA-graph "
                   "replay over input copies > L2" if not args.dry else "wall clock, interpreter (meaningless)"),
        "goals": GOALS,
        "copy_bandwidth_gbps": copy_gbps, "matmul_tflops": matmul_tflops,
        "ceilings_method": ("passed in" if args.copy_gbps and args.matmul_tflops else
                            "measured here: 1 GiB device copy (2 bytes per byte), bf16 8192^3 matmul, do_bench median")
        if not args.dry else "CPU (meaningless)",
        "setup": {"heads_q": heads[0], "heads_kv": heads[1], "head_dim": head_dim, "block_size": block_size,
                  "dtype": args.dtype, "layout": args.layout, "causal": True},
        "dry": bool(args.dry),
        "environment": environment(args.dry),
        "batches": results,
        "notes": notes,
    }


def _measure(batch: ServingBatch, x: dict[str, Any], make: dict[str, Any], index: int, forced: Any, unified: Any,
             args: argparse.Namespace, copy_gbps: float, matmul_tflops: float, notes: list[str]) -> list[Part]:
    """Every part of ``batch`` with every backend that runs it: checked, then timed."""
    kinds = ["all"] + [k for k in ("decode", "prefill") if batch.seqs(k) and len(batch.seqs(k)) < len(batch.q_lens)]
    pure = {k for k in ("decode", "prefill") if len(batch.seqs(k)) == len(batch.q_lens)}
    copies = [x] + [make_serving_batch(batch, seed=1000 + index + 97 * c, **make) for c in range(1, _copies(x, args))]
    parts = []
    for kind in kinds:
        seqs = batch.seqs(kind)
        views = [c if kind == "all" else sub_batch(c, seqs) for c in copies]
        w = work(views[0])
        part = Part(kind, len(seqs), sum(views[0]["q_lens"]), w["flops"], w["bytes"])
        expected = expected_rows(views[0], range(len(seqs)))
        backends = ["tritune"]
        if kind == "all":
            backends.append("vllm")
        if kind == "decode" or (kind == "all" and "decode" in pure):
            backends.append("paged")
        if kind == "prefill" or (kind == "all" and "prefill" in pure):
            backends.append("flash")
        for name in [b for b in backends if b in args.backends]:
            label = f"{batch.name}/{kind} {name}"
            if name == "vllm" and unified is None:
                continue
            try:
                made = [_backend(name, v, forced, unified) for v in views]
            except Exception as exc:  # a backend that cannot be set up is reported, not fatal
                notes.append(f"{label}: could not be set up ({type(exc).__name__}: {str(exc)[:160]})")
                continue
            (fn, collect), config, rule = made[0]
            try:
                fn()
                ok, message = check_rows(expected, collect())
            except Exception as exc:
                notes.append(f"{label}: failed to run ({type(exc).__name__}: {str(exc)[:160]})")
                continue
            if not ok:
                notes.append(f"{label}: wrong result, not timed ({message})")
                continue
            t = Timing(config=config, config_rule=rule)
            t.ms = time_ms(fn, args.dry, args.warmup, args.rep)
            if not args.no_graphs:
                try:
                    t.graph_ms = graph_time_ms([m[0][0] for m in made], args.dry, rep=args.rep, estimate_ms=t.ms)
                except Exception as exc:  # e.g. a backend that syncs with the host cannot be captured
                    notes.append(f"{label}: no CUDA-graph time ({type(exc).__name__}: {str(exc)[:120]})")
            best = t.best_ms
            t.tokens_per_s = part.total_q / (best * 1e-3)
            t.gbps = part.bytes / (best * 1e-3) / 1e9
            t.tflops = part.flops / (best * 1e-3) / 1e12
            t.of_roof, part.bound = roof(part.flops, part.bytes, best, copy_gbps, matmul_tflops)
            part.timings[name] = t
        parts.append(part)
    return parts


def _backend(name: str, x: dict[str, Any], forced: Any, unified: Any) -> tuple[Any, dict[str, Any], str]:
    if name == "tritune":
        return tritune_backend(x, forced)
    if name == "vllm":
        return vllm_backend(x, unified), {}, "vLLM 2-D/3-D heuristic"
    if name == "paged":
        return paged_backend(x)
    return flash_backend(x)


def _copies(x: dict[str, Any], args: argparse.Namespace) -> int:
    """Input copies for the graph replay: enough for GRAPH_L2_COPIES x the L2 size, at most 8."""
    if args.dry or args.no_graphs:
        return 1
    import torch

    l2 = getattr(torch.cuda.get_device_properties(x["q"].device), "L2_cache_size", 50 << 20) or (50 << 20)
    held = x["k"].untyped_storage().nbytes() + x["v"].untyped_storage().nbytes() + x["q"].nbytes
    if x["k"].untyped_storage().data_ptr() == x["v"].untyped_storage().data_ptr():
        held //= 2  # one vLLM-layout tensor holds both
    return max(1, min(8, -(-GRAPH_L2_COPIES * l2 // max(1, held))))


def _goals(parts: list[Part], dry: bool) -> dict[str, Any]:
    """Ratios the issue owes (higher = tritune faster), from the graph time where there is one;
    ``met`` is None in a dry run (interpreter times judge nothing)."""
    by = {p.kind: p for p in parts}
    out: dict[str, Any] = {}

    def speedup(kind: str, other: str) -> float | None:
        p = by.get(kind)
        if p is None or "tritune" not in p.timings or other not in p.timings:
            return None
        a, b = p.timings["tritune"].best_ms, p.timings[other].best_ms
        return b / a if a and b else None

    out["vs_vllm"] = speedup("all", "vllm")
    out["decode_vs_paged"] = speedup("decode", "paged") if "decode" in by else speedup("all", "paged")
    out["prefill_vs_flash"] = speedup("prefill", "flash") if "prefill" in by else speedup("all", "flash")
    out["met"] = {k: (v >= GOALS[k]) if v is not None and not dry else None for k, v in list(out.items())}
    return out


def _part_json(p: Part) -> dict[str, Any]:
    return {**{k: v for k, v in asdict(p).items() if k != "timings"},
            "timings": {name: asdict(t) | {"best_ms": t.best_ms} for name, t in p.timings.items()}}


def _pick_batches(args: argparse.Namespace) -> tuple[ServingBatch, ...]:
    pool = DRY_BATCHES if args.dry else FULL_BATCHES
    if not args.batches:
        return pool
    names = {b.name: b for b in pool}
    unknown = [n for n in args.batches if n not in names]
    if unknown:
        raise ValueError(f"--batches {' '.join(unknown)}: unknown; choose from {' '.join(names)}")
    return tuple(names[n] for n in args.batches)


def _matmul_tflops(device: Any, args: argparse.Namespace) -> float:
    """TFLOP/s of a bf16 8192^3 matmul on random data (the prefill ceiling)."""
    import torch

    n = 8192 if device.type == "cuda" else 128
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: a @ b, args.dry, args.warmup, args.rep)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def markdown(result: dict[str, Any]) -> str:
    env, setup = result["environment"], result["setup"]
    lines = [
        f"Serving batches (varlen_attention), Hq/Hkv {setup['heads_q']}/{setup['heads_kv']}, D {setup['head_dim']}, "
        f"page {setup['block_size']}, {setup['dtype']}, {setup['layout']} cache layout, causal; {env['device']}, "
        f"torch {env['torch']}, triton {env['triton']}, {env['date']}" + (" (DRY RUN: times meaningless)" if result["dry"] else ""),
        f"Work: {result['work_formula']}. Roof: {result['roof_formula']} (copy {result['copy_bandwidth_gbps']:.0f} GB/s, "
        f"matmul {result['matmul_tflops']:.1f} TFLOP/s, {result['ceilings_method']}). Times: {result['timing']}; "
        "tok/s, GB/s, TFLOP/s and of roof use the graph time where there is one.",
        "",
        "| batch | rows | backend | us (do_bench) | us (graph) | tok/s | GB/s | TFLOP/s | of roof | bound | config (rule) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in result["batches"]:
        for kind, p in b["parts"].items():
            for name, t in p["timings"].items():
                cfg = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in t["config"].items())
                lines.append(
                    f"| {b['name']} | {kind} ({p['num_seqs']} seqs, {p['total_q']} tok) | {name} | "
                    f"{_us(t['ms'])} | {_us(t['graph_ms'])} | {_tok(t['tokens_per_s'])} | {fmt(t['gbps'])} | "
                    f"{fmt(t['tflops'])} | {pct(t['of_roof'])} | {p['bound']} | {cfg} ({t['config_rule']}) |")
    lines += ["", "Goals (owed on the GPU; >1 = tritune faster): >= 1.0x vLLM on every batch, decode rows >= "
              "paged_attention, prefill chunks >= 0.9x flash_attention.", "",
              "| batch | description | vs vLLM | decode vs paged | prefill vs flash |", "|---|---|---|---|---|"]
    for b in result["batches"]:
        g = b["goals"]
        cells = [_goal(g.get(k), g["met"].get(k)) for k in ("vs_vllm", "decode_vs_paged", "prefill_vs_flash")]
        lines.append(f"| {b['name']} | {b['description']} | " + " | ".join(cells) + " |")
    for note in result["notes"]:
        lines.append(f"\n- {note}")
    return "\n".join(lines)


def _goal(value: float | None, met: bool | None) -> str:
    if value is None:
        return "-"
    return f"{ratio(value, 1.0)}" + ("" if met is None else " met" if met else " MISSED")


def _us(ms: float | None) -> str:
    return "-" if ms is None else fmt(ms * 1e3)


def _tok(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


if __name__ == "__main__":
    raise SystemExit(main())
