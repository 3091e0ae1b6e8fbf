"""``tritune.varlen_attention``: one tuned launch for a whole serving step (ragged batch, paged KV).

The public function checks its arguments (ValueError naming the argument), keys the runtime's
table with a bucket built from host-known values only (the tensors' shapes, ``max_seqlen_q``,
``max_seqlen_k``, the features in use), and calls the ``tritune::varlen_attention`` torch
operator, which writes into ``out``. Nothing on the hot path reads the device: checks of tensor
*values* (cu_seqlens monotone, lengths within the block table, page ids inside the cache) run
by default only on CPU tensors, and are switched with ``TRITUNE_VALIDATE=1/0`` or
``tritune._paged_op.set_validation``.

A tuned config that fails to launch here (out of resources on this card, a compile error on
this Triton) is dropped for its bucket, logged once, and the bucket's safe default runs instead:
inference never crashes on a tuned config.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from tritune._paged_op import _is_fake, _value_checks_on, refuse_grad
from tritune.search_space import VarlenAttentionSpec, interpreting

log = logging.getLogger("tritune.varlen")

_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16"}
FP8 = torch.float8_e4m3fn
MAX_HEAD_DIM = VarlenAttentionSpec.MAX_HEAD_DIM

SCHEMA = ("(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, int max_seqlen_q, int max_seqlen_k, "
          "Tensor? cu_seqlens_k, Tensor? seqused_k, Tensor? block_table, Tensor? kv_bounds, bool causal, "
          "int window_left, int window_right, float softcap, Tensor? alibi_slopes, Tensor? sinks, float scale, "
          "Tensor? k_descale, Tensor? v_descale, Tensor(a!) out, Tensor(b!) lse, bool return_lse) -> ()")


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     max_seqlen_q: int, max_seqlen_k: int, *, cu_seqlens_k: torch.Tensor | None = None,
                     seqused_k: torch.Tensor | None = None, block_table: torch.Tensor | None = None,
                     causal: bool = False, window_size: Sequence[int] = (-1, -1), softcap: float = 0.0,
                     alibi_slopes: torch.Tensor | None = None, sinks: torch.Tensor | None = None,
                     scale: float | None = None, k_descale: torch.Tensor | None = None,
                     v_descale: torch.Tensor | None = None, kv_bounds: torch.Tensor | None = None,
                     out: torch.Tensor | None = None, return_lse: bool = False,
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of a ragged batch of sequences, each over its own keys, in one tuned launch.

    ``q`` ``[total_q, Hq, D]``: sequence b's new tokens are rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]``
    (``[B+1]`` int32). K/V (same layout and dtype for both; innermost stride 1, other strides
    free): packed ``[total_k, Hkv, D]`` with ``cu_seqlens_k``; paged ``[num_blocks, block_size,
    Hkv, D]`` with ``block_table`` ``[B, max_blocks]`` int32 and ``seqused_k`` ``[B]`` int32 (keys
    per sequence, new tokens included); or batched ``[B, S_k, Hkv, D]`` (``seqused_k`` optional).
    ``max_seqlen_q`` / ``max_seqlen_k``: host ints, upper bounds of the per-sequence lengths
    (they choose the tuned config; they never change the result).

    ``causal``: bottom-right aligned per sequence, query i at position ``i + k_b - q_b``.
    ``window_size=(left, right)`` as flash-attn (-1 unbounded; causal means right = 0);
    ``softcap`` > 0 caps the scaled scores with tanh; ``alibi_slopes`` fp32 ``[Hq]`` or
    ``[B, Hq]`` adds ``-slope * |pos - j|``; ``sinks`` ``[Hq]`` adds a per-head logit to the
    softmax denominator. FP8 (``torch.float8_e4m3fn``) K/V need ``k_descale``/``v_descale``
    (fp32, ``[1]``, ``[Hkv]`` or ``[B, Hkv]``). ``kv_bounds`` int32 ``[B, 3]`` rows (lo, hi, shift):
    sequence b sees keys ``lo <= j < hi`` and its query i sits at ``i + shift`` (padded batches,
    left-padded caches). ``out`` is written in place and returned; ``return_lse`` also returns
    the natural-log LSE ``[Hq, total_q]`` fp32 (sinks included; -inf where a row sees no key).
    """
    window = _check_window(window_size, causal)
    check_arguments(q, k, v, cu_seqlens_q, max_seqlen_q, max_seqlen_k, cu_seqlens_k=cu_seqlens_k,
                    seqused_k=seqused_k, block_table=block_table, alibi_slopes=alibi_slopes, sinks=sinks,
                    k_descale=k_descale, v_descale=v_descale, kv_bounds=kv_bounds, out=out)
    softcap = _check_softcap(softcap)
    refuse_grad("tritune.varlen_attention", q=q, k=k, v=v, sinks=sinks, alibi_slopes=alibi_slopes)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale={scale!r} must be a finite positive number (or None for 1/sqrt(head_dim))")
    if not _is_fake(q) and _value_checks_on(q.device) and not torch.compiler.is_compiling():
        check_values(q, k, cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k,
                     block_table=block_table, kv_bounds=kv_bounds)
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((q.shape[1], q.shape[0]) if return_lse else (0,), dtype=torch.float32, device=q.device)
    torch.ops.tritune.varlen_attention(q, k, v, cu_seqlens_q, int(max_seqlen_q), int(max_seqlen_k), cu_seqlens_k,
                                       seqused_k, block_table, kv_bounds, bool(causal), window[0], window[1],
                                       softcap, alibi_slopes, sinks, float(scale), k_descale, v_descale, out, lse,
                                       bool(return_lse))
    return (out, lse) if return_lse else out


