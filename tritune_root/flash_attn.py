"""``tritune.flash_attn``: flash-attn 2.x's forward API on the tuned varlen kernel.

Code written for flash-attn swaps its import (``from tritune.flash_attn import flash_attn_func,
flash_attn_varlen_func, flash_attn_with_kvcache``): the same positional signatures, the same
layouts (``[batch, seqlen, heads, head_dim]``, packed ``[total, heads, head_dim]``, paged
``[num_blocks, page_size, heads_kv, head_dim]``) and the same semantics (GQA/MQA without
repeating K/V; causal aligned bottom-right, rows that see no key give 0; ``window_size=(left,
right)`` with -1 unbounded; ``softcap``; ``alibi_slopes``). Every call goes through
``tritune.varlen_attention``, which takes its config from the runtime's tuned table for this
device and batch bucket.

What differs, on purpose:
- forward only. ``dropout_p > 0``, ``return_attn_probs=True``, ``deterministic=True`` (a
  backward-pass option) and inputs that require grad under grad mode raise ValueError naming the
  argument;
- extra keyword-only arguments: ``return_softmax_lse`` on every function (flash-attn 2 returns the
  log-sum-exp only together with the attention probabilities), ``seqused_k`` on the varlen
  functions (as in flash-attn 3 and vLLM's fork) and ``s_aux`` (gpt-oss's per-head sink logits
  ``[Hq]``, joining the softmax denominator; named as in vLLM's flash-attn fork, the name
  transformers' flash integration passes them under);
- ``num_splits`` is accepted and ignored: the split count is a tuned knob of the config;
- rows that see no key get a log-sum-exp of -inf (log of an empty sum; flash-attn 2's CUDA
  kernel writes +inf there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tritune._paged_op import _value_checks_on, refuse_grad
from tritune._varlen_op import varlen_attention

# Page sizes tried when a dense per-sequence cache is read through a page table (cache_batch_idx):
# the largest that divides the cache length turns the remap into page ids with no copy.
_DENSE_PAGE_SIZES = (256, 128, 64, 32, 16)


# --------------------------------------------------------------------------------------------
# argument checks shared by every function

def _forward_only(tensors: dict[str, torch.Tensor | None], dropout_p: float = 0.0, deterministic: bool = False,
                  return_attn_probs: bool = False) -> None:
    """Reject what a forward-only, dropout-free kernel cannot honour; the error names the argument."""
    if not isinstance(dropout_p, int | float) or dropout_p != 0:
        raise ValueError(f"dropout_p={dropout_p!r}: tritune.flash_attn has no dropout; pass dropout_p=0.0 "
                         "(flash-attn's advice for evaluation)")
    if return_attn_probs:
        raise ValueError("return_attn_probs=True: tritune.flash_attn never materializes the attention "
                         "probabilities; pass return_softmax_lse=True for the log-sum-exp")
    if deterministic:
        raise ValueError("deterministic=True selects flash-attn's deterministic backward pass; tritune.flash_attn "
                         "is forward-only (its forward is deterministic): pass deterministic=False")
    refuse_grad("tritune.flash_attn", **tensors)


def _scale(softmax_scale: float | None, head_dim: int) -> float:
    if softmax_scale is None:
        return 1.0 / math.sqrt(head_dim)
    if not isinstance(softmax_scale, int | float) or not math.isfinite(softmax_scale) or softmax_scale <= 0:
        raise ValueError(f"softmax_scale={softmax_scale!r} must be a finite positive number "
                         "(or None for 1/sqrt(head_dim))")
    return float(softmax_scale)


def _window(window_size: Any) -> tuple[int, int]:
    if (not isinstance(window_size, Sequence) or len(window_size) != 2
            or not all(isinstance(w, int) and not isinstance(w, bool) for w in window_size)):
        raise ValueError(f"window_size={window_size!r} must be a pair of ints (left, right); -1 means unbounded")
    left, right = window_size
    if left < -1 or right < -1:
        raise ValueError(f"window_size={window_size!r}: each side must be >= 0, or -1 for unbounded")
    return int(left), int(right)


def _softcap(softcap: Any) -> float:
    if not isinstance(softcap, int | float) or isinstance(softcap, bool) or not math.isfinite(softcap) or softcap < 0:
        raise ValueError(f"softcap={softcap!r} must be a finite number >= 0 (0.0 disables capping)")
    return float(softcap)


def _dims(t: Any, name: str, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}; got shape {tuple(t.shape)}")
    return t


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    # flash-attn makes a copy when the last dimension is strided; so do we (the kernel needs it).
    return t if t.stride(-1) == 1 else t.contiguous()


def _even_cu_seqlens(batch: int, seqlen: int, device: torch.device) -> torch.Tensor:
    return torch.arange(batch + 1, dtype=torch.int32, device=device) * seqlen


def _sinks(s_aux: torch.Tensor | None) -> torch.Tensor | None:
    # transformers hands the sinks in the model's dtype; the kernel reads them as fp32 [Hq].
    return s_aux if s_aux is None or s_aux.dtype == torch.float32 else s_aux.float()


def _batched_result(result, batch: int, seqlen_q: int):
    """The op's packed ``out [B*Sq, H, D]`` (and ``lse [H, B*Sq]``) in flash-attn's batched layouts:
    ``[B, Sq, H, D]`` and ``[B, H, Sq]``."""
    if isinstance(result, tuple):
        out, lse = result
        lse = lse.view(lse.shape[0], batch, seqlen_q).permute(1, 0, 2).contiguous()
        return out.view(batch, seqlen_q, *out.shape[1:]), lse
    return result.view(batch, seqlen_q, *result.shape[1:])


# --------------------------------------------------------------------------------------------
# flash_attn_func and its packed forms: [B, S, H, D]

def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False, *, s_aux=None,
                    return_softmax_lse=False):
    """flash-attn's ``flash_attn_func``: q ``[B, Sq, Hq, D]``, k/v ``[B, Sk, Hkv, D]`` -> ``[B, Sq, Hq, D]``.

    Causal is aligned bottom-right (query i sees keys j <= i + Sk - Sq); a window keeps keys
    ``i + Sk - Sq - left <= j <= i + Sk - Sq + right``. With ``return_softmax_lse`` also returns
    the log-sum-exp of the scaled scores, fp32 ``[B, Hq, Sq]``.
    """
    _forward_only({"q": q, "k": k, "v": v}, dropout_p, deterministic, return_attn_probs)
    q = _dims(q, "q", 4, "[batch, seqlen_q, heads_q, head_dim]")
    k = _dims(k, "k", 4, "[batch, seqlen_k, heads_kv, head_dim]")
    v = _dims(v, "v", 4, "[batch, seqlen_k, heads_kv, head_dim]")
    if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:
        raise ValueError(f"k/v batch ({k.shape[0]}/{v.shape[0]}) must equal q's batch {q.shape[0]}")
    batch, seqlen_q, heads_q, head_dim = q.shape
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    result = varlen_attention(
        q.reshape(batch * seqlen_q, heads_q, head_dim), k, v, _even_cu_seqlens(batch, seqlen_q, q.device),
        seqlen_q, k.shape[1], causal=bool(causal), window_size=_window(window_size), softcap=_softcap(softcap),
        alibi_slopes=alibi_slopes, sinks=_sinks(s_aux), scale=_scale(softmax_scale, head_dim), return_lse=bool(return_softmax_lse))
    return _batched_result(result, batch, seqlen_q)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False, *,
                              s_aux=None, return_softmax_lse=False):
    """flash-attn's ``flash_attn_qkvpacked_func``: qkv ``[B, S, 3, H, D]`` (views, no copy)."""
    qkv = _dims(qkv, "qkv", 5, "[batch, seqlen, 3, heads, head_dim]")
    if qkv.shape[2] != 3:
        raise ValueError(f"qkv.shape[2]={qkv.shape[2]} must be 3 (q, k, v stacked)")
    _forward_only({"qkv": qkv})
    return flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_p, softmax_scale, causal, window_size,
                           softcap, alibi_slopes, deterministic, return_attn_probs, s_aux=s_aux,
                           return_softmax_lse=return_softmax_lse)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False, *,
                             s_aux=None, return_softmax_lse=False):
    """flash-attn's ``flash_attn_kvpacked_func``: kv ``[B, Sk, 2, Hkv, D]`` (views, no copy)."""
    kv = _dims(kv, "kv", 5, "[batch, seqlen_k, 2, heads_kv, head_dim]")
    if kv.shape[2] != 2:
        raise ValueError(f"kv.shape[2]={kv.shape[2]} must be 2 (k, v stacked)")
    _forward_only({"kv": kv})
    return flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], dropout_p, softmax_scale, causal, window_size, softcap,
                           alibi_slopes, deterministic, return_attn_probs, s_aux=s_aux,
                           return_softmax_lse=return_softmax_lse)


