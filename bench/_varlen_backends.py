"""What varlen_bench times: serving batches, the backends that run them, and the output check.

A batch is a list of sequences (q_len new tokens over k_len keys, causal bottom-right) in one
paged cache. Every backend gets the same cache pages and reports its output as ``[total_q, Hq,
D]`` rows of the batch, so one sampled check against the float64 reference serves them all:

- ``tritune``: ``launch_varlen`` with the runtime's config for the batch's bucket;
- ``vllm``: vLLM's Triton ``unified_attention`` called as vLLM's TRITON_ATTN backend calls it
  (its 2-D/3-D split with the backend's threshold and 16 softmax segments), taken from the vllm
  package or a folder holding its module files (nothing of vLLM lives in this repository);
- ``paged``: ``tritune``'s paged_attention decode kernel on the decode-like rows (a row of n
  speculative tokens becomes n one-token rows over the growing prefix: the same work);
- ``flash``: ``tritune``'s flash_attention on the prefill chunks, K/V gathered contiguous
  beforehand (untimed: the flash kernel gets the easier layout).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DECODE_MAX_Q = 8  # rows of at most this many new tokens are decode-like (vLLM's split-KV limit)
VLLM_MODULES = ("vllm.v1.attention.ops.triton_unified_attention", "vllm.attention.ops.triton_unified_attention")
VLLM_MIN_GRID_2D = 128  # vllm/v1/attention/backends/triton_attn.py: MIN_LAUNCH_GRID_SIZE_2D
VLLM_SEGMENTS = 16  # ... NUM_PAR_SOFTMAX_SEGMENTS


@dataclass(frozen=True)
class ServingBatch:
    """One serving step: sequence i brings ``q_lens[i]`` new tokens and attends to ``k_lens[i]`` keys."""

    name: str
    q_lens: tuple[int, ...]
    k_lens: tuple[int, ...]
    description: str

    def __post_init__(self) -> None:
        if len(self.q_lens) != len(self.k_lens) or not self.q_lens:
            raise ValueError(f"batch {self.name}: q_lens and k_lens must be non-empty and of one length")
        if any(q < 1 or k < q for q, k in zip(self.q_lens, self.k_lens, strict=True)):
            raise ValueError(f"batch {self.name}: every sequence needs 1 <= q_len <= k_len (causal)")

    def seqs(self, kind: str) -> list[int]:
        """Sequence indices of ``kind``: all, decode (q_len <= DECODE_MAX_Q) or prefill."""
        if kind == "all":
            return list(range(len(self.q_lens)))
        decode = kind == "decode"
        return [i for i, q in enumerate(self.q_lens) if (q <= DECODE_MAX_Q) == decode]


def make_serving_batch(batch: ServingBatch, *, heads_q: int, heads_kv: int, head_dim: int, block_size: int,
                       dtype: Any, device: Any, seed: int, vllm_layout: bool) -> dict[str, Any]:
    """Random q and paged K/V drawn on ``device`` (pages from a permutation of a pool 1/16 larger).

    ``vllm_layout``: one ``[num_blocks, Hkv, block_size, 2*D]`` tensor with K and V as its strided
    ``[num_blocks, block_size, Hkv, D]`` views, as vLLM keeps a layer's cache; else contiguous pages.
    """
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    pages = [-(-k // block_size) for k in batch.k_lens]
    used = sum(pages)
    pool = used + max(2, used // 16)
    if vllm_layout:
        kv = torch.empty((pool, heads_kv, block_size, 2 * head_dim), dtype=dtype, device=device).normal_(generator=gen)
        k, v = kv[..., :head_dim].transpose(1, 2), kv[..., head_dim:].transpose(1, 2)
    else:
        k = torch.empty((pool, block_size, heads_kv, head_dim), dtype=dtype, device=device).normal_(generator=gen)
        v = torch.empty_like(k).normal_(generator=gen)
    perm = torch.randperm(pool, generator=gen, device=device).to(torch.int32)
    table = torch.zeros((len(pages), max(pages)), dtype=torch.int32, device=device)
    at = 0
    for i, n in enumerate(pages):
        table[i, :n] = perm[at:at + n]
        at += n
    total_q = sum(batch.q_lens)
    q = torch.empty((total_q, heads_q, head_dim), dtype=dtype, device=device).normal_(generator=gen)
    cu = [0]
    for n in batch.q_lens:
        cu.append(cu[-1] + n)
    return {"q": q, "k": k, "v": v, "block_table": table, "q_lens": list(batch.q_lens), "k_lens": list(batch.k_lens),
            "cu_seqlens_q": torch.tensor(cu, dtype=torch.int32, device=device),
            "seqused_k": torch.tensor(batch.k_lens, dtype=torch.int32, device=device),
            "max_seqlen_q": max(batch.q_lens), "max_seqlen_k": max(batch.k_lens), "scale": head_dim ** -0.5}


def sub_batch(x: dict[str, Any], seqs: Sequence[int]) -> dict[str, Any]:
    """The sequences ``seqs`` of ``x`` as a batch of their own (same cache pages; q rows copied)."""
    import torch

    device = x["q"].device
    cu = x["cu_seqlens_q"].tolist()
    rows = torch.cat([torch.arange(cu[s], cu[s + 1]) for s in seqs]).to(device)
    idx = torch.tensor(list(seqs), device=device)
    q_lens = [x["q_lens"][s] for s in seqs]
    k_lens = [x["k_lens"][s] for s in seqs]
    new_cu = [0]
    for n in q_lens:
        new_cu.append(new_cu[-1] + n)
    return {**x, "q": x["q"].index_select(0, rows).contiguous(), "block_table": x["block_table"].index_select(0, idx),
            "q_lens": q_lens, "k_lens": k_lens, "cu_seqlens_q": torch.tensor(new_cu, dtype=torch.int32, device=device),
            "seqused_k": x["seqused_k"].index_select(0, idx), "max_seqlen_q": max(q_lens), "max_seqlen_k": max(k_lens)}


def _dtype_name(dtype: Any) -> str:
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def varlen_spec(x: dict[str, Any]) -> Any:
    """The runtime's key of the batch, from host-known values (as tritune.varlen_attention keys it)."""
    from tritune._varlen_op import spec_of

    return spec_of(x["q"], x["k"], len(x["q_lens"]), x["max_seqlen_q"], x["max_seqlen_k"], paged=True,
                   causal=True, window=(-1, 0), softcap=False, alibi=False, sinks=False)