# --- checks -----------------------------------------------------------------------------------

def _check_window(window_size: Sequence[int], causal: bool) -> tuple[int, int]:
    if (not isinstance(window_size, tuple | list) or len(window_size) != 2
            or not all(isinstance(w, int) and not isinstance(w, bool) for w in window_size)):
        raise ValueError(f"window_size={window_size!r} must be a pair of ints (left, right); -1 means unbounded")
    left, right = (int(w) for w in window_size)
    if left < -1 or right < -1:
        raise ValueError(f"window_size={tuple(window_size)!r}: each side must be >= 0, or -1 for unbounded")
    return left, 0 if causal else right


def _check_softcap(softcap: float) -> float:
    if softcap is None:
        return 0.0
    if isinstance(softcap, bool) or not isinstance(softcap, int | float) or not math.isfinite(softcap) or softcap < 0:
        raise ValueError(f"softcap={softcap!r} must be a finite number >= 0 (0 turns capping off)")
    return float(softcap)


def check_arguments(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                    max_seqlen_q: int, max_seqlen_k: int, *, cu_seqlens_k: torch.Tensor | None = None,
                    seqused_k: torch.Tensor | None = None, block_table: torch.Tensor | None = None,
                    alibi_slopes: torch.Tensor | None = None, sinks: torch.Tensor | None = None,
                    k_descale: torch.Tensor | None = None, v_descale: torch.Tensor | None = None,
                    kv_bounds: torch.Tensor | None = None, out: torch.Tensor | None = None) -> None:
    """Shape, dtype and device checks (no tensor values read); ValueError naming the argument."""
    for name, t in (("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 3:
        raise ValueError(f"q must be [total_q, heads_q, head_dim], got shape {tuple(q.shape)}")
    if q.dtype not in _DTYPES:
        raise ValueError(f"q.dtype={q.dtype} is not supported; use torch.float16 or torch.bfloat16")
    total_q, heads_q, head_dim = q.shape
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim={head_dim} (q.shape[2]) is not supported; supported: 1..{MAX_HEAD_DIM}")
    if k.dim() not in (3, 4):
        raise ValueError(f"k must be packed [total_k, Hkv, D] or paged/batched 4-D, got shape {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v.shape={tuple(v.shape)} must equal k.shape={tuple(k.shape)}")
    if k.dtype != v.dtype:
        raise ValueError(f"k.dtype={k.dtype} and v.dtype={v.dtype} differ; K and V share one cache dtype")
    if k.dtype not in (q.dtype, FP8):
        raise ValueError(f"k.dtype={k.dtype} must equal q.dtype={q.dtype} or be torch.float8_e4m3fn (FP8 cache)")
    if k.shape[-1] != head_dim:
        raise ValueError(f"k.shape[-1]={k.shape[-1]} (head_dim) must equal q.shape[2]={head_dim}")
    heads_kv = k.shape[-2]
    if heads_kv < 1 or heads_q % heads_kv:
        raise ValueError(f"q.shape[1]={heads_q} (heads_q) must be a multiple of k.shape[-2]={heads_kv} (heads_kv)")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous along head_dim (stride(-1) is {t.stride(-1)})")
    num_seqs = cu_seqlens_q.shape[0] - 1 if cu_seqlens_q.dim() == 1 else -1
    if cu_seqlens_q.dtype != torch.int32 or num_seqs < 0:
        raise ValueError(f"cu_seqlens_q must be an int32 [num_seqs + 1] tensor, got {cu_seqlens_q.dtype} "
                         f"{tuple(cu_seqlens_q.shape)}")
    if k.dim() == 3:
        if cu_seqlens_k is None:
            raise ValueError("packed k [total_k, Hkv, D] needs cu_seqlens_k (int32 [num_seqs + 1])")
        if block_table is not None:
            raise ValueError("block_table needs a paged cache k [num_blocks, block_size, Hkv, D], got packed 3-D k")
    elif block_table is not None:
        if seqused_k is None and kv_bounds is None:
            raise ValueError("a paged cache (block_table given) needs seqused_k: the keys of each sequence")
        if block_table.dtype != torch.int32 or block_table.dim() != 2 or block_table.shape[0] != num_seqs:
            raise ValueError(f"block_table must be int32 [num_seqs={num_seqs}, max_blocks], got {block_table.dtype} "
                             f"{tuple(block_table.shape)}")
    elif k.shape[0] != num_seqs:
        raise ValueError(f"batched k [B, S_k, Hkv, D] needs k.shape[0]={k.shape[0]} == num_seqs={num_seqs} "
                         "(len(cu_seqlens_q) - 1); pass block_table for a paged cache")
    for name, t, width in (("cu_seqlens_k", cu_seqlens_k, num_seqs + 1), ("seqused_k", seqused_k, num_seqs)):
        if t is not None and (t.dtype != torch.int32 or t.dim() != 1 or t.shape[0] != width):
            raise ValueError(f"{name} must be an int32 [{width}] tensor, got {t.dtype} {tuple(t.shape)}")
    if kv_bounds is not None and (kv_bounds.dtype != torch.int32 or tuple(kv_bounds.shape) != (num_seqs, 3)
                                  or not kv_bounds.is_contiguous()):
        raise ValueError(f"kv_bounds must be a contiguous int32 [num_seqs={num_seqs}, 3] tensor of (lo, hi, shift)")
    if alibi_slopes is not None and (alibi_slopes.dtype != torch.float32
                                     or tuple(alibi_slopes.shape) not in ((heads_q,), (num_seqs, heads_q))):
        raise ValueError(f"alibi_slopes must be float32 [{heads_q}] or [{num_seqs}, {heads_q}], got "
                         f"{alibi_slopes.dtype} {tuple(alibi_slopes.shape)}")
    if sinks is not None and (not sinks.is_floating_point() or tuple(sinks.shape) != (heads_q,)):
        raise ValueError(f"sinks must be a float [{heads_q}] tensor (one logit per query head), got "
                         f"{sinks.dtype} {tuple(sinks.shape)}")
    if k.dtype == FP8:
        for name, t in (("k_descale", k_descale), ("v_descale", v_descale)):
            if t is None:
                raise ValueError(f"an FP8 cache needs {name} (float32 [1], [Hkv] or [num_seqs, Hkv])")
            if t.dtype != torch.float32 or tuple(t.shape) not in ((1,), (heads_kv,), (num_seqs, heads_kv)):
                raise ValueError(f"{name} must be float32 [1], [{heads_kv}] or [{num_seqs}, {heads_kv}], got "
                                 f"{t.dtype} {tuple(t.shape)}")
        if k_descale.shape != v_descale.shape or k_descale.stride() != v_descale.stride():
            raise ValueError("k_descale and v_descale must have the same shape and strides")
    elif k_descale is not None or v_descale is not None:
        raise ValueError(f"k_descale/v_descale apply to an FP8 cache only; k.dtype is {k.dtype}")
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or out.stride(-1) != 1):
        raise ValueError(f"out must be [total_q, Hq, D] = {tuple(q.shape)} in {q.dtype} with stride(-1) 1")
    for name in ("max_seqlen_q", "max_seqlen_k"):
        value = max_seqlen_q if name == "max_seqlen_q" else max_seqlen_k
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r} must be a non-negative host int (an upper bound is fine)")
    if total_q > max(1, num_seqs) * max(max_seqlen_q, 0) and total_q > 0:
        raise ValueError(f"max_seqlen_q={max_seqlen_q} is too small: {num_seqs} sequences bring {total_q} query rows")
    for name, t in (("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k),
                    ("seqused_k", seqused_k), ("block_table", block_table), ("alibi_slopes", alibi_slopes),
                    ("sinks", sinks), ("k_descale", k_descale), ("v_descale", v_descale),
                    ("kv_bounds", kv_bounds), ("out", out)):
        if t is not None and t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, q on {q.device}; all arguments must share a device")
    if q.device.type not in ("cuda", "meta") and not interpreting():
        raise ValueError(f"q is on {q.device}; tritune.varlen_attention runs on CUDA GPUs "
                         "(or on CPU with TRITON_INTERPRET=1 set before tritune is imported)")


def check_values(q: torch.Tensor, k: torch.Tensor, cu_seqlens_q: torch.Tensor, *,
                 cu_seqlens_k: torch.Tensor | None, seqused_k: torch.Tensor | None,
                 block_table: torch.Tensor | None, kv_bounds: torch.Tensor | None) -> None:
    """Checks that read tensor values (a device sync on a GPU); ValueError naming the argument."""
    _check_cumulative("cu_seqlens_q", cu_seqlens_q, q.shape[0], exact=True)
    if cu_seqlens_k is not None:
        _check_cumulative("cu_seqlens_k", cu_seqlens_k, k.shape[0], exact=k.dim() == 3)
    if block_table is not None:
        capacity = block_table.shape[1] * k.shape[1]
    elif k.dim() == 4:
        capacity = k.shape[1]
    else:
        capacity = None
    if seqused_k is not None and seqused_k.numel():
        lens = seqused_k.long()
        if bool((lens < 0).any()):
            at = int((lens < 0).nonzero()[0, 0])
            raise ValueError(f"seqused_k[{at}] = {int(lens[at])} is negative")
        limit = capacity
        if limit is not None and bool((lens > limit).any()):
            at = int((lens > limit).nonzero()[0, 0])
            raise ValueError(f"seqused_k[{at}] = {int(lens[at])} is beyond the sequence's pages "
                             f"({capacity} key slots)")
    if kv_bounds is not None and kv_bounds.numel():
        lo, hi = kv_bounds[:, 0].long(), kv_bounds[:, 1].long()
        bad = (lo < 0) | (hi < lo) | ((hi > capacity) if capacity is not None else torch.zeros_like(lo, dtype=torch.bool))
        if bool(bad.any()):
            at = int(bad.nonzero()[0, 0])
            raise ValueError(f"kv_bounds[{at}] = {kv_bounds[at].tolist()} needs 0 <= lo <= hi <= {capacity}")
    if block_table is not None:
        if seqused_k is not None:
            keys = seqused_k.long()
        else:
            keys = kv_bounds[:, 1].long()
        page = k.shape[1]
        used = torch.arange(block_table.shape[1], device=block_table.device)[None, :] < (-(-keys // page))[:, None]
        bad = used & ((block_table < 0) | (block_table >= k.shape[0]))
        if bool(bad.any()):
            s, c = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"block_table[{s}, {c}] = {int(block_table[s, c])} is not a block of the cache "
                             f"(valid ids: 0..{k.shape[0] - 1})")


def _check_cumulative(name: str, t: torch.Tensor, total: int, *, exact: bool) -> None:
    values = t.long()
    if values.numel() == 0 or int(values[0]) != 0:
        raise ValueError(f"{name}[0] must be 0, got {values[:1].tolist()}")
    steps = values[1:] - values[:-1]
    if bool((steps < 0).any()):
        at = int((steps < 0).nonzero()[0, 0])
        raise ValueError(f"{name} must be non-decreasing: {name}[{at}] = {int(values[at])} > "
                         f"{name}[{at + 1}] = {int(values[at + 1])}")
    last = int(values[-1])
    if (exact and last != total) or last > total:
        raise ValueError(f"{name}[-1] = {last} does not match the packed length {total}")


# --- dispatch ---------------------------------------------------------------------------------

def spec_of(q: torch.Tensor, k: torch.Tensor, num_seqs: int, max_seqlen_q: int, max_seqlen_k: int, *,
            paged: bool, causal: bool, window: tuple[int, int], softcap: bool, alibi: bool,
            sinks: bool) -> VarlenAttentionSpec:
    """The runtime key of a call, from host-known values only."""
    total_q, heads_q, head_dim = q.shape
    num_seqs = max(1, num_seqs)
    max_q = max(1, min(max_seqlen_q, total_q))
    total = max(max_q, min(max(1, total_q), num_seqs * max_q))
    return VarlenAttentionSpec(
        num_seqs=num_seqs, total_q=total, max_seqlen_q=max_q, max_seqlen_k=max(1, max_seqlen_k),
        heads_q=heads_q, heads_kv=k.shape[-2], head_dim=head_dim, block_size=k.shape[1] if paged else 0,
        dtype=_DTYPES[q.dtype], kv_dtype="fp8" if k.dtype == FP8 else "auto", causal=causal,
        window_left=window[0], window_right=window[1], softcap=softcap, alibi=alibi, sinks=sinks)


def _varlen_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor, max_seqlen_q: int,
                 max_seqlen_k: int, cu_seqlens_k: torch.Tensor | None, seqused_k: torch.Tensor | None,
                 block_table: torch.Tensor | None, kv_bounds: torch.Tensor | None, causal: bool,
                 window_left: int, window_right: int, softcap: float, alibi_slopes: torch.Tensor | None,
                 sinks: torch.Tensor | None, scale: float, k_descale: torch.Tensor | None,
                 v_descale: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor, return_lse: bool) -> None:
    # Imported here: defining the kernels pins TRITON_INTERPRET, which callers set before first use.
    from tritune import runtime
    from tritune.kernels.varlen_attention import launch_varlen

    num_seqs = cu_seqlens_q.shape[0] - 1
    paged = block_table is not None
    features = (bool(causal), (window_left, window_right), softcap > 0, alibi_slopes is not None, sinks is not None)
    key = ("varlen_attention", num_seqs, q.shape[0], max_seqlen_q, max_seqlen_k, q.shape[1], k.shape[-2],
           q.shape[2], k.shape[1] if paged else 0, q.dtype, k.dtype, features)

    def make_spec() -> VarlenAttentionSpec:
        if k.dtype == FP8 and q.device.type == "cuda" and torch.cuda.get_device_capability(q.device) < (8, 9):
            raise ValueError(f"k/v are torch.float8_e4m3fn: an FP8 (e4m3) cache needs sm_89+ (Ada, Hopper); "
                             f"{torch.cuda.get_device_name(q.device)} cannot convert it; use a 16-bit cache")
        return spec_of(q, k, num_seqs, max_seqlen_q, max_seqlen_k, paged=paged, causal=features[0],
                       window=features[1], softcap=features[2], alibi=features[3], sinks=features[4])

    disp = runtime.dispatcher(q.device)
    selection = disp.lookup_by(key, make_spec)
    kwargs = dict(cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k, block_table=block_table, kv_bounds=kv_bounds,
                  causal=causal, window_size=(window_left, window_right), softcap=softcap,
                  alibi_slopes=alibi_slopes, sinks=sinks, scale=scale, k_descale=k_descale, v_descale=v_descale,
                  out=out, lse=lse if return_lse else None)
    try:
        launch_varlen(q, k, v, cu_seqlens_q, selection.config, **kwargs)
    except Exception as exc:
        if selection.rule == "default":
            raise
        # Out of resources on this card, a compile error on this Triton...: never crash inference
        # on a tuned config. The bucket keeps the default from now on (logged once).
        fallback = disp.drop(key, make_spec(), f"{type(exc).__name__}: {exc}")
        launch_varlen(q, k, v, cu_seqlens_q, fallback.config, **kwargs)


_varlen_op = torch.library.custom_op("tritune::varlen_attention", _varlen_impl, mutates_args=("out", "lse"),
                                     schema=SCHEMA)


@_varlen_op.register_fake
def _varlen_fake(*args: object) -> None:
    return None


__all__ = ["check_arguments", "check_values", "spec_of", "varlen_attention"]
