"""Paged-attention decode: achieved bandwidth of tritune's kernel against gather + PyTorch SDPA.

    python -m tritune.bench.paged_bench [--json out.json] [--markdown out.md]
    python -m tritune.bench.paged_bench --dry      # tiny CPU run under the Triton interpreter

Decode reads the whole KV cache once per step, so it is judged by bandwidth. Bytes = K and V
read once per KV head (2*B*ctx*Hkv*D*elt) plus Q and O (2*B*Hq*D*elt), over the kernel time
(both kernels of a split launch). The ceiling is the device's copy bandwidth, measured in the
same run (a 1 GiB device-to-device copy: 2 bytes moved per byte copied). The sweep: batch
1/8/64/256 x context 512..32k, Hq/Hkv 32/8 and 32/32, D 128, block size 16, bf16; every sequence
holds the full context, its pages drawn from a permutation of the pool (non-contiguous).
Baselines: ``sdpa_gather`` gathers each sequence's pages into contiguous K/V and calls SDPA
(what a non-paged kernel costs), ``sdpa_contiguous`` is SDPA on K/V that are already
contiguous (no gather; a reference point, not a paged kernel). Points whose tensors would not
fit in device memory are skipped with a note. Every backend's output is checked against an fp32
reference on sampled sequences (``tritune.kernels.compare``) before it is timed; random inputs,
never zeros. GPU times are the median of ``triton.testing.do_bench`` (L2 flushed between runs)
and, for tritune's kernel (``--graph``, on by default), the median per launch replayed from a
CUDA graph over enough input copies to exceed L2: what a serving engine's captured decode step
sees, without launch gaps (``graph_us``, ``graph_copy_fraction``). ``--dry`` runs tiny shapes on CPU through the interpreter: a pipeline check, its times mean
nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
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

FULL = {"batches": (1, 8, 64, 256), "contexts": (512, 1024, 2048, 4096, 8192, 16384, 32768),
        "heads": ((32, 8), (32, 32)), "head_dim": 128, "block_size": 16}
DRY = {"batches": (1, 3), "contexts": (40, 100), "heads": ((4, 2), (4, 4)), "head_dim": 32, "block_size": 16}
BACKENDS = ("tritune", "sdpa_gather", "sdpa_contiguous")
MEMORY_FRACTION = 0.8  # of free device memory a point may use


@dataclass
class Point:
    batch: int
    context: int
    heads_q: int
    heads_kv: int
    head_dim: int
    block_size: int
    dtype: str
    bytes: float
    us: dict[str, float | None] = field(default_factory=dict)
    gbps: dict[str, float | None] = field(default_factory=dict)
    copy_fraction: dict[str, float | None] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    config_rule: str = ""
    graph_us: dict[str, float | None] = field(default_factory=dict)
    graph_copy_fraction: dict[str, float | None] = field(default_factory=dict)


L2_EXCEED_BYTES = 256 << 20  # graph replays rotate over input copies until they exceed L2
MAX_GRAPH_COPIES = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_parser("python -m tritune.bench.paged_bench", __doc__, dry_what="shapes", dtype_what="cache and query")
    p.add_argument("--batches", type=int, nargs="+", help="numbers of sequences (default 1 8 64 256)")
    p.add_argument("--contexts", type=int, nargs="+", help="tokens per sequence (default 512..32768)")
    p.add_argument("--heads", nargs="+", help="Hq/Hkv pairs, e.g. 32/8 32/32 (the default)")
    p.add_argument("--head-dim", type=int, help="head dim (default 128)")
    p.add_argument("--block-size", type=int, help="tokens per cache block (default 16)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="what to time")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=True,
                   help="also time tritune's kernel replayed from a CUDA graph (default on)")
    p.add_argument("--fold", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the runtime's split config with fold_combine on, as 'tritune_fold' (default on)")
    p.add_argument("--config", help="force a tritune config, e.g. block_n=64,num_splits=4,group_block=16,"
                                    "num_warps=4,num_stages=2,fold_combine=1 (default: the runtime's tuned table)")
    add_run_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run, markdown)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from tritune.search_space import PagedAttentionConfig

    device = bench_device(args.dry)
    base = DRY if args.dry else FULL
    batches = args.batches or base["batches"]
    contexts = args.contexts or base["contexts"]
    heads = [parse_heads(h, "--heads item") for h in args.heads] if args.heads else base["heads"]
    head_dim = args.head_dim or base["head_dim"]
    block_size = args.block_size or base["block_size"]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    forced = parse_config(args.config, PagedAttentionConfig, ("fold_combine",)) if args.config else None
    copy_gbps = measure_copy_gbps(device, args, 1 << 24)
    notes: list[str] = []
    points: list[Point] = []
    plan = [(h, b, c) for h in heads for b in batches for c in contexts]
    for (hq, hkv), batch, ctx in progress(plan, "paged_bench"):
        elt = dtype.itemsize
        kv_bytes = 2 * batch * ctx * hkv * head_dim * elt
        point = Point(batch, ctx, hq, hkv, head_dim, block_size, args.dtype,
                      float(kv_bytes + 2 * batch * hq * head_dim * elt))
        label = f"B={batch} ctx={ctx} Hq/Hkv={hq}/{hkv}"
        budget = _memory_budget(device)
        if kv_bytes * 1.1 > budget:
            notes.append(f"skipped {label}: the cache needs {kv_bytes / 1e9:.1f} GB, {budget / 1e9:.1f} GB usable")
            continue
        x = make_bench_inputs(batch, ctx, hq, hkv, head_dim, block_size, dtype, device, seed=batch * 7 + ctx)
        for name in args.backends:
            fn, why = _backend(name, x, forced, point, kv_bytes, _memory_budget(device))
            if fn is None:
                notes.append(f"{name} {label}: {why}")
                continue
            ok, message = _check(fn, x)
            if not ok:
                notes.append(f"{name} {label}: wrong result, not timed ({message})")
                continue
            ms = time_ms(fn, args.dry, args.warmup, args.rep)
            point.us[name] = ms * 1e3
            point.gbps[name] = point.bytes / (ms * 1e-3) / 1e9
            point.copy_fraction[name] = point.gbps[name] / copy_gbps if copy_gbps else None
            if args.graph and name == "tritune":
                graph_ms = _graph_ms(name, x, fn, forced, point, kv_bytes, device, args, ms)
                if graph_ms is not None:
                    point.graph_us[name] = graph_ms * 1e3
                    point.graph_copy_fraction[name] = (point.bytes / (graph_ms * 1e-3) / 1e9 / copy_gbps
                                                       if copy_gbps else None)
            if name == "tritune" and args.fold:
                _fold_variant(x, point, kv_bytes, device, args, copy_gbps, notes, label)
        points.append(point)
        del x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "benchmark": "paged_attention_decode",
        "bytes_formula": "2*B*ctx*Hkv*D*elt (K and V once per KV head) + 2*B*Hq*D*elt (Q and O)",
        "timing": "median of triton.testing.do_bench" if not args.dry else "wall clock, interpreter (meaningless)",
        "graph_timing": ("median per launch of CUDA-graph replays over input copies exceeding L2"
                         if args.graph and not args.dry else None),
        "copy_bandwidth_gbps": copy_gbps,
        "copy_bandwidth_method": "device-to-device copy of 1 GiB, 2 bytes moved per byte, do_bench median"
                                 if not args.dry else "CPU copy (meaningless)",
        "dry": bool(args.dry),
        "environment": environment(args.dry),
        "points": [asdict(p) for p in points],
        "notes": notes,
    }


def make_bench_inputs(batch: int, ctx: int, hq: int, hkv: int, head_dim: int, block_size: int, dtype: Any,
                      device: Any, seed: int) -> dict[str, Any]:
    """Random q and cache generated on the device; pages from a permutation of a pool 1/16 larger."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    per_seq = -(-ctx // block_size)
    pool = batch * per_seq + max(1, batch * per_seq // 16)
    shape = (pool, block_size, hkv, head_dim)
    k_cache = torch.empty(shape, dtype=dtype, device=device).normal_(generator=gen)
    v_cache = torch.empty(shape, dtype=dtype, device=device).normal_(generator=gen)
    perm = torch.randperm(pool, generator=gen, device=device)
    table = perm[: batch * per_seq].view(batch, per_seq).to(torch.int32)
    q = torch.empty((batch, hq, head_dim), dtype=dtype, device=device).normal_(generator=gen)
    lens = torch.full((batch,), ctx, dtype=torch.int32, device=device)
    return {"q": q, "k_cache": k_cache, "v_cache": v_cache, "block_table": table, "seq_lens": lens,
            "scale": head_dim ** -0.5}


def _gather(x: dict[str, Any], ctx: int) -> tuple[Any, Any]:
    """Contiguous ``[B, Hkv, ctx, D]`` K and V from the pages (every sequence holds ``ctx``
    tokens; passed in, so the timed call never synchronizes to read ``seq_lens``)."""
    table = x["block_table"].long()
    k = x["k_cache"][table].flatten(1, 2)[:, :ctx].transpose(1, 2)
    v = x["v_cache"][table].flatten(1, 2)[:, :ctx].transpose(1, 2)
    return k, v


def _backend(name: str, x: dict[str, Any], forced: Any, point: Point, kv_bytes: float,
             free: float) -> tuple[Callable[[], Any] | None, str]:
    import torch
    import torch.nn.functional as F

    if name == "tritune":
        from tritune import runtime
        from tritune.kernels.paged_attention import launch
        from tritune.search_space import PagedAttentionSpec

        if forced is not None:
            config, rule = forced, "forced"
        else:
            spec = PagedAttentionSpec(point.batch, point.heads_q, point.heads_kv, point.head_dim, point.context,
                                      point.block_size, point.dtype)
            sel = runtime.select(spec, x["q"].device)
            config, rule = sel.config, sel.rule
        point.config, point.config_rule = config.to_dict(), rule
        out = torch.empty_like(x["q"])
        return (lambda: launch(x, config, out=out)), ""
    need = kv_bytes * (2 if name == "sdpa_contiguous" else 1)
    if need > free:
        return None, f"skipped: needs {need / 1e9:.1f} GB more device memory, {max(free, 0) / 1e9:.1f} GB free"
    gqa = point.heads_q != point.heads_kv
    q = x["q"][:, :, None]

    def sdpa(k, v):
        return F.scaled_dot_product_attention(q, k, v, scale=x["scale"], enable_gqa=gqa)[:, :, 0]

    if name == "sdpa_gather":
        return (lambda: sdpa(*_gather(x, point.context))), ""
    k, v = (t.contiguous() for t in _gather(x, point.context))
    return (lambda: sdpa(k, v)), ""


def _fold_variant(x: dict[str, Any], point: Point, kv_bytes: float, device: Any, args: argparse.Namespace,
                  copy_gbps: float, notes: list[str], label: str) -> None:
    """The point's split config with ``fold_combine`` on (one launch, no merge kernel), timed
    like 'tritune' and reported as 'tritune_fold' (configs without splits have nothing to fold)."""
    from tritune.search_space import PagedAttentionConfig

    config = PagedAttentionConfig.from_dict(point.config)
    if config.num_splits == 1 or config.fold_combine:
        return
    folded = config.replace(fold_combine=True)
    rule = point.config_rule
    fn, _ = _backend("tritune", x, folded, point, kv_bytes, _memory_budget(device))
    point.config, point.config_rule = config.to_dict(), rule  # the row reports the runtime's config
    ok, message = _check(fn, x)
    if not ok:
        notes.append(f"tritune_fold {label}: wrong result, not timed ({message})")
        return
    ms = time_ms(fn, args.dry, args.warmup, args.rep)
    point.us["tritune_fold"] = ms * 1e3
    point.copy_fraction["tritune_fold"] = point.bytes / (ms * 1e-3) / 1e9 / copy_gbps if copy_gbps else None
    if args.graph:
        graph_ms = _graph_ms("tritune", x, fn, folded, point, kv_bytes, device, args, ms)
        point.config, point.config_rule = config.to_dict(), rule
        if graph_ms is not None:
            point.graph_us["tritune_fold"] = graph_ms * 1e3
            point.graph_copy_fraction["tritune_fold"] = (point.bytes / (graph_ms * 1e-3) / 1e9 / copy_gbps
                                                         if copy_gbps else None)


def _graph_ms(name: str, x: dict[str, Any], fn: Callable[[], Any], forced: Any, point: Point, kv_bytes: float,
              device: Any, args: argparse.Namespace, estimate_ms: float) -> float | None:
    """CUDA-graph time per launch over copies of the inputs that together exceed L2 (a batch-1
    4k cache is 17 MB: replaying one copy would time the L2 cache). None in a dry run."""
    if args.dry:
        return None
    copies = min(MAX_GRAPH_COPIES, max(1, -(-L2_EXCEED_BYTES // max(1, int(kv_bytes)))))
    copies = max(1, min(copies, int(_memory_budget(device) // max(1.0, kv_bytes * 1.1))))
    fns = [fn]
    for i in range(1, copies):
        xc = make_bench_inputs(point.batch, point.context, point.heads_q, point.heads_kv, point.head_dim,
                               point.block_size, x["q"].dtype, device, seed=1000 + i)
        fc, _ = _backend(name, xc, forced, point, kv_bytes, _memory_budget(device))
        if fc is not None:
            fns.append(fc)
    return graph_time_ms(fns, False, rep=args.rep, estimate_ms=estimate_ms)


def _check(fn: Callable[[], Any], x: dict[str, Any], samples: int = 3) -> tuple[bool, str]:
    """The dtype rule on sampled sequences: fp32 reference vs the same math in the input dtype."""
    import torch
    from tritune.kernels import compare
    from tritune.kernels.paged_attention import reference

    out = fn()
    batch = out.shape[0]
    idx = sorted({0, batch - 1, batch // 2}) if batch > 1 else [0]
    sub = {**x, "q": x["q"][idx], "block_table": x["block_table"][idx], "seq_lens": x["seq_lens"][idx]}
    verdict = compare(out[idx], reference(sub, torch.float32), reference(sub, x["q"].dtype))
    return verdict.ok, verdict.message or ""


def _memory_budget(device: Any) -> float:
    import torch

    if device.type != "cuda":
        return float(1 << 34)
    free, _ = torch.cuda.mem_get_info(device)
    return MEMORY_FRACTION * free


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"Paged-attention decode, {env['device']}, torch {env['torch']}, triton {env['triton']}, {env['date']}"
        + (" (DRY RUN: times meaningless)" if result["dry"] else ""),
        f"Bytes = {result['bytes_formula']}; {result['timing']}. Copy bandwidth "
        f"{result['copy_bandwidth_gbps']:.0f} GB/s ({result['copy_bandwidth_method']}).",
        "",
        "| B | ctx | Hq/Hkv | MB | tritune us | GB/s | of copy | graph us | of copy (graph) | folded graph us | "
        "of copy (folded, graph) | gather+SDPA us | GB/s | SDPA (contig.) us | speedup vs gather+SDPA | config (rule) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["points"]:
        us, gbps, frac = p["us"], p["gbps"], p["copy_fraction"]
        cfg = ",".join(f"{k}={v}" for k, v in p["config"].items())
        lines.append(
            f"| {p['batch']} | {p['context']} | {p['heads_q']}/{p['heads_kv']} | {p['bytes'] / 1e6:.1f} | "
            f"{fmt(us.get('tritune'))} | {fmt(gbps.get('tritune'))} | {pct(frac.get('tritune'))} | "
            f"{fmt(p.get('graph_us', {}).get('tritune'))} | {pct(p.get('graph_copy_fraction', {}).get('tritune'))} | "
            f"{fmt(p.get('graph_us', {}).get('tritune_fold') or us.get('tritune_fold'))} | "
            f"{pct(p.get('graph_copy_fraction', {}).get('tritune_fold') or frac.get('tritune_fold'))} | "
            f"{fmt(us.get('sdpa_gather'))} | {fmt(gbps.get('sdpa_gather'))} | {fmt(us.get('sdpa_contiguous'))} | "
            f"{ratio(us.get('sdpa_gather'), us.get('tritune'))} | {cfg} ({p['config_rule']}) |")
    for note in result["notes"]:
        lines.append(f"\n- {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