def work(x: dict[str, Any]) -> dict[str, float]:
    """FLOPs and bytes of the batch as kernels/varlen_attention.py's ``work_of`` counts them."""
    from tritune.kernels.varlen_attention import work_of

    return work_of(x["q_lens"], x["k_lens"], varlen_spec(x))


# --- backends: (timed fn, collect) -------------------------------------------------------------
# ``collect()`` returns the last call's output as [total_q, Hq, D] rows of the batch.
Backend = tuple[Callable[[], Any], Callable[[], Any]]


def tritune_backend(x: dict[str, Any], forced: Any = None) -> tuple[Backend, dict[str, Any], str]:
    """The varlen kernel with the runtime's config (or ``forced``); (backend, config, rule)."""
    import torch
    from tritune import runtime
    from tritune.kernels.varlen_attention import launch_varlen

    if forced is not None:
        config, rule = forced, "forced"
    else:
        sel = runtime.select(varlen_spec(x), x["q"].device)
        config, rule = sel.config, sel.rule
    out = torch.empty_like(x["q"])

    def fn() -> Any:
        return launch_varlen(x["q"], x["k"], x["v"], x["cu_seqlens_q"], config, seqused_k=x["seqused_k"],
                             block_table=x["block_table"], causal=True, scale=x["scale"], out=out)

    return (fn, lambda: out), config.to_dict(), rule


