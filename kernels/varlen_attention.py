"""Serving attention: one tunable Triton kernel for a whole ragged batch over a paged KV cache.

A serving step (vLLM, SGLang, transformers' continuous batching) is one launch over sequences
that each bring a different number of new tokens: decode rows (1), speculative rows (2-8),
chunked-prefill chunks (hundreds) on top of cached prefixes, and idle sequences (0). Layout:

- ``q``             ``[total_q, Hq, D]``; sequence b owns rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]``
- ``k``/``v``       packed ``[total_k, Hkv, D]`` (+ ``cu_seqlens_k``), paged
                    ``[num_blocks, block_size, Hkv, D]`` with any strides (+ ``block_table``,
                    ``seqused_k``: vLLM's ``[num_blocks, Hkv, block_size, 2D]`` views work as is),
                    or batched ``[B, S_k, Hkv, D]`` (transformers' padded batches, no copy)
- causal is aligned bottom-right per sequence: query i of a sequence with q_b new tokens and
  k_b keys sits at position ``i + k_b - q_b`` (a chunk sees its cached prefix); ``kv_bounds``
  rows (lo, hi, shift) override that (keys lo <= j < hi, query i at i + shift).

How the work is cut (the knobs are in search_space/varlen_attention.py):

- the grid's first axis enumerates query tiles of every sequence at once: tile t belongs to the
  sequence b with ``cu_q[b] // BLOCK_Q + b <= t < cu_q[b+1] // BLOCK_Q + b + 1`` (a binary
  search over ``cu_seqlens_q``), so the grid size ``total_q // BLOCK_Q + num_seqs`` is known on
  the host without reading any length (no device sync, CUDA-graph safe); spare tiles exit;
- ``PACK``: a tile's rows are BLOCK_Q tokens x the query heads of one KV head (K/V read once per
  group, decode rows fill the tile with heads), else BLOCK_M tokens of one query head;
- ``NUM_SPLITS > 1``: the keys a tile sees are cut into splits run by separate programs that
  write unnormalized partials; ``_combine`` merges them (the log-sum-exp merge in base 2);
- ``SPLIT_DIAG``: key tiles every row sees run without any masking code; only the tiles at the
  window, causal and ragged edges are masked.
- ``EXP2_POLY``: that percentage of each score tile's exponentials runs as a cubic on the FMA
  pipes instead of the special-function unit (kernels/_exp2.py; prefill chunks at small head
  dims are exponential-bound on Hopper).

Scores: ``s = scale * q.k``; ``softcap > 0``: ``s = softcap * tanh(s / softcap)``; ALiBi:
``s -= slope * |pos - j|`` (flash-attn's convention); sinks: a per-head logit that joins the
softmax denominator (gpt-oss): the running max and sum start at the sink instead of -inf / 0.
An FP8 (e4m3) cache is converted to the query dtype tile by tile in the kernel; its descale
factors (per tensor, per KV head, or per sequence and KV head) fold into the score scale and the
output. Softmax runs in base 2 in fp32. Rows that see no key give 0 (LSE -inf).

Interpreter: bf16 ``tl.dot`` is wrong under ``TRITON_INTERPRET=1`` (triton-lang/triton#11584),
so the launcher sets ``DOT_FP32`` only when interpreting (operands upcast to fp32, P rounded to
the input dtype first, as on the GPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl
from tritune.search_space import VarlenAttentionConfig, VarlenAttentionSpec, interpreting
from tritune.search_space.varlen_attention import group_pad, padded_head_dim

from ._compile import CompileReport, compile_for_target
from ._exp2 import _exp2_tile
from ._family import TORCH_DTYPES, KernelFamily, Verification, compare, source_hash

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
FP8 = torch.float8_e4m3fn
LAYOUTS = {"packed": 0, "batched": 1, "paged": 2}


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _find_seq(cu_q, num_seqs, tile, BLOCK_Q: tl.constexpr):
    """The sequence owning query tile ``tile``: the last b with cu_q[b] // BLOCK_Q + b <= tile."""
    lo = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(cu_q + mid) // BLOCK_Q + mid <= tile:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _key_tiles(acc, l_i, m_i, q, k_base, v_base, table_row, offs_d, pos, slope,
               stride_kb, stride_kt, stride_vb, stride_vt,
               lo, hi, k_lo, k_hi, window_left, window_right, qk_scale, cap_scale, cap_log2,
               BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               PAGED: tl.constexpr, PAGE: tl.constexpr, MASKED: tl.constexpr,
               HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
               DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr, EXP2_POLY: tl.constexpr):
    """Online-softmax update of (acc, l_i, m_i) over the key tiles [lo, hi).

    Unmasked (``MASKED`` False) tiles hold only keys every row of the tile sees, so they skip
    the bounds on the loads and the visibility mask on the scores.
    """
    d_ok = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if PAGED:
            if PAGE % BLOCK_N == 0:  # the step lies in one page: one page-id load
                page = tl.load(table_row + start_n // PAGE).to(tl.int64)
                slot = (start_n % PAGE) + tl.arange(0, BLOCK_N)
                k_rows = page * stride_kb + slot * stride_kt
                v_rows = page * stride_vb + slot * stride_vt
            else:  # steps span pages: a page id per token
                if MASKED:
                    page = tl.load(table_row + offs_n // PAGE, mask=offs_n < k_hi, other=0).to(tl.int64)
                else:
                    page = tl.load(table_row + offs_n // PAGE).to(tl.int64)
                slot = offs_n % PAGE
                k_rows = page * stride_kb + slot * stride_kt
                v_rows = page * stride_vb + slot * stride_vt
        else:
            k_rows = offs_n.to(tl.int64) * stride_kt
            v_rows = offs_n.to(tl.int64) * stride_vt
        if MASKED:
            n_ok = (offs_n >= k_lo) & (offs_n < k_hi)
            kt = tl.load(k_base + k_rows[None, :] + offs_d[:, None], mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        elif HEAD_DIM == BLOCK_D:
            kt = tl.load(k_base + k_rows[None, :] + offs_d[:, None])
        else:
            kt = tl.load(k_base + k_rows[None, :] + offs_d[:, None], mask=d_ok[:, None], other=0.0)
        if DOT_FP32:
            qk = tl.dot(q.to(tl.float32), kt.to(q.dtype).to(tl.float32), input_precision="ieee")
        else:
            qk = tl.dot(q, kt.to(q.dtype))
        if SOFTCAP:
            # softcap * tanh(x), tanh(x) = 1 - 2 / (exp(2x) + 1): exact at both ends (exp2 -> 0 or inf)
            s = (1.0 - 2.0 / (tl.math.exp2(qk * cap_scale) + 1.0)) * cap_log2
        else:
            s = qk * qk_scale
        if ALIBI:
            s -= slope[:, None] * tl.abs(pos[:, None] - offs_n[None, :]).to(tl.float32)
        if MASKED:
            keep = n_ok[None, :]
            if HAS_LEFT:
                keep = keep & (offs_n[None, :] >= pos[:, None] - window_left)
            if HAS_RIGHT:
                keep = keep & (offs_n[None, :] <= pos[:, None] + window_right)
            s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASKED:
            # A row that has seen no visible key keeps m = -inf: shift by 0, never -inf - -inf.
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_use = m_new
        if EXP2_POLY == 0:
            p = tl.math.exp2(s - m_use[:, None])
        else:
            p = _exp2_tile(s - m_use[:, None], BLOCK_M, BLOCK_N, EXP2_POLY)
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if MASKED:
            v = tl.load(v_base + v_rows[:, None] + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        elif HEAD_DIM == BLOCK_D:
            v = tl.load(v_base + v_rows[:, None] + offs_d[None, :])
        else:
            v = tl.load(v_base + v_rows[:, None] + offs_d[None, :], mask=d_ok[None, :], other=0.0)
        if DOT_FP32:
            acc = tl.dot(p.to(q.dtype).to(tl.float32), v.to(q.dtype).to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(q.dtype), v.to(q.dtype), acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _varlen_fwd(
    Q, K, V, Out, Lse, Part, Stats,
    CuQ, CuK, SeqK, Table, Bounds, Alibi, Sinks, KScale, VScale,
    qk_scale, cap_scale, cap_log2,
    stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ot, stride_oh,
    stride_lh, stride_lt,
    stride_tb, stride_ab, stride_ah, stride_sb, stride_sh,
    num_seqs, heads_q, kv_len, window_left, window_right,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, PACK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    LAYOUT: tl.constexpr, PAGE: tl.constexpr, USE_SEQK: tl.constexpr, BOUNDS: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
    SINKS: tl.constexpr, DESCALE: tl.constexpr,
    NUM_SPLITS: tl.constexpr, SPLIT_DIAG: tl.constexpr, STORE_LSE: tl.constexpr, DOT_FP32: tl.constexpr,
    EXP2_POLY: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1)  # the KV head when packing, else the query head
    split = tl.program_id(2)
    seq = _find_seq(CuQ, num_seqs, tile, BLOCK_Q)
    q_start = tl.load(CuQ + seq)
    q_len = tl.load(CuQ + seq + 1) - q_start
    q_tile0 = (tile - (q_start // BLOCK_Q + seq)) * BLOCK_Q  # first token of this tile in the sequence
    if q_tile0 >= q_len:
        return

    # Keys of this sequence: visible range [k_lo, k_hi); query i sits at position i + shift.
    if LAYOUT == 0:
        k_start = tl.load(CuK + seq)
        k_len = tl.load(CuK + seq + 1) - k_start
    else:
        k_start = 0
        k_len = kv_len
    if USE_SEQK:
        if LAYOUT == 2:
            k_len = tl.load(SeqK + seq)
        else:
            k_len = tl.minimum(k_len, tl.load(SeqK + seq))
    if BOUNDS:
        k_lo = tl.load(Bounds + seq * 3)
        k_hi = tl.load(Bounds + seq * 3 + 1)
        shift = tl.load(Bounds + seq * 3 + 2)
    else:
        k_lo = 0
        k_hi = k_len
        shift = k_len - q_len

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    if PACK:
        kv_head = head
        tok = q_tile0 + offs_m // GROUP_PAD
        heads = kv_head * GROUP + offs_m % GROUP_PAD
        row_ok = (tok < q_len) & (offs_m % GROUP_PAD < GROUP)
    else:
        kv_head = head // GROUP
        tok = q_tile0 + offs_m
        heads = head + offs_m * 0
        row_ok = tok < q_len
    pos = tok + shift
    rows = (q_start + tok).to(tl.int64)
    io_mask = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(Q + rows[:, None] * stride_qt + heads[:, None] * stride_qh + offs_d[None, :], mask=io_mask, other=0.0)

    # Key ranges: any row of the tile sees [any_lo, any_hi), every row sees [full_lo, full_hi).
    pos_min = q_tile0 + shift
    pos_max = tl.minimum(q_tile0 + BLOCK_Q, q_len) - 1 + shift
    any_lo = k_lo
    full_lo = k_lo
    any_hi = k_hi
    full_hi = k_hi
    if HAS_LEFT:
        any_lo = tl.maximum(k_lo, pos_min - window_left)
        full_lo = tl.maximum(k_lo, pos_max - window_left)
    if HAS_RIGHT:
        any_hi = tl.minimum(k_hi, pos_max + window_right + 1)
        full_hi = tl.minimum(k_hi, pos_min + window_right + 1)
    any_lo = tl.maximum(any_lo, 0)
    t0 = any_lo // BLOCK_N * BLOCK_N
    if NUM_SPLITS > 1:
        span = tl.maximum(any_hi - t0, 0)  # non-negative: integer division rounds alike everywhere
        per = ((span + NUM_SPLITS - 1) // NUM_SPLITS + BLOCK_N - 1) // BLOCK_N * BLOCK_N
        s_lo = t0 + split * per
        s_hi = tl.minimum(s_lo + per, any_hi)
    else:
        s_lo = t0
        s_hi = any_hi

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    if SINKS:
        if split == 0:  # the sink joins the softmax once per row: in the first split
            m_i = tl.load(Sinks + heads, mask=row_ok, other=0.0).to(tl.float32) * 1.4426950408889634
            l_i = tl.full([BLOCK_M], 1.0, dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if ALIBI:
        slope = tl.load(Alibi + seq * stride_ab + heads * stride_ah, mask=row_ok, other=0.0) * 1.4426950408889634
    else:
        slope = tl.zeros([BLOCK_M], dtype=tl.float32)
    score_scale = qk_scale
    if DESCALE:  # fold the K descale into the score scale (one factor per program)
        k_ds = tl.load(KScale + seq * stride_sb + kv_head * stride_sh)
        score_scale = qk_scale * k_ds
        cap_scale = cap_scale * k_ds

    if LAYOUT == 2:
        k_base = K + kv_head.to(tl.int64) * stride_kh
        v_base = V + kv_head.to(tl.int64) * stride_vh
    else:
        k_base = K + k_start.to(tl.int64) * stride_kt + kv_head.to(tl.int64) * stride_kh
        v_base = V + k_start.to(tl.int64) * stride_vt + kv_head.to(tl.int64) * stride_vh
        if LAYOUT == 1:  # batched: one [S_k, Hkv, D] slab per sequence
            k_base += seq.to(tl.int64) * stride_kb
            v_base += seq.to(tl.int64) * stride_vb
    table_row = Table + seq.to(tl.int64) * stride_tb

    if SPLIT_DIAG:
        t1 = tl.minimum(tl.maximum((full_lo + BLOCK_N - 1) // BLOCK_N * BLOCK_N, t0), any_hi)
        t2 = tl.maximum(t1, full_hi // BLOCK_N * BLOCK_N)
        acc, l_i, m_i = _key_tiles(acc, l_i, m_i, q, k_base, v_base, table_row, offs_d, pos, slope,
                                   stride_kb, stride_kt, stride_vb, stride_vt,
                                   tl.maximum(t0, s_lo), tl.minimum(t1, s_hi), k_lo, k_hi, window_left, window_right,
                                   score_scale, cap_scale, cap_log2, BLOCK_N, HEAD_DIM, BLOCK_D,
                                   LAYOUT == 2, PAGE, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI, DOT_FP32,
                                   BLOCK_M, EXP2_POLY)
        acc, l_i, m_i = _key_tiles(acc, l_i, m_i, q, k_base, v_base, table_row, offs_d, pos, slope,
                                   stride_kb, stride_kt, stride_vb, stride_vt,
                                   tl.maximum(t1, s_lo), tl.minimum(t2, s_hi), k_lo, k_hi, window_left, window_right,
                                   score_scale, cap_scale, cap_log2, BLOCK_N, HEAD_DIM, BLOCK_D,
                                   LAYOUT == 2, PAGE, False, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI, DOT_FP32,
                                   BLOCK_M, EXP2_POLY)
        acc, l_i, m_i = _key_tiles(acc, l_i, m_i, q, k_base, v_base, table_row, offs_d, pos, slope,
                                   stride_kb, stride_kt, stride_vb, stride_vt,
                                   tl.maximum(t2, s_lo), s_hi, k_lo, k_hi, window_left, window_right,
                                   score_scale, cap_scale, cap_log2, BLOCK_N, HEAD_DIM, BLOCK_D,
                                   LAYOUT == 2, PAGE, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI, DOT_FP32,
                                   BLOCK_M, EXP2_POLY)
    else:
        acc, l_i, m_i = _key_tiles(acc, l_i, m_i, q, k_base, v_base, table_row, offs_d, pos, slope,
                                   stride_kb, stride_kt, stride_vb, stride_vt,
                                   s_lo, s_hi, k_lo, k_hi, window_left, window_right,
                                   score_scale, cap_scale, cap_log2, BLOCK_N, HEAD_DIM, BLOCK_D,
                                   LAYOUT == 2, PAGE, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI, DOT_FP32,
                                   BLOCK_M, EXP2_POLY)

    if DESCALE:
        acc = acc * tl.load(VScale + seq * stride_sb + kv_head * stride_sh)
    if NUM_SPLITS == 1:
        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        out = acc / l_safe[:, None]
        tl.store(Out + rows[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
                 out.to(Out.dtype.element_ty), mask=io_mask)
        if STORE_LSE:
            lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
            tl.store(Lse + heads * stride_lh + rows * stride_lt, lse, mask=row_ok)
    else:
        # Unnormalized partials [total_q, Hq, NUM_SPLITS, D] and (m, l) per split; an empty
        # split leaves m = -inf, l = 0: weight 0 in the merge.
        prow = (rows * heads_q + heads) * NUM_SPLITS + split
        tl.store(Part + prow[:, None] * BLOCK_D + offs_d[None, :], acc, mask=row_ok[:, None])
        tl.store(Stats + 2 * prow, m_i, mask=row_ok)
        tl.store(Stats + 2 * prow + 1, l_i, mask=row_ok)


@triton.jit
def _combine(Part, Stats, Out, Lse, total_q, heads_q,
             stride_ot, stride_oh, stride_lh, stride_lt,
             NUM_SPLITS: tl.constexpr, BLOCK_T: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
             STORE_LSE: tl.constexpr):
    """Merge the splits of BLOCK_T query rows of one head: out = sum w_p acc_p / sum w_p l_p,
    w_p = 2^(m_p - max m). Rows whose splits are all empty give 0 (LSE -inf)."""
    head = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < total_q
    base = (rows.to(tl.int64) * heads_q + head) * NUM_SPLITS
    m_max = tl.full([BLOCK_T], float("-inf"), dtype=tl.float32)
    for p in range(NUM_SPLITS):
        m_max = tl.maximum(m_max, tl.load(Stats + 2 * (base + p), mask=row_ok, other=float("-inf")))
    m_use = tl.where(m_max == float("-inf"), 0.0, m_max)
    acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    l_sum = tl.zeros([BLOCK_T], dtype=tl.float32)
    for p in range(NUM_SPLITS):
        w = tl.math.exp2(tl.load(Stats + 2 * (base + p), mask=row_ok, other=float("-inf")) - m_use)
        l_sum += w * tl.load(Stats + 2 * (base + p) + 1, mask=row_ok, other=0.0)
        acc += w[:, None] * tl.load(Part + (base + p)[:, None] * BLOCK_D + offs_d[None, :],
                                    mask=row_ok[:, None], other=0.0)
    l_safe = tl.where(l_sum == 0.0, 1.0, l_sum)
    out = acc / l_safe[:, None]
    tl.store(Out + rows.to(tl.int64)[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :])
    if STORE_LSE:
        lse = tl.where(l_sum == 0.0, float("-inf"), (m_use + tl.math.log2(l_safe)) * 0.6931471805599453)
        tl.store(Lse + head * stride_lh + rows.to(tl.int64) * stride_lt, lse, mask=row_ok)


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------
def kv_layout(k: torch.Tensor, *, cu_seqlens_k: torch.Tensor | None, block_table: torch.Tensor | None) -> str:
    """packed (3-D, cu_seqlens_k), paged (4-D with a block table) or batched (4-D without)."""
    if k.dim() == 3:
        return "packed"
    return "paged" if block_table is not None else "batched"


def _descale_strides(t: torch.Tensor | None, heads_kv: int) -> tuple[int, int]:
    """(stride per sequence, stride per KV head) of a descale tensor [1], [Hkv] or [B, Hkv]."""
    if t is None:
        return 0, 0
    if t.dim() == 2:
        return t.stride(0), t.stride(1)
    return 0, (t.stride(0) if t.numel() == heads_kv and heads_kv > 1 else 0)


def launch_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                  config: VarlenAttentionConfig, *, cu_seqlens_k: torch.Tensor | None = None,
                  seqused_k: torch.Tensor | None = None, block_table: torch.Tensor | None = None,
                  kv_bounds: torch.Tensor | None = None, causal: bool = False,
                  window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
                  alibi_slopes: torch.Tensor | None = None, sinks: torch.Tensor | None = None,
                  scale: float | None = None, k_descale: torch.Tensor | None = None,
                  v_descale: torch.Tensor | None = None, out: torch.Tensor | None = None,
                  lse: torch.Tensor | None = None) -> torch.Tensor:
    """Run the kernel with exactly ``config``. Arguments as ``tritune.varlen_attention`` (which
    validates them); ``lse``, when given, is an fp32 ``[Hq, total_q]`` tensor to fill."""
    total_q, heads_q, head_dim = q.shape
    layout = kv_layout(k, cu_seqlens_k=cu_seqlens_k, block_table=block_table)
    heads_kv = k.shape[-2]
    group = heads_q // heads_kv
    num_seqs = cu_seqlens_q.shape[0] - 1
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    if out is None:
        out = torch.empty_like(q)
    if total_q == 0 or num_seqs == 0:
        if lse is not None:
            lse.fill_(float("-inf"))
        return out
    pack = bool(config.pack_gqa)
    gpad = group_pad_of(group) if pack else 1
    block_m = int(config.block_m)
    block_q = block_m // gpad
    if block_q < 1:
        raise ValueError(f"config block_m={block_m} cannot hold a packed group of {group} query heads")
    splits = int(config.num_splits)
    block_d = padded_head_dim(head_dim)
    left, right = (int(w) for w in window_size)
    if causal:
        right = 0
    fp8 = k.dtype == FP8
    interp = interpreting()
    # Placeholders for the pointer arguments a constexpr switches off (never dereferenced).
    dummy = cu_seqlens_q
    page = k.shape[1] if layout == "paged" else 1
    kv_len = k.shape[1] if layout == "batched" else 0
    stride_kb = k.stride(0) if layout != "packed" else 0
    stride_vb = v.stride(0) if layout != "packed" else 0
    stride_kt, stride_vt = (k.stride(0), v.stride(0)) if layout == "packed" else (k.stride(1), v.stride(1))
    store_lse = lse is not None
    if splits > 1:
        part = torch.empty((total_q, heads_q, splits, block_d), device=q.device, dtype=torch.float32)
        stats = torch.empty((total_q, heads_q, splits, 2), device=q.device, dtype=torch.float32)
    else:
        part = stats = out
    ds_b, ds_h = _descale_strides(k_descale, heads_kv)
    if alibi_slopes is not None:
        stride_ab, stride_ah = (alibi_slopes.stride(0), alibi_slopes.stride(1)) if alibi_slopes.dim() == 2 \
            else (0, alibi_slopes.stride(0))
    else:
        stride_ab = stride_ah = 0
    cap = float(softcap or 0.0)
    grid = (total_q // block_q + num_seqs, heads_kv if pack else heads_q, splits)
    _varlen_fwd[grid](
        q, k, v, out, lse if store_lse else dummy, part, stats,
        cu_seqlens_q, cu_seqlens_k if cu_seqlens_k is not None else dummy,
        seqused_k if seqused_k is not None else dummy, block_table if block_table is not None else dummy,
        kv_bounds if kv_bounds is not None else dummy, alibi_slopes if alibi_slopes is not None else dummy,
        sinks if sinks is not None else dummy, k_descale if fp8 else dummy, v_descale if fp8 else dummy,
        float(scale) * LOG2E, (2.0 * float(scale) / cap * LOG2E) if cap > 0 else 0.0, cap * LOG2E,
        q.stride(0), q.stride(1),
        stride_kb, stride_kt, k.stride(-2),
        stride_vb, stride_vt, v.stride(-2),
        out.stride(0), out.stride(1),
        lse.stride(0) if store_lse else 0, lse.stride(1) if store_lse else 0,
        block_table.stride(0) if block_table is not None else 0, stride_ab, stride_ah, ds_b, ds_h,
        num_seqs, heads_q, kv_len, left, right,
        GROUP=group, GROUP_PAD=gpad, PACK=pack, BLOCK_M=block_m, BLOCK_Q=block_q, BLOCK_N=int(config.block_n),
        HEAD_DIM=head_dim, BLOCK_D=block_d, LAYOUT=LAYOUTS[layout], PAGE=page,
        USE_SEQK=seqused_k is not None, BOUNDS=kv_bounds is not None,
        HAS_LEFT=left >= 0, HAS_RIGHT=right >= 0, SOFTCAP=cap > 0, ALIBI=alibi_slopes is not None,
        SINKS=sinks is not None, DESCALE=fp8, NUM_SPLITS=splits, SPLIT_DIAG=bool(config.split_diag),
        STORE_LSE=store_lse and splits == 1, DOT_FP32=interp, EXP2_POLY=int(config.exp2_poly),
        num_warps=int(config.num_warps), num_stages=int(config.num_stages),
    )
    if splits > 1:
        block_t = 16
        _combine[(triton.cdiv(total_q, block_t), heads_q)](
            part, stats, out, lse if store_lse else dummy, total_q, heads_q,
            out.stride(0), out.stride(1), lse.stride(0) if store_lse else 0, lse.stride(1) if store_lse else 0,
            NUM_SPLITS=splits, BLOCK_T=block_t, HEAD_DIM=head_dim, BLOCK_D=block_d, STORE_LSE=store_lse,
            num_warps=4,
        )
    return out


def group_pad_of(group: int) -> int:
    return 1 << (group - 1).bit_length()


def launch(inputs: Mapping[str, Any], config: VarlenAttentionConfig, out: torch.Tensor | None = None,
           lse: torch.Tensor | None = None) -> torch.Tensor:
    """Run the kernel on ``inputs`` (a dict of ``launch_varlen``'s arguments) with ``config``."""
    kwargs = {k: v for k, v in inputs.items() if k in _LAUNCH_ARGS}
    return launch_varlen(inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], config, out=out, lse=lse,
                         **kwargs)


_LAUNCH_ARGS = ("cu_seqlens_k", "seqused_k", "block_table", "kv_bounds", "causal", "window_size", "softcap",
                "alibi_slopes", "sinks", "scale", "k_descale", "v_descale")


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------
def sequence_bounds(inputs: Mapping[str, Any]) -> list[tuple[int, int, int, int, int]]:
    """Per sequence (q_start, q_len, k_lo, k_hi, shift), read on the host (tests, reference)."""
    cu_q = inputs["cu_seqlens_q"].tolist()
    k = inputs["k"]
    layout = kv_layout(k, cu_seqlens_k=inputs.get("cu_seqlens_k"), block_table=inputs.get("block_table"))
    used = inputs.get("seqused_k")
    used = used.tolist() if used is not None else None
    cu_k = inputs["cu_seqlens_k"].tolist() if layout == "packed" else None
    bounds = inputs.get("kv_bounds")
    bounds = bounds.tolist() if bounds is not None else None
    out = []
    for b in range(len(cu_q) - 1):
        q_len = cu_q[b + 1] - cu_q[b]
        if layout == "packed":
            k_len = cu_k[b + 1] - cu_k[b]
            if used is not None:
                k_len = min(k_len, used[b])
        elif layout == "paged":
            k_len = used[b]
        else:
            k_len = k.shape[1] if used is None else min(k.shape[1], used[b])
        if bounds is not None:
            lo, hi, shift = bounds[b]
        else:
            lo, hi, shift = 0, k_len, k_len - q_len
        out.append((cu_q[b], q_len, lo, hi, shift))
    return out


def _keys(t: torch.Tensor, inputs: Mapping[str, Any], b: int, lo: int, hi: int) -> torch.Tensor:
    """Keys (or values) lo..hi-1 of sequence b as a ``[n, Hkv, D]`` tensor (a copy)."""
    layout = kv_layout(t, cu_seqlens_k=inputs.get("cu_seqlens_k"), block_table=inputs.get("block_table"))
    j = torch.arange(lo, hi)
    if layout == "packed":
        return t[int(inputs["cu_seqlens_k"][b]) + j]
    if layout == "batched":
        return t[b, j]
    page = t.shape[1]
    pages = inputs["block_table"][b].long().cpu()[j // page]
    return t[pages.to(t.device), (j % page).to(t.device)]


def attention_math(inputs: Mapping[str, Any], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention of every sequence in ``dtype`` (float64: the reference; the input dtype:
    the "same math in PyTorch" baseline of the tolerance rule). An FP8 cache is dequantized with
    its descales first. Returns (out ``[total_q, Hq, D]`` in ``dtype``, lse ``[Hq, total_q]``
    fp32)."""
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    total_q, heads_q, head_dim = q.shape
    heads_kv = k.shape[-2]
    group = heads_q // heads_kv
    scale = inputs.get("scale") or 1.0 / math.sqrt(head_dim)
    causal = bool(inputs.get("causal", False))
    left, right = inputs.get("window_size", (-1, -1))
    if causal:
        right = 0
    cap = float(inputs.get("softcap") or 0.0)
    alibi, sinks = inputs.get("alibi_slopes"), inputs.get("sinks")
    # Half precision runs as fp32 math rounded to ``dtype`` after every op: what PyTorch's GPU
    # kernels do (fp32 accumulation), without CPU half matmuls (slow, and not what a GPU runs).
    work = torch.float64 if dtype == torch.float64 else torch.float32

    def rnd(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype).to(work)

    out = torch.zeros((total_q, heads_q, head_dim), dtype=dtype)
    lse = torch.full((heads_q, total_q), float("-inf"), dtype=torch.float32)
    for b, (q0, q_len, lo, hi, shift) in enumerate(sequence_bounds(inputs)):
        if q_len == 0:
            continue
        lo = max(lo, 0)
        hi = max(hi, lo)
        kb = _keys(k, inputs, b, lo, hi).cpu()
        vb = _keys(v, inputs, b, lo, hi).cpu()
        if k.dtype == FP8:
            kb = kb.to(torch.float64) * _descale_rows(inputs["k_descale"], b, heads_kv)
            vb = vb.to(torch.float64) * _descale_rows(inputs["v_descale"], b, heads_kv)
        kb = rnd(kb).repeat_interleave(group, dim=1)  # [n, Hq, D]
        vb = rnd(vb).repeat_interleave(group, dim=1)
        qb = rnd(q[q0:q0 + q_len].cpu())
        scores = rnd(rnd(torch.einsum("ihd,jhd->hij", qb, kb)) * scale)  # [Hq, q_len, n]
        if cap > 0:
            scores = rnd(cap * torch.tanh(rnd(scores / cap)))
        pos = torch.arange(q_len)[:, None] + shift
        j = torch.arange(lo, hi)[None, :]
        if alibi is not None:
            slopes = (alibi[b] if alibi.dim() == 2 else alibi).cpu().to(work)
            scores = rnd(scores - slopes[:, None, None] * (pos - j).abs().to(work)[None])
        visible = torch.ones(q_len, hi - lo, dtype=torch.bool)
        if left >= 0:
            visible &= j >= pos - left
        if right >= 0:
            visible &= j <= pos + right
        scores = scores.masked_fill(~visible[None], float("-inf"))
        if sinks is not None:
            sink = sinks.cpu().to(work)[:, None, None].expand(heads_q, q_len, 1)
            scores = torch.cat([scores, sink], dim=-1)
        row_lse = torch.logsumexp(scores.double(), dim=-1)
        probs = rnd(torch.softmax(scores, dim=-1).nan_to_num(0.0))
        if sinks is not None:
            probs = probs[..., :-1]
        out[q0:q0 + q_len] = torch.einsum("hij,jhd->ihd", probs, vb).to(dtype)
        lse[:, q0:q0 + q_len] = row_lse.float()
    return out, lse


def _descale_rows(t: torch.Tensor, b: int, heads_kv: int) -> torch.Tensor:
    """The descale of sequence b broadcast over ``[n, Hkv, D]``."""
    t = t.detach().cpu().double()
    if t.dim() == 2:
        t = t[b]
    return t.reshape(-1).expand(heads_kv)[None, :, None] if t.numel() == 1 else t.reshape(1, heads_kv, 1)


def reference(inputs: Mapping[str, Any]) -> torch.Tensor:
    """float64 reference output (on the CPU)."""
    return attention_math(inputs, torch.float64)[0]


def baseline(inputs: Mapping[str, Any]) -> torch.Tensor:
    """The same math done by PyTorch in the input dtype: the yardstick of the tolerance rule."""
    return attention_math(inputs, inputs["q"].dtype)[0]


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                        max_seqlen_q: int | None = None, max_seqlen_k: int | None = None, *,
                        dtype: torch.dtype = torch.float64, return_lse: bool = False,
                        **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``tritune.varlen_attention``'s semantics in plain PyTorch (``dtype``, on the CPU)."""
    inputs = {"q": q, "k": k, "v": v, "cu_seqlens_q": cu_seqlens_q, **kwargs}
    out, lse = attention_math(inputs, dtype)
    return (out, lse) if return_lse else out


# --------------------------------------------------------------------------------------------
# Inputs of a spec: the representative batch of a bucket
# --------------------------------------------------------------------------------------------
def query_lengths(spec: VarlenAttentionSpec) -> list[int]:
    """New tokens per sequence: the first sequence brings ``max_seqlen_q``, the others share the
    rest of ``total_q`` as evenly as possible (a prefill chunk among decode rows, say)."""
    rest, others = spec.total_q - spec.max_seqlen_q, spec.num_seqs - 1
    lens = [spec.max_seqlen_q]
    for i in range(others):
        lens.append(rest // others + (1 if i < rest % others else 0))
    return lens


def key_lengths(spec: VarlenAttentionSpec, q_lens: list[int], gen: torch.Generator, *, mixed: bool) -> list[int]:
    """Keys per sequence: all ``max_seqlen_k`` (timing), or, ``mixed``, random in
    [q_len, max_seqlen_k] with the longest present and, where there are several sequences, one
    without a cached prefix (verification)."""
    if not mixed:
        return [max(spec.max_seqlen_k, q) if spec.causal else spec.max_seqlen_k for q in q_lens]
    out = []
    for q in q_lens:
        low = min(q, spec.max_seqlen_k)
        out.append(int(torch.randint(low, spec.max_seqlen_k + 1, (1,), generator=gen)) if low < spec.max_seqlen_k
                   else spec.max_seqlen_k)
    out[0] = max(out[0], spec.max_seqlen_k if q_lens[0] <= spec.max_seqlen_k else out[0])
    if len(out) > 1:
        out[-1] = q_lens[-1]  # no cached prefix: a fresh prompt's first chunk
    return [max(x, q) if spec.causal else x for x, q in zip(out, q_lens, strict=True)]


def make_batch(q_lens: list[int], k_lens: list[int], *, heads_q: int, heads_kv: int, head_dim: int,
               block_size: int, dtype: torch.dtype, kv_dtype: torch.dtype | None = None,
               device: torch.device | str = "cpu", seed: int = 0, spare: float = 0.125,
               vllm_layout: bool = False) -> dict[str, Any]:
    """Random inputs of one serving step: queries of ``q_lens`` tokens over caches of ``k_lens``.

    Paged (``block_size > 0``): pages from a permutation of a pool over-provisioned by ``spare``
    (block tables are unsorted and non-contiguous); pages nobody owns and slots past each
    sequence's end hold NaN, so a kernel that reads past a sequence poisons its output.
    ``vllm_layout`` allocates one ``[num_blocks, Hkv, block_size, 2*D]`` tensor and hands K and V
    as its strided views, as vLLM does. Contiguous (``block_size == 0``): packed K/V with
    ``cu_seqlens_k``. FP8 caches (``kv_dtype`` float8_e4m3fn) get per-KV-head descales.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    num_seqs = len(q_lens)
    kv_dtype = kv_dtype or dtype
    cu_q = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    meta = device.type == "meta"

    def draw(*shape: int) -> torch.Tensor:
        if meta:
            return torch.empty(shape, dtype=torch.float32, device=device)
        return torch.randn(shape, generator=gen).to(device)

    def cache_dtype(t: torch.Tensor) -> torch.Tensor:
        return t.to(kv_dtype) if kv_dtype == FP8 else t.to(dtype)

    q = draw(int(cu_q[-1]), heads_q, head_dim).to(dtype)
    inputs: dict[str, Any] = {"q": q, "cu_seqlens_q": cu_q.to(device)}
    if block_size == 0:
        cu_k = torch.tensor([0, *torch.tensor(k_lens).cumsum(0).tolist()], dtype=torch.int32)
        inputs.update(k=cache_dtype(draw(int(cu_k[-1]), heads_kv, head_dim)),
                      v=cache_dtype(draw(int(cu_k[-1]), heads_kv, head_dim)), cu_seqlens_k=cu_k.to(device))
    else:
        pages = [-(-n // block_size) for n in k_lens]
        used = sum(pages)
        pool = used + max(2, int(used * spare))
        perm = torch.randperm(pool, generator=gen)
        max_blocks = max([*pages, 1]) + 1
        table = perm[torch.randint(0, pool, (num_seqs, max_blocks), generator=gen)].to(torch.int32)
        poison = torch.ones(pool, block_size, dtype=torch.bool)
        at = 0
        for s, n in enumerate(pages):
            own = perm[at:at + n]
            at += n
            table[s, :n] = own.to(torch.int32)
            poison[own] = False
            tail = n * block_size - k_lens[s]
            if tail:
                poison[own[-1], block_size - tail:] = True
        if vllm_layout:
            kv = cache_dtype(draw(pool, heads_kv, block_size, 2 * head_dim))
            k, v = kv[..., :head_dim].transpose(1, 2), kv[..., head_dim:].transpose(1, 2)
        else:
            k = cache_dtype(draw(pool, block_size, heads_kv, head_dim))
            v = cache_dtype(draw(pool, block_size, heads_kv, head_dim))
        if not meta:
            nan = torch.tensor(float("nan")).to(k.dtype) if k.dtype != FP8 else torch.tensor(float("nan")).to(FP8)
            idx = poison.nonzero()
            k[idx[:, 0], idx[:, 1]] = nan
            v[idx[:, 0], idx[:, 1]] = nan
        inputs.update(k=k, v=v, block_table=table.to(device),
                      seqused_k=torch.tensor(k_lens, dtype=torch.int32).to(device))
    if kv_dtype == FP8:
        inputs["k_descale"] = (torch.rand(heads_kv, generator=gen) + 0.5).to(device)
        inputs["v_descale"] = (torch.rand(heads_kv, generator=gen) + 0.5).to(device)
    return inputs


def add_features(inputs: dict[str, Any], spec: VarlenAttentionSpec, gen: torch.Generator) -> dict[str, Any]:
    """The spec's mask and score features with plausible values (Gemma-2 cap, ALiBi slopes)."""
    device = inputs["q"].device
    inputs.update(causal=spec.causal, window_size=(spec.window_left, spec.window_right), scale=None)
    if spec.softcap:
        inputs["softcap"] = 50.0
    if spec.alibi:
        inputs["alibi_slopes"] = torch.tensor([2.0 ** (-8.0 * (h + 1) / spec.heads_q) for h in range(spec.heads_q)],
                                              dtype=torch.float32).to(device)
    if spec.sinks:
        inputs["sinks"] = (torch.randn(spec.heads_q, generator=gen) * 2).to(device)
    return inputs


# --------------------------------------------------------------------------------------------
# Family
# --------------------------------------------------------------------------------------------
_KERNEL_ARGS_ALIGNED = ("Q", "K", "V", "Out", "stride_qt", "stride_qh", "stride_kb", "stride_kt", "stride_kh",
                        "stride_vb", "stride_vt", "stride_vh", "stride_ot", "stride_oh")


def compile_signature(spec: VarlenAttentionSpec, config: VarlenAttentionConfig) -> tuple[dict, dict]:
    """(signature, constexprs) of ``_varlen_fwd`` for an AOT compile of ``config`` on ``spec``:
    a paged (or packed) cache in the spec's dtypes, innermost strides 1."""
    elt = spec.dtype
    kv = "fp8e4nv" if spec.kv_dtype == "fp8" else elt
    pack = bool(config.pack_gqa)
    gpad = group_pad(spec) if pack else 1
    sig: dict[str, str] = {"Q": f"*{elt}", "K": f"*{kv}", "V": f"*{kv}", "Out": f"*{elt}", "Lse": "*fp32",
                           "Part": "*fp32", "Stats": "*fp32", "CuQ": "*i32", "CuK": "*i32", "SeqK": "*i32",
                           "Table": "*i32", "Bounds": "*i32", "Alibi": "*fp32", "Sinks": "*fp32",
                           "KScale": "*fp32", "VScale": "*fp32", "qk_scale": "fp32", "cap_scale": "fp32",
                           "cap_log2": "fp32"}
    for name in _varlen_fwd.arg_names:
        if name.startswith("stride_") or name in ("num_seqs", "heads_q", "kv_len", "window_left", "window_right"):
            sig[name] = "i32"
    paged = spec.block_size > 0
    constexprs: dict[str, Any] = dict(
        GROUP=spec.group, GROUP_PAD=gpad, PACK=pack, BLOCK_M=config.block_m, BLOCK_Q=config.block_m // gpad,
        BLOCK_N=config.block_n, HEAD_DIM=spec.head_dim, BLOCK_D=padded_head_dim(spec.head_dim),
        LAYOUT=2 if paged else 0, PAGE=spec.block_size if paged else 1, USE_SEQK=paged, BOUNDS=False,
        HAS_LEFT=spec.window_left >= 0, HAS_RIGHT=spec.window_right >= 0, SOFTCAP=spec.softcap,
        ALIBI=spec.alibi, SINKS=spec.sinks, DESCALE=spec.kv_dtype == "fp8", NUM_SPLITS=config.num_splits,
        SPLIT_DIAG=bool(config.split_diag), STORE_LSE=False, DOT_FP32=False, EXP2_POLY=int(config.exp2_poly),
    )
    for n in constexprs:
        sig[n] = "constexpr"
    return {n: sig[n] for n in _varlen_fwd.arg_names}, constexprs


class VarlenAttentionFamily(KernelFamily):
    name = "varlen_attention"
    spec_type = VarlenAttentionSpec
    module_name = __name__
    jit_kernels = ("_varlen_fwd", "_combine")

    def make_inputs(self, spec: VarlenAttentionSpec, device: torch.device | str, seed: int, *,
                    mixed: bool = False) -> dict[str, Any]:
        """The bucket's representative batch: every sequence at ``max_seqlen_k`` keys (what
        ``work`` counts), or ``mixed`` lengths for verification."""
        gen = torch.Generator().manual_seed(seed + 1)
        q_lens = query_lengths(spec)
        k_lens = key_lengths(spec, q_lens, gen, mixed=mixed)
        inputs = make_batch(q_lens, k_lens, heads_q=spec.heads_q, heads_kv=spec.heads_kv, head_dim=spec.head_dim,
                            block_size=spec.block_size, dtype=TORCH_DTYPES[spec.dtype],
                            kv_dtype=FP8 if spec.kv_dtype == "fp8" else None, device=device, seed=seed)
        return add_features(inputs, spec, gen)

    def launch(self, inputs: Mapping[str, Any], config: VarlenAttentionConfig,
               out: torch.Tensor | None = None) -> torch.Tensor:
        return launch(inputs, config, out=out)

    def reference(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        return reference(inputs)

    def warm_inputs(self, spec: VarlenAttentionSpec) -> list[Mapping[str, Any]]:
        return [self.make_inputs(spec, "meta", 0)]

    def verify(self, spec: VarlenAttentionSpec, config: VarlenAttentionConfig, device: torch.device | str,
               seed: int) -> Verification:
        """Fresh mixed-length batch, a NaN-poisoned output, the dtype rule against float64."""
        def build() -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
            inputs = self.make_inputs(spec, device, seed, mixed=True)
            return inputs, reference(inputs), baseline(inputs)

        inputs, ref, base = self._expected((spec, str(device), seed), build)
        out = torch.full_like(inputs["q"], float("nan"))
        try:
            launch(inputs, config, out=out)
        except Exception as exc:  # a config that cannot launch is a failed verification
            return Verification(False, float("inf"), 0.0, f"launch failed: {type(exc).__name__}: {exc}"[:400])
        return compare(out.cpu(), ref, base)

    def compile(self, spec: VarlenAttentionSpec, config: VarlenAttentionConfig, arch: int = 90) -> CompileReport:
        sig, constexprs = compile_signature(spec, config)
        aligned = list(_KERNEL_ARGS_ALIGNED) if spec.head_dim % 16 == 0 else ["Q", "K", "V", "Out"]
        return compile_for_target(_varlen_fwd, sig, constexprs, arch=arch, num_warps=config.num_warps,
                                  num_stages=config.num_stages, source_hash=source_hash(__name__), aligned=aligned)

    def work(self, spec: VarlenAttentionSpec) -> dict[str, float]:
        return work_of(query_lengths(spec), key_lengths(spec, query_lengths(spec), torch.Generator(), mixed=False),
                       spec)


def work_of(q_lens: list[int], k_lens: list[int], spec: VarlenAttentionSpec) -> dict[str, float]:
    """FLOPs (4 * D per visible query-key pair and query head) and bytes (K/V read once per KV
    head, within each sequence's visible range, plus Q and O) of one batch."""
    pairs = 0
    keys_read = 0
    for q, k in zip(q_lens, k_lens, strict=True):
        pos = torch.arange(q) + (k - q)
        hi = (pos + spec.window_right + 1).clamp(max=k) if spec.window_right >= 0 else torch.full_like(pos, k)
        lo = (pos - spec.window_left).clamp(min=0) if spec.window_left >= 0 else torch.zeros_like(pos)
        pairs += int((hi - lo).clamp(min=0).sum())
        lo_any = max(0, k - q - spec.window_left) if spec.window_left >= 0 else 0
        keys_read += k - lo_any
    elt = 2
    kv = 2 * keys_read * spec.heads_kv * spec.head_dim * spec.kv_bytes_per_elt
    qo = 2 * sum(q_lens) * spec.heads_q * spec.head_dim * elt
    return {"flops": 4.0 * pairs * spec.heads_q * spec.head_dim, "bytes": float(kv + qo)}


FAMILY = VarlenAttentionFamily()

__all__ = ["FAMILY", "VarlenAttentionFamily", "attention_math", "baseline", "launch", "launch_varlen",
           "make_batch", "reference", "reference_attention", "work_of"]