# --------------------------------------------------------------------------------------------
# varlen: packed [total, H, D], optionally paged K/V

def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None, *, seqused_k=None,
                           s_aux=None, return_softmax_lse=False):
    """flash-attn's ``flash_attn_varlen_func``: q ``[total_q, Hq, D]`` with ``cu_seqlens_q`` ``[B+1]`` int32.

    K/V are packed ``[total_k, Hkv, D]`` with ``cu_seqlens_k``, or (with ``block_table``
    ``[B, max_blocks]`` int32) paged ``[num_blocks, page_size, Hkv, D]``, sequence b's keys
    counted by ``cu_seqlens_k[b+1] - cu_seqlens_k[b]``. ``seqused_k`` ``[B]`` int32 (keyword)
    caps the keys each sequence uses; with a block table it may replace ``cu_seqlens_k``.
    ``max_seqlen_q``/``max_seqlen_k`` are host ints (upper bounds are fine). Causal alignment
    is per sequence. With ``return_softmax_lse`` also returns fp32 ``[Hq, total_q]``.
    """
    _forward_only({"q": q, "k": k, "v": v}, dropout_p, deterministic, return_attn_probs)
    q = _dims(q, "q", 3, "[total_q, heads_q, head_dim]")
    paged = block_table is not None
    kv_layout = "[num_blocks, page_size, heads_kv, head_dim] (paged)" if paged else "[total_k, heads_kv, head_dim]"
    k = _dims(k, "k", 4 if paged else 3, kv_layout)
    v = _dims(v, "v", 4 if paged else 3, kv_layout)
    for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(value, torch.Tensor) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r} must be a host int >= 0 (an upper bound is fine)")
    if paged and seqused_k is None:
        if cu_seqlens_k is None:
            raise ValueError("cu_seqlens_k is None: with a block_table pass cu_seqlens_k or seqused_k")
        seqused_k = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).to(torch.int32)
    if not paged and cu_seqlens_k is None:
        raise ValueError("cu_seqlens_k is None: packed K/V need cu_seqlens_k [batch + 1] int32")
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    return varlen_attention(
        q, k, v, cu_seqlens_q, max_seqlen_q, max_seqlen_k, cu_seqlens_k=None if paged else cu_seqlens_k,
        seqused_k=seqused_k, block_table=block_table, causal=bool(causal), window_size=_window(window_size),
        softcap=_softcap(softcap), alibi_slopes=alibi_slopes, sinks=_sinks(s_aux), scale=_scale(softmax_scale, q.shape[-1]),
        return_lse=bool(return_softmax_lse))  # lse [Hq, total_q]: flash-attn's varlen layout


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False,
                                     window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False, *, s_aux=None, return_softmax_lse=False):
    """flash-attn's ``flash_attn_varlen_qkvpacked_func``: qkv ``[total, 3, H, D]``."""
    qkv = _dims(qkv, "qkv", 4, "[total, 3, heads, head_dim]")
    if qkv.shape[1] != 3:
        raise ValueError(f"qkv.shape[1]={qkv.shape[1]} must be 3 (q, k, v stacked)")
    _forward_only({"qkv": qkv})
    return flash_attn_varlen_func(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                  dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                                  return_attn_probs, s_aux=s_aux, return_softmax_lse=return_softmax_lse)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                    softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                                    alibi_slopes=None, deterministic=False, return_attn_probs=False, *, s_aux=None,
                                    return_softmax_lse=False):
    """flash-attn's ``flash_attn_varlen_kvpacked_func``: kv ``[total_k, 2, Hkv, D]``."""
    kv = _dims(kv, "kv", 4, "[total_k, 2, heads_kv, head_dim]")
    if kv.shape[1] != 2:
        raise ValueError(f"kv.shape[1]={kv.shape[1]} must be 2 (k, v stacked)")
    _forward_only({"kv": kv})
    return flash_attn_varlen_func(q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                                  return_attn_probs, s_aux=s_aux, return_softmax_lse=return_softmax_lse)