def paged_backend(x: dict[str, Any]) -> tuple[Backend, dict[str, Any], str]:
    """tritune.paged_attention on decode-like rows: token t of a row with n new tokens and k keys
    is a one-token row over the first k - n + 1 + t keys, on the same pages."""
    import torch
    from tritune import runtime
    from tritune.kernels.paged_attention import launch
    from tritune.search_space import PagedAttentionSpec

    q_lens = torch.tensor(x["q_lens"], device=x["q"].device)
    lens = torch.cat([torch.arange(k - n + 1, k + 1) for n, k in zip(x["q_lens"], x["k_lens"], strict=True)])
    inputs = {"q": x["q"], "k_cache": x["k"], "v_cache": x["v"], "scale": x["scale"],
              "block_table": x["block_table"].repeat_interleave(q_lens, dim=0).contiguous(),
              "seq_lens": lens.to(torch.int32).to(x["q"].device)}
    q = x["q"]
    spec = PagedAttentionSpec(q.shape[0], q.shape[1], x["k"].shape[2], q.shape[2], x["max_seqlen_k"],
                              x["k"].shape[1], _dtype_name(q.dtype))
    sel = runtime.select(spec, q.device)
    out = torch.empty_like(q)
    return ((lambda: launch(inputs, sel.config, out=out)), lambda: out), sel.config.to_dict(), sel.rule


