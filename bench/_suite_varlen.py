"""The GPU suite's varlen_attention cases: odd mixed serving batches checked on the device.

``family.verify`` checks a spec's representative batch; these cases add what a spec cannot say:
decode, speculative and chunked-prefill rows in one launch, vLLM's strided cache views, packed
K/V, [B, Hq] ALiBi slopes, FP8 caches with per-head descales, and the score features alone and
combined. Each case runs the default config of its bucket and a seeded sample of valid configs
into a NaN-poisoned output, against the float64 reference with the dtype rule (2x the error of
the same math in PyTorch at the input dtype; FP8 caches against the dequantized cache).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VarlenCase:
    """One batch: q_lens / k_lens per sequence, heads, head dim, page size (0 = packed K/V), dtypes, features."""

    name: str
    q_lens: tuple[int, ...]
    k_lens: tuple[int, ...]
    heads: tuple[int, int]
    head_dim: int
    block_size: int = 16
    dtype: str = "bf16"
    fp8: bool = False
    vllm_layout: bool = False
    causal: bool = True
    window: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    alibi: str = ""  # "", "heads" ([Hq]) or "batch" ([B, Hq])
    sinks: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _mixed(decode: int, spec_rows: int, chunks: tuple[int, ...], ctx: int, seed: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Decode rows, rows of 2-8 speculative tokens and prefill chunks on cached prefixes of 0-2000
    tokens; odd context lengths (never a multiple of a page)."""
    rng = random.Random(seed)
    q = [1] * decode + [rng.randint(2, 8) for _ in range(spec_rows)] + list(chunks)
    k = [rng.randint(1, ctx) | 1 for _ in range(decode)]
    k += [n + rng.randint(1, ctx) | 1 for n in q[decode:decode + spec_rows]]
    k += [n + rng.choice((0, rng.randint(1, 2000))) for n in chunks]
    order = list(range(len(q)))
    rng.shuffle(order)  # prefill chunks among the decode rows, not at the end
    return tuple(q[i] for i in order), tuple(max(k[i], q[i]) for i in order)


CASES_GPU: tuple[VarlenCase, ...] = (
    VarlenCase("Llama-3 GQA 32/8, decode + spec + 2 chunks, vLLM layout", *_mixed(24, 6, (300, 77), 2000, 1),
               (32, 8), 128, 16, "bf16", vllm_layout=True),
    VarlenCase("MQA 16/1 D64 fp16 page 32, window 255 + sinks (gpt-oss style)", *_mixed(16, 4, (129,), 1500, 2),
               (16, 1), 64, 32, "fp16", window=(255, 0), sinks=True),
    VarlenCase("Gemma-2 8/4 D256 page 16, softcap 50 + window 511", *_mixed(10, 3, (200,), 1500, 3),
               (8, 4), 256, 16, "bf16", window=(511, 0), softcap=50.0),
    VarlenCase("FP8 e4m3 cache, per-head descales, 32/8 D128, vLLM layout", *_mixed(16, 4, (160,), 2000, 4),
               (32, 8), 128, 16, "bf16", fp8=True, vllm_layout=True),
    VarlenCase("MHA 16/16 D80 fp16 page 64, ALiBi [B, Hq]", *_mixed(10, 2, (97,), 1500, 5),
               (16, 16), 80, 64, "fp16", alibi="batch"),
    VarlenCase("packed K/V D96 bf16 GQA 12/4, chunks of 1-300 on prefixes", *_mixed(6, 3, (300, 1, 45), 900, 6),
               (12, 4), 96, 0, "bf16"),
    VarlenCase("D192 GQA 16/2 bf16, non-causal window (64, 64)", *_mixed(8, 2, (130,), 1200, 7),
               (16, 2), 192, 16, "bf16", causal=False, window=(64, 64)),
    VarlenCase("split-KV decode: 3 sequences at 9k-24k keys, 8/2 D128 bf16", (1, 1, 4), (24001, 9011, 16999),
               (8, 2), 128, 16, "bf16"),
    VarlenCase("all features: window + softcap + ALiBi [Hq] + sinks, 8/2 D128 fp16", *_mixed(8, 3, (70,), 800, 8),
               (8, 2), 128, 16, "fp16", window=(100, 0), softcap=30.0, alibi="heads", sinks=True),
)
CASES_DRY: tuple[VarlenCase, ...] = (
    VarlenCase("dry: decode + spec + chunk, vLLM layout, FP8 cache, window + sinks", (1, 3, 1, 12), (9, 20, 33, 12),
               (4, 2), 32, 16, "bf16", fp8=True, vllm_layout=True, window=(15, 0), sinks=True),
    VarlenCase("dry: packed K/V MQA, softcap + ALiBi [B, Hq]", (1, 7, 2), (17, 7, 30),
               (4, 1), 64, 0, "fp16", softcap=20.0, alibi="batch"),
)