# --------------------------------------------------------------------------------------------
# flash_attn_with_kvcache: decode / chunked prefill over a dense or paged cache

def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False, *,
                            s_aux=None):
    """flash-attn's ``flash_attn_with_kvcache``: attention of q ``[B, Sq, Hq, D]`` over a KV cache.

    The cache is dense ``[B_cache, S_cache, Hkv, D]`` (row ``cache_batch_idx[b]``, default b) or,
    with ``block_table`` ``[B, max_blocks]`` int32, paged ``[num_blocks, page_size, Hkv, D]``.
    ``cache_seqlens`` (int or ``[B]`` int32) is where each sequence's cache ends; new ``k``/``v``
    ``[B, S_new, Hkv, D]`` are written *in place* at ``cache_seqlens, cache_seqlens + 1, ...``
    and attended to. ``cache_leftpad`` ``[B]`` int32: sequence b's cache starts there (keys
    before it are not attended; positions count from it). ``rotary_cos``/``rotary_sin``
    ``[seqlen_ro, rotary_dim / 2]`` rotate the new k at its positions and q at the same positions
    when causal or windowed (else all of q at the first new position); interleaved pairs
    (0,1),(2,3)... or, with ``rotary_interleaved=False``, GPT-NeoX halves. ``num_splits`` is
    accepted and ignored (the tuned config decides). Returns ``[B, Sq, Hq, D]``, and with
    ``return_softmax_lse`` also fp32 ``[B, Hq, Sq]``.
    """
    _forward_only({"q": q, "k_cache": k_cache, "v_cache": v_cache, "k": k, "v": v})
    q = _dims(q, "q", 4, "[batch, seqlen_q, heads_q, head_dim]")
    paged = block_table is not None
    cache_layout = ("[num_blocks, page_size, heads_kv, head_dim] (paged)" if paged
                    else "[batch_cache, seqlen_cache, heads_kv, head_dim]")
    k_cache = _dims(k_cache, "k_cache", 4, cache_layout)
    v_cache = _dims(v_cache, "v_cache", 4, cache_layout)
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must have a contiguous last dimension (stride(-1) == 1): it is updated in place")
    if not isinstance(num_splits, int) or isinstance(num_splits, bool) or num_splits < 0:
        raise ValueError(f"num_splits={num_splits!r} must be an int >= 0 (it is accepted and ignored)")
    if (k is None) != (v is None):
        raise ValueError("k and v must be given together (the new keys and values to append), or both None")
    if paged and cache_batch_idx is not None:
        raise ValueError("cache_batch_idx cannot be combined with block_table: the block table already maps "
                         "each sequence to its pages")
    if paged and cache_leftpad is not None:
        raise ValueError("cache_leftpad cannot be combined with block_table (as in flash-attn): put each "
                         "sequence's first key on its first page")
    batch, seqlen_q, heads_q, head_dim = q.shape
    window = _window(window_size)
    if k is not None:
        k = _dims(k, "k", 4, "[batch, seqlen_new, heads_kv, head_dim]")
        v = _dims(v, "v", 4, "[batch, seqlen_new, heads_kv, head_dim]")
        if k.shape[0] != batch or v.shape != k.shape:
            raise ValueError(f"k/v shapes {tuple(k.shape)}/{tuple(v.shape)} must be [batch={batch}, seqlen_new, "
                             "heads_kv, head_dim] and equal")
        if cache_seqlens is None:
            raise ValueError("cache_seqlens is None: appending k/v needs cache_seqlens (where each cache ends)")
        if k.dtype != k_cache.dtype or v.dtype != v_cache.dtype:
            raise ValueError(f"k/v dtype ({k.dtype}/{v.dtype}) must equal k_cache/v_cache's "
                             f"({k_cache.dtype}/{v_cache.dtype}): they are written into the cache")
    if paged and (not isinstance(block_table, torch.Tensor) or block_table.dtype != torch.int32
                  or block_table.dim() != 2 or block_table.shape[0] != batch):
        raise ValueError(f"block_table must be an int32 tensor [batch={batch}, max_blocks] (page ids per sequence)")
    capacity = block_table.shape[1] * k_cache.shape[1] if paged else k_cache.shape[1]
    ends = _cache_seqlens(cache_seqlens, batch, capacity, q.device)
    starts = None
    if cache_leftpad is not None:
        starts = _int32_vector(cache_leftpad, "cache_leftpad", batch, q.device)
    if cache_batch_idx is not None:
        cache_batch_idx = _int32_vector(cache_batch_idx, "cache_batch_idx", batch, q.device)
    seqlen_new = 0 if k is None else k.shape[1]
    if _value_checks_on(q.device) and not torch.compiler.is_compiling():
        # Before the in-place append, which would write out of bounds (CPU tensors by default).
        _check_cache_values(ends, starts, cache_batch_idx, seqlen_new, capacity, k_cache.shape[0])
    if rotary_cos is not None or rotary_sin is not None:
        if k is None:
            raise ValueError("rotary_cos/rotary_sin need k and v: flash-attn rotates only the new keys (and q)")
        positions = ends if starts is None else ends - starts
        every_row = causal or window != (-1, -1)
        q, k = _rotate_new_tokens(q, k, rotary_cos, rotary_sin, positions, rotary_interleaved, every_row)
    if k is not None:
        _append(k_cache, k, ends, cache_batch_idx, block_table)
        _append(v_cache, v, ends, cache_batch_idx, block_table)
    total = ends + seqlen_new if seqlen_new else ends
    keys, values, pages = _cache_view(k_cache, v_cache, batch, cache_batch_idx, block_table)
    bounds = None
    if starts is not None:
        # Keys starts <= j < total; query i sits at position i + total - Sq (bottom-right alignment
        # over the sequence's own keys, which end at total whatever the left padding).
        bounds = torch.stack([starts, total, total - seqlen_q], dim=1).to(torch.int32).contiguous()
    q = _last_dim_contiguous(q)
    result = varlen_attention(
        q.reshape(batch * seqlen_q, heads_q, head_dim), keys, values, _even_cu_seqlens(batch, seqlen_q, q.device),
        seqlen_q, capacity, seqused_k=total.to(torch.int32), block_table=pages, causal=bool(causal),
        window_size=window, softcap=_softcap(softcap), alibi_slopes=alibi_slopes, sinks=_sinks(s_aux),
        scale=_scale(softmax_scale, head_dim), kv_bounds=bounds, return_lse=bool(return_softmax_lse))
    return _batched_result(result, batch, seqlen_q)