def flash_backend(x: dict[str, Any]) -> tuple[Backend, dict[str, Any], str]:
    """tritune.flash_attention on the chunks, one launch per (q_len, k_len) group, causal
    bottom-right; K/V gathered into contiguous [B, Hkv, k_len, D] first (not timed)."""
    import torch
    from tritune import runtime
    from tritune.kernels import flash_attention as fa
    from tritune.search_space import FlashAttentionSpec

    q, cu = x["q"], x["cu_seqlens_q"].tolist()
    heads_q, head_dim = q.shape[1], q.shape[2]
    heads_kv, page = x["k"].shape[2], x["k"].shape[1]
    groups: dict[tuple[int, int], list[int]] = {}
    for s, (n, k) in enumerate(zip(x["q_lens"], x["k_lens"], strict=True)):
        groups.setdefault((n, k), []).append(s)
    launches, config, rule = [], {}, ""
    for (n, k), seqs in groups.items():
        pages = x["block_table"][seqs, : -(-k // page)].long()
        kk = x["k"][pages].flatten(1, 2)[:, :k].transpose(1, 2).contiguous()
        vv = x["v"][pages].flatten(1, 2)[:, :k].transpose(1, 2).contiguous()
        qq = torch.stack([q[cu[s]:cu[s + 1]] for s in seqs]).transpose(1, 2).contiguous()
        spec = FlashAttentionSpec(len(seqs), heads_q, heads_kv, n, k, head_dim, _dtype_name(q.dtype), True)
        sel = runtime.select(spec, q.device)
        out = torch.empty_like(qq)
        inputs = {"q": qq, "k": kk, "v": vv, "causal": True, "scale": x["scale"]}
        launches.append((inputs, sel.config, out, seqs))
        config, rule = sel.config.to_dict(), sel.rule

    def fn() -> None:
        for inputs, cfg, out, _ in launches:
            fa.launch(inputs, cfg, out=out)

    def collect() -> Any:
        rows = torch.empty_like(q)
        for _, _, out, seqs in launches:
            for j, s in enumerate(seqs):
                rows[cu[s]:cu[s + 1]] = out[j].transpose(0, 1)
        return rows

    return (fn, collect), config, rule if len(groups) == 1 else f"{rule} ({len(groups)} launches)"


def load_vllm(path: str | None) -> tuple[Callable[..., Any] | None, str]:
    """vLLM's ``unified_attention``: from ``path`` (a folder holding the module file
    ``triton_unified_attention.py``, or a ``vllm/`` tree of vLLM's module files as
    scripts/vllm_triton_extract.sh writes ``.vllm-triton``, loaded as bench/vllm_bench.py loads
    it), else from the installed vllm package. (None, why) when it cannot be imported."""
    errors = []
    if path and (Path(path) / "triton_unified_attention.py").is_file():
        file = Path(path) / "triton_unified_attention.py"
        try:
            spec = importlib.util.spec_from_file_location(f"_tritune_vllm_{abs(hash(str(file)))}", file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.unified_attention, f"{file}"
        except Exception as exc:  # a partial vllm raises more than ImportError
            errors.append(f"{file}: {type(exc).__name__}: {_first_line(exc)}")
    else:
        try:  # the loader of bench/vllm_bench.py: a bare vllm/ tree (scripts/vllm_triton_extract.sh)
            from tritune.bench.vllm_bench import load_vllm_ops  # needs vLLM's platform pinned first
        except ImportError:
            load_vllm_ops = None
        if load_vllm_ops is not None:
            fn, _, where = load_vllm_ops(path)
            if fn is not None:
                return fn, where.split(" (its cache write")[0]  # the cache write is vllm_bench's concern
            errors.append(where)
        elif path:
            sys.path.insert(0, path)
    for name in VLLM_MODULES if not errors else ():
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {_first_line(exc)}")
            continue
        fn = getattr(module, "unified_attention", None)
        if callable(fn):
            return fn, f"{module.__name__} ({getattr(module, '__file__', '?')})"
        errors.append(f"{name}: no unified_attention")
    where = f" (also looked in {path})" if path else " (give --vllm-path DIR or set TRITUNE_VLLM_PATH)"
    return None, "vLLM's triton unified_attention is not importable" + where + "; " + "; ".join(errors[:2])


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:100] if str(exc) else ""


def vllm_backend(x: dict[str, Any], unified_attention: Callable[..., Any]) -> Backend:
    """``unified_attention`` as vLLM 0.33's TRITON_ATTN backend calls it: split-KV ("3-D") scratch
    for ``MIN_LAUNCH_GRID_SIZE_2D // Hkv`` sequences of up to 1 + speculative tokens, 16 softmax
    segments, descales of 1 (a bf16 cache), no window, no softcap."""
    import torch

    q, k = x["q"], x["k"]
    heads_q, head_dim, heads_kv = q.shape[1], q.shape[2], k.shape[2]
    threshold = VLLM_MIN_GRID_2D // heads_kv
    spec_len = min(max(q for q in x["q_lens"]), DECODE_MAX_Q)  # vLLM sizes it from its speculative config
    rows = max(1, threshold * spec_len)
    dpad = 1 << (head_dim - 1).bit_length()
    f32 = {"dtype": torch.float32, "device": q.device}
    segm_out = torch.empty((rows, heads_q, VLLM_SEGMENTS, dpad), **f32)
    segm_max = torch.empty((rows, heads_q, VLLM_SEGMENTS), **f32)
    segm_sum = torch.empty((rows, heads_q, VLLM_SEGMENTS), **f32)
    one = torch.ones(1, **f32)
    descale = one.expand(len(x["q_lens"]), heads_kv)
    out = torch.empty_like(q)

    def fn() -> None:
        unified_attention(q=q, k=k, v=x["v"], out=out, cu_seqlens_q=x["cu_seqlens_q"], max_seqlen_q=x["max_seqlen_q"],
                          seqused_k=x["seqused_k"], max_seqlen_k=x["max_seqlen_k"], softmax_scale=x["scale"],
                          causal=True, window_size=(-1, -1), block_table=x["block_table"], softcap=0.0,
                          q_descale=None, k_descale=descale, v_descale=descale, seq_threshold_3D=threshold,
                          num_par_softmax_segments=VLLM_SEGMENTS, softmax_segm_output=segm_out,
                          softmax_segm_max=segm_max, softmax_segm_expsum=segm_sum, sinks=None)

    return fn, lambda: out


# --- the check ---------------------------------------------------------------------------------
def check(x: dict[str, Any], rows: Any, seqs: Sequence[int], sample_rows: int = 16) -> tuple[bool, str]:
    """``rows`` ([total_q, Hq, D] of ``x``) on sampled rows of ``seqs`` against the float64
    reference, with the dtype rule (2x the error of the same math in PyTorch at that dtype)."""
    return check_rows(expected_rows(x, seqs, sample_rows), rows)


def expected_rows(x: dict[str, Any], seqs: Sequence[int], sample_rows: int = 16) -> tuple[Any, Any, Any]:
    """(sampled row indices, float64 reference, same math in the input dtype) of ``x``'s ``seqs``:
    computed once per batch and shared by every backend's check (the CPU reference is the slow part).

    Sampled: the first, middle and last decode-like sequence, and the first and last
    ``sample_rows`` query rows of every prefill chunk (its boundary rows), each as a sequence of
    its own with ``kv_bounds`` placing it in its chunk.
    """
    import torch
    from tritune.kernels.varlen_attention import attention_math

    cu = x["cu_seqlens_q"].tolist()
    decode = [s for s in seqs if x["q_lens"][s] <= DECODE_MAX_Q]
    picks: list[tuple[int, int, int]] = []  # (sequence, first row, end row) within the sequence
    for s in sorted({decode[0], decode[len(decode) // 2], decode[-1]} if decode else set()):
        picks.append((s, 0, x["q_lens"][s]))
    for s in seqs:
        n = x["q_lens"][s]
        if n > DECODE_MAX_Q:
            head, tail = min(sample_rows, n), max(min(sample_rows, n), n - sample_rows)
            picks += [(s, 0, head)] + ([(s, tail, n)] if tail < n else [])
    device = x["q"].device
    take = torch.cat([torch.arange(cu[s] + a, cu[s] + b) for s, a, b in picks]).to(device)
    lens = [b - a for _, a, b in picks]
    sub_cu = [0]
    for n in lens:
        sub_cu.append(sub_cu[-1] + n)
    # keys 0 <= j < k_len; row a of the sequence sits at position a + k_len - q_len
    bounds = [[0, x["k_lens"][s], a + x["k_lens"][s] - x["q_lens"][s]] for s, a, _ in picks]
    idx = torch.tensor([s for s, _, _ in picks], device=device)
    inputs = {"q": x["q"].index_select(0, take), "k": x["k"], "v": x["v"],
              "cu_seqlens_q": torch.tensor(sub_cu, dtype=torch.int32),
              "block_table": x["block_table"].index_select(0, idx), "seqused_k": x["seqused_k"].index_select(0, idx),
              "kv_bounds": torch.tensor(bounds, dtype=torch.int32), "causal": True, "scale": x["scale"]}
    return take, attention_math(inputs, torch.float64)[0], attention_math(inputs, x["q"].dtype)[0]


def check_rows(expected: tuple[Any, Any, Any], rows: Any) -> tuple[bool, str]:
    """(ok, message) of a backend's ``rows`` against ``expected_rows``."""
    from tritune.kernels import compare

    take, ref, base = expected
    verdict = compare(rows.index_select(0, take).cpu(), ref, base)
    return verdict.ok, verdict.message or ""


def decode_contexts(n: int, lo: int, hi: int) -> tuple[int, ...]:
    """``n`` context lengths spread evenly over [lo, hi] (deterministic)."""
    if n == 1:
        return (hi,)
    return tuple(int(round(lo + i * (hi - lo) / (n - 1))) for i in range(n))


def roof(flops: float, bytes_: float, ms: float, copy_gbps: float | None, matmul_tflops: float | None
         ) -> tuple[float | None, str]:
    """(fraction of the roofline floor, which bound): floor = max(bytes / copy bandwidth, FLOPs /
    matmul rate), both measured ceilings; a decode-like batch is bound by the first."""
    if not ms or not copy_gbps or not matmul_tflops:
        return None, ""
    t_mem = bytes_ / (copy_gbps * 1e9)
    t_math = flops / (matmul_tflops * 1e12)
    floor = max(t_mem, t_math)
    return floor / (ms * 1e-3), "memory" if t_mem >= t_math else "compute"


__all__ = ["DECODE_MAX_Q", "ServingBatch", "check", "check_rows", "decode_contexts", "expected_rows", "flash_backend", "load_vllm",
           "make_serving_batch", "paged_backend", "roof", "sub_batch", "tritune_backend", "varlen_spec",
           "vllm_backend", "work"]