def build(case: VarlenCase, device: Any, seed: int) -> tuple[dict[str, Any], Any]:
    """(inputs of ``launch_varlen``, the runtime spec of the batch) for ``case`` on ``device``."""
    import torch
    from tritune._varlen_op import spec_of
    from tritune.kernels.varlen_attention import FP8, make_batch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[case.dtype]
    x = make_batch(list(case.q_lens), list(case.k_lens), heads_q=case.heads[0], heads_kv=case.heads[1],
                   head_dim=case.head_dim, block_size=case.block_size, dtype=dtype,
                   kv_dtype=FP8 if case.fp8 else None, device=device, seed=seed, vllm_layout=case.vllm_layout)
    gen = torch.Generator().manual_seed(seed)
    heads_q, batch = case.heads[0], len(case.q_lens)
    x.update(causal=case.causal, window_size=case.window, softcap=case.softcap, scale=None)
    if case.alibi:
        slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads_q) for h in range(heads_q)])
        if case.alibi == "batch":
            slopes = slopes[None, :] * (torch.rand(batch, 1, generator=gen) + 0.5)
        x["alibi_slopes"] = slopes.to(torch.float32).to(device)
    if case.sinks:
        x["sinks"] = (torch.randn(heads_q, generator=gen) * 2).to(device)
    window = (case.window[0], 0 if case.causal else case.window[1])
    spec = spec_of(x["q"], x["k"], batch, max(case.q_lens), max(case.k_lens), paged=case.block_size > 0,
                   causal=case.causal, window=window, softcap=case.softcap > 0, alibi=bool(case.alibi),
                   sinks=case.sinks)
    return x, spec


def correctness(ctx: Any, hw: Any, *, configs_per_case: int = 2) -> tuple[list[list[Any]], list[dict[str, Any]], int, bool]:
    """(table rows, failures, checked, complete) over the cases; stops at the suite's deadline."""
    import torch
    from tritune.kernels import compare
    from tritune.kernels.varlen_attention import attention_math, launch
    from tritune.search_space import default_config, space_for

    cases = CASES_DRY if ctx.dry else CASES_GPU
    per_case = 1 if ctx.dry else configs_per_case
    rows: list[list[Any]] = []
    failures: list[dict[str, Any]] = []
    checked = 0
    for i, case in enumerate(cases):
        if ctx.expired(reserve_s=30):
            return rows, failures, checked, False
        x, spec = build(case, ctx.device, seed=2000 + i)
        ref = attention_math(x, torch.float64)[0]
        base = attention_math(x, x["q"].dtype)[0]
        space = space_for(spec, hw)
        configs = [default_config(spec, hw).to_dict()]
        configs += [c for c in space.sample(random.Random(i), 2 * per_case) if c not in configs]
        for config in configs[:per_case]:
            checked += 1
            out = torch.full_like(x["q"], float("nan"))
            try:
                launch(x, space.config(config), out=out)
                v = compare(out.cpu(), ref, base)
                ok, err, allowed, message = v.ok, v.error, v.allowed, v.message
            except Exception as exc:  # a launch failure is a correctness failure, recorded
                ok, err, allowed, message = False, float("nan"), float("nan"), f"{type(exc).__name__}: {exc}"[:400]
            rows.append(["varlen_attention", f"{case.name} [{spec.describe()}]", json.dumps(config, sort_keys=True),
                         ok, err, allowed])
            if not ok:
                failures.append({"case": case.name, "spec": spec.to_dict(), "config": config, "message": message})
        del x
    return rows, failures, checked, True