def _int32_vector(t: Any, name: str, batch: int, device: torch.device) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.shape != (batch,):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be an int32 tensor of shape [batch] = [{batch}]; got {shape}")
    if t.dtype != torch.int32:
        raise ValueError(f"{name}.dtype={t.dtype} must be torch.int32 (use .to(torch.int32))")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but q is on {device}")
    return t


def _cache_seqlens(cache_seqlens: Any, batch: int, capacity: int, device: torch.device) -> torch.Tensor:
    """cache_seqlens as int32 ``[B]``; None means every sequence fills the cache (flash-attn)."""
    if cache_seqlens is None:
        return torch.full((batch,), capacity, dtype=torch.int32, device=device)
    if isinstance(cache_seqlens, int) and not isinstance(cache_seqlens, bool):
        if not 0 <= cache_seqlens <= capacity:
            raise ValueError(f"cache_seqlens={cache_seqlens} must be in [0, {capacity}] (the cache's capacity)")
        return torch.full((batch,), cache_seqlens, dtype=torch.int32, device=device)
    return _int32_vector(cache_seqlens, "cache_seqlens", batch, device)


def _check_cache_values(ends: torch.Tensor, starts: torch.Tensor | None, cache_batch_idx: torch.Tensor | None,
                        seqlen_new: int, capacity: int, cache_rows: int) -> None:
    """Value checks (a device sync on a GPU, so on by default for CPU tensors only)."""
    end = ends.long() + seqlen_new
    if bool(((ends < 0) | (end > capacity)).any()):
        at = int(((ends < 0) | (end > capacity)).nonzero()[0, 0])
        raise ValueError(f"cache_seqlens[{at}] = {int(ends[at])} (+ {seqlen_new} new tokens) is outside the "
                         f"cache's {capacity} slots per sequence")
    if starts is not None and bool(((starts < 0) | (starts > ends)).any()):
        at = int(((starts < 0) | (starts > ends)).nonzero()[0, 0])
        raise ValueError(f"cache_leftpad[{at}] = {int(starts[at])} must be in [0, cache_seqlens[{at}] = {int(ends[at])}]")
    if cache_batch_idx is not None and bool(((cache_batch_idx < 0) | (cache_batch_idx >= cache_rows)).any()):
        bad = (cache_batch_idx < 0) | (cache_batch_idx >= cache_rows)
        at = int(bad.nonzero()[0, 0])
        raise ValueError(f"cache_batch_idx[{at}] = {int(cache_batch_idx[at])} is not a row of the cache "
                         f"(0..{cache_rows - 1})")


def _append(cache: torch.Tensor, new: torch.Tensor, ends: torch.Tensor, cache_batch_idx: torch.Tensor | None,
            block_table: torch.Tensor | None) -> None:
    """Write ``new[b, t]`` at position ``ends[b] + t`` of sequence b's cache, in place (no host sync)."""
    steps = torch.arange(new.shape[1], device=new.device, dtype=torch.int64)
    positions = ends.to(torch.int64)[:, None] + steps[None, :]  # [B, S_new]
    if block_table is not None:
        page_size = cache.shape[1]
        pages = block_table.to(torch.int64).gather(1, positions // page_size)
        cache.index_put_((pages, positions % page_size), new.to(cache.dtype))
        return
    rows = (torch.arange(new.shape[0], device=new.device) if cache_batch_idx is None
            else cache_batch_idx.to(torch.int64))
    cache.index_put_((rows[:, None].expand_as(positions), positions), new.to(cache.dtype))


def _cache_view(k_cache: torch.Tensor, v_cache: torch.Tensor, batch: int, cache_batch_idx: torch.Tensor | None,
                block_table: torch.Tensor | None):
    """(k, v, block_table) in a layout the varlen op reads: paged as is, dense rows as a batch."""
    if block_table is not None:
        return k_cache, v_cache, block_table
    if cache_batch_idx is None:
        return k_cache[:batch], v_cache[:batch], None  # the first B rows, flash-attn's default
    rows = cache_batch_idx
    seqlen_cache = k_cache.shape[1]
    for page_size in _DENSE_PAGE_SIZES:
        if seqlen_cache % page_size:
            continue
        try:
            # Each dense row is a run of pages: read it through a page table instead of a gather copy.
            k_pages = k_cache.view(-1, page_size, *k_cache.shape[2:])
            v_pages = v_cache.view(-1, page_size, *v_cache.shape[2:])
        except RuntimeError:
            break  # rows are not evenly strided: fall back to the gather below
        per_row = seqlen_cache // page_size
        table = rows[:, None] * per_row + torch.arange(per_row, device=rows.device, dtype=torch.int32)[None, :]
        return k_pages, v_pages, table.to(torch.int32)
    index = rows.to(torch.int64)
    return k_cache.index_select(0, index), v_cache.index_select(0, index), None


def _rotate_new_tokens(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       positions: torch.Tensor, interleaved: bool, every_row: bool):
    """Rotary embedding of the new keys (and q), as flash-attn applies it inside its kernel."""
    for name, t in (("rotary_cos", cos), ("rotary_sin", sin)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor [seqlen_ro, rotary_dim / 2]")
    if cos.shape != sin.shape:
        raise ValueError(f"rotary_cos {tuple(cos.shape)} and rotary_sin {tuple(sin.shape)} must have one shape")
    rotary_dim = 2 * cos.shape[1]
    if rotary_dim > q.shape[-1]:
        raise ValueError(f"rotary_cos.shape[1]={cos.shape[1]}: rotary_dim {rotary_dim} exceeds head_dim {q.shape[-1]}")
    first = positions.to(torch.int64)[:, None]
    k_pos = first + torch.arange(k.shape[1], device=k.device)[None, :]
    q_steps = torch.arange(q.shape[1], device=q.device)[None, :]
    q_pos = first + q_steps if every_row else first.expand(-1, q.shape[1])
    return _rotate(q, cos, sin, q_pos, interleaved), _rotate(k, cos, sin, k_pos, interleaved)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor, interleaved: bool) -> torch.Tensor:
    half = cos.shape[1]
    c = cos[pos].float()[:, :, None, :]  # [B, S, 1, rotary_dim / 2]
    s = sin[pos].float()[:, :, None, :]
    head = x[..., :2 * half].float()
    if interleaved:
        x1, x2 = head[..., 0::2], head[..., 1::2]
        rotated = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
    else:
        x1, x2 = head[..., :half], head[..., half:]
        rotated = torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)
    return torch.cat([rotated.to(x.dtype), x[..., 2 * half:]], dim=-1)


__all__ = [
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_with_kvcache",
]
