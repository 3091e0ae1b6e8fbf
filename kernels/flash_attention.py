"""FlashAttention forward: one tunable Triton template, its launcher, reference and family.

The kernel follows the shape of Triton's fused-attention tutorial: each program owns BLOCK_M
query rows of one (batch, query head), keeps them in registers, and streams the keys and values
of the matching KV head in BLOCK_N tiles with an online softmax in base 2 (fp32 accumulation).

What it covers beyond the tutorial:

- GQA/MQA: query head h reads KV head ``h // (Hq // Hkv)``; K/V are never repeated.
- Any Sq and Skv (not multiples of a block), any strides, head dims 32..256 (padded to the next
  power of two with masked loads), fp16/bf16/fp32 inputs, an optional log-sum-exp output.
- Causal aligned bottom-right (query i sees keys j <= i + Skv - Sq, as flash-attn >= 2.1);
  tiles past the diagonal are never visited; query rows that see no key at all give 0 (LSE -inf).
- ``split_diag`` (tunable): one loop over the tiles every row of the block sees in full, with no
  masking code at all, then a short masked loop over the diagonal (and ragged tail) tiles.
  Without it, one loop masks every tile: less code, fewer registers, more ALU per tile.
- ``use_tma`` (tunable, where Triton has tensor descriptors): Q/K/V/O move through 4-D tensor
  descriptors, which Hopper backs with TMA copies; out-of-range rows and the padded head dim are
  zero-filled by the descriptor instead of masked loads.

Interpreter note: ``tl.dot`` on two bfloat16 tensors is wrong under ``TRITON_INTERPRET=1``
(triton-lang/triton#11584), and fp16 dots run in numpy's slow software float16. The launcher
sets ``DOT_FP32`` only when interpreting: the dot operands are upcast to fp32 (P rounded to the
input dtype first, as on the GPU), which is exact; the GPU code path never sees the flag.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl
from tritune.search_space import FlashAttentionConfig, FlashAttentionSpec, interpreting
from tritune.search_space.flash_attention import padded_head_dim

from ._compile import CompileReport, compile_for_target
from ._exp2 import _exp2_fma, _exp2_tile  # noqa: F401  (_exp2_fma: tests call it)
from ._family import TORCH_DTYPES, KernelFamily, Verification, compare, source_hash

try:  # host-side tensor descriptors: triton >= 3.4 (the GPU image has 3.6)
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older triton
    TensorDescriptor = None

LOG2E = 1.4426950408889634

# --------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------
@triton.jit
def _load_tile(base, desc, desc_b, desc_h, row0, n_rows, stride_r, stride_d,
               ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               CHECK_ROWS: tl.constexpr, USE_TMA: tl.constexpr, DESC_2D: tl.constexpr):
    """A [ROWS, BLOCK_D] tile starting at row ``row0``; rows >= n_rows and d >= HEAD_DIM read 0.

    Descriptors are 4-D [B, H, S, D] host ones, or with ``DESC_2D`` per-head [S, D] ones built
    on the device (the warp-specialization pass splits their row blocks between consumer
    warpgroups; it cannot split a 4-D box, compile tier).
    """
    if DESC_2D:
        tile = desc.load([row0, 0])
    elif USE_TMA:
        tile = desc.load([desc_b, desc_h, row0, 0]).reshape(ROWS, BLOCK_D)
    else:
        offs_r = row0 + tl.arange(0, ROWS)
        offs_d = tl.arange(0, BLOCK_D)
        # Addresses are recomputed per tile on purpose: a hoisted [ROWS, BLOCK_D] offset tile
        # costs ~30 registers per thread and made the 128x64 Ampere tiles spill (compile tier).
        ptrs = base + offs_r[:, None] * stride_r + offs_d[None, :] * stride_d
        if CHECK_ROWS:
            if HEAD_DIM == BLOCK_D:
                tile = tl.load(ptrs, mask=offs_r[:, None] < n_rows, other=0.0)
            else:
                tile = tl.load(ptrs, mask=(offs_r[:, None] < n_rows) & (offs_d[None, :] < HEAD_DIM), other=0.0)
        else:
            if HEAD_DIM == BLOCK_D:
                tile = tl.load(ptrs)
            else:
                tile = tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    return tile


@triton.jit
def _attn_tiles(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, off_b, off_hkv,
                stride_kn, stride_kd, stride_vn, stride_vd, bias_base, stride_zm, stride_zn, seq_q,
                offs_m, lo, hi, kv_lo, kv_hi, causal_shift, qk_scale,
                BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, USE_TMA: tl.constexpr,
                DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr, WARP_SPEC: tl.constexpr,
                EXP2_POLY: tl.constexpr, BLOCK_M: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Online-softmax update of (acc, l_i, m_i) over key tiles [lo, hi).

    Visible keys are [kv_lo, kv_hi) (kv_lo is 0 unless ``WINDOW``), and with ``CAUSAL`` only
    keys j <= row + causal_shift. ``MASKED`` tiles may hold invisible keys; unmasked tiles are
    fully visible to every row of the block, so they skip all masking code. ``WARP_SPEC`` hands
    the loop to Triton's automatic warp specialization (producer warps issue the TMA loads,
    consumer warpgroups run the MMAs and the softmax; Hopper, Triton >= 3.5). ``HAS_BIAS``
    adds an additive score bias (T5's relative position bias) read at ``bias_base``.
    """
    for start_n in tl.range(lo, hi, BLOCK_N, warp_specialize=WARP_SPEC):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k = _load_tile(k_base, k_desc, off_b, off_hkv, start_n, kv_hi, stride_kn, stride_kd,
                       BLOCK_N, HEAD_DIM, BLOCK_D, MASKED, USE_TMA, WARP_SPEC)
        if DOT_FP32:
            qk = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision=DOT_PRECISION)
        else:
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        if HAS_BIAS:
            # scale * qk + bias in base 2; the bias is added before the masking below, so a
            # masked key stays invisible whatever the bias says.
            offs_bn = start_n + tl.arange(0, BLOCK_N)
            bias = tl.load(bias_base + offs_m[:, None] * stride_zm + offs_bn[None, :] * stride_zn,
                           mask=(offs_m[:, None] < seq_q) & (offs_bn[None, :] < kv_hi), other=0.0)
            qk = qk * qk_scale + bias.to(tl.float32) * 1.4426950408889634  # log2(e)
            score_scale = 1.0
        else:
            score_scale = qk_scale
        if MASKED:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            keep = offs_n[None, :] < kv_hi
            if WINDOW:
                keep = keep & (offs_n[None, :] >= kv_lo)
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None] + causal_shift)
            qk = tl.where(keep, qk, float("-inf"))
        # The scale (> 0) is applied to the row max and fused into the exponent's argument
        # (one FMA per score), as in the Triton tutorial.
        m_new = tl.maximum(m_i, tl.max(qk, 1) * score_scale)
        if MASKED or HAS_BIAS:
            # A row that has seen no visible key yet (or whose bias is -inf) keeps m = -inf;
            # shift by 0 so that exp2(-inf - -inf) never produces NaN.
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_use = m_new
        p = _exp2_tile(qk * score_scale - m_use[:, None], BLOCK_M, BLOCK_N, EXP2_POLY)
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = _load_tile(v_base, v_desc, off_b, off_hkv, start_n, kv_hi, stride_vn, stride_vd,
                       BLOCK_N, HEAD_DIM, BLOCK_D, MASKED, USE_TMA, WARP_SPEC)
        if DOT_FP32:
            # Round P to the input dtype first, exactly as the GPU path does.
            acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc, input_precision=DOT_PRECISION)
        else:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_tile(
    Q, K, V, Out, LSE, KV_WINDOW, BIAS, qk_scale, pid_m, pid_bh,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_zb, stride_zh, stride_zm, stride_zn,
    heads_q, group, seq_q, seq_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SPLIT_DIAG: tl.constexpr, USE_TMA: tl.constexpr,
    STORE_LSE: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
    WARP_SPEC: tl.constexpr, EXP2_POLY: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    """One output tile: BLOCK_M query rows of one (batch, query head).

    With ``WARP_SPEC`` Q/K/V/O are plain pointers here and the tile builds per-head [S, D]
    tensor descriptors on the device: Triton's automatic warp specialization partitions the
    loop only over device-side descriptors (triton#7658) whose row blocks it can split.
    """
    off_b = pid_bh // heads_q
    off_h = pid_bh % heads_q
    off_hkv = off_h // group

    if WARP_SPEC:
        # Rows past S and d >= HEAD_DIM read 0 and are not written, as with the host boxes.
        q_desc = tl.make_tensor_descriptor(Q + off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh,
                                      shape=[seq_q, HEAD_DIM], strides=[stride_qm, 1], block_shape=[BLOCK_M, BLOCK_D])
        k_desc = tl.make_tensor_descriptor(K + off_b.to(tl.int64) * stride_kb + off_hkv.to(tl.int64) * stride_kh,
                                      shape=[seq_kv, HEAD_DIM], strides=[stride_kn, 1], block_shape=[BLOCK_N, BLOCK_D])
        v_desc = tl.make_tensor_descriptor(V + off_b.to(tl.int64) * stride_vb + off_hkv.to(tl.int64) * stride_vh,
                                      shape=[seq_kv, HEAD_DIM], strides=[stride_vn, 1], block_shape=[BLOCK_N, BLOCK_D])
        o_desc = tl.make_tensor_descriptor(Out + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh,
                                        shape=[seq_q, HEAD_DIM], strides=[stride_om, 1], block_shape=[BLOCK_M, BLOCK_D])
    else:  # host descriptors (USE_TMA) carry the (batch, head) offsets themselves
        q_desc = Q
        k_desc = K
        v_desc = V
        o_desc = Out
    if WARP_SPEC or USE_TMA:
        q_base = Q
        k_base = K
        v_base = V
    else:
        q_base = Q + off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh
        k_base = K + off_b.to(tl.int64) * stride_kb + off_hkv.to(tl.int64) * stride_kh
        v_base = V + off_b.to(tl.int64) * stride_vb + off_hkv.to(tl.int64) * stride_vh

    if HAS_BIAS:  # broadcast dims have stride 0
        bias_base = BIAS + off_b.to(tl.int64) * stride_zb + off_h.to(tl.int64) * stride_zh
    else:
        bias_base = BIAS
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = _load_tile(q_base, q_desc, off_b, off_h, start_m, seq_q, stride_qm, stride_qd,
                   BLOCK_M, HEAD_DIM, BLOCK_D, True, USE_TMA, WARP_SPEC)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    if WINDOW:
        # Per-batch visible keys [kv_lo, kv_hi) and causal shift (padded batches, KV caches
        # with empty slots): int32 triples in KV_WINDOW.
        kv_lo = tl.load(KV_WINDOW + off_b * 3)
        kv_hi = tl.load(KV_WINDOW + off_b * 3 + 1)
        causal_shift = tl.load(KV_WINDOW + off_b * 3 + 2)
    else:
        kv_lo = 0
        kv_hi = seq_kv
        causal_shift = seq_kv - seq_q  # bottom-right alignment: row i sees keys j <= i + shift
    if CAUSAL:
        last_row = tl.minimum(start_m + BLOCK_M, seq_q) - 1
        hi = tl.minimum(kv_hi, last_row + causal_shift + 1)  # keys any row of the block sees
        full = tl.minimum(kv_hi, start_m + causal_shift + 1)  # keys every row of the block sees
    else:
        hi = kv_hi
        full = kv_hi
    # Tile boundaries: [start, mid) masked (a window starting inside a tile), [mid, full)
    # unmasked, [full, hi) masked (causal diagonal, ragged end).
    start = kv_lo // BLOCK_N * BLOCK_N
    mid = tl.cdiv(kv_lo, BLOCK_N) * BLOCK_N
    full = tl.maximum(full // BLOCK_N * BLOCK_N, mid)

    if SPLIT_DIAG:
        if WINDOW:
            acc, l_i, m_i = _attn_tiles(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, off_b, off_hkv,
                                        stride_kn, stride_kd, stride_vn, stride_vd,
                                        bias_base, stride_zm, stride_zn, seq_q, offs_m, start, tl.minimum(mid, hi), kv_lo, kv_hi, causal_shift,
                                        qk_scale, BLOCK_N, HEAD_DIM, BLOCK_D, True, CAUSAL, WINDOW,
                                        USE_TMA, DOT_FP32, DOT_PRECISION, WARP_SPEC, EXP2_POLY, BLOCK_M,
                                        HAS_BIAS)
        acc, l_i, m_i = _attn_tiles(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, off_b, off_hkv,
                                    stride_kn, stride_kd, stride_vn, stride_vd,
                                    bias_base, stride_zm, stride_zn, seq_q, offs_m, mid, full, kv_lo, kv_hi, causal_shift,
                                    qk_scale, BLOCK_N, HEAD_DIM, BLOCK_D, False, CAUSAL, WINDOW,
                                    USE_TMA, DOT_FP32, DOT_PRECISION, WARP_SPEC, EXP2_POLY, BLOCK_M,
                                        HAS_BIAS)
        acc, l_i, m_i = _attn_tiles(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, off_b, off_hkv,
                                    stride_kn, stride_kd, stride_vn, stride_vd,
                                    bias_base, stride_zm, stride_zn, seq_q, offs_m, full, hi, kv_lo, kv_hi, causal_shift,
                                    qk_scale, BLOCK_N, HEAD_DIM, BLOCK_D, True, CAUSAL, WINDOW,
                                    USE_TMA, DOT_FP32, DOT_PRECISION, WARP_SPEC, EXP2_POLY, BLOCK_M,
                                        HAS_BIAS)
    else:
        acc, l_i, m_i = _attn_tiles(acc, l_i, m_i, q, k_base, v_base, k_desc, v_desc, off_b, off_hkv,
                                    stride_kn, stride_kd, stride_vn, stride_vd,
                                    bias_base, stride_zm, stride_zn, seq_q, offs_m, start, hi, kv_lo, kv_hi, causal_shift,
                                    qk_scale, BLOCK_N, HEAD_DIM, BLOCK_D, True, CAUSAL, WINDOW,
                                    USE_TMA, DOT_FP32, DOT_PRECISION, WARP_SPEC, EXP2_POLY, BLOCK_M,
                                        HAS_BIAS)

    # Rows that saw no key (causal with Sq > Skv, empty windows) have l = 0: their output is 0, LSE -inf.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    if STORE_LSE:
        lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)  # ln 2
        tl.store(LSE + pid_bh.to(tl.int64) * seq_q + offs_m, lse, mask=offs_m < seq_q)
    # The output has the inputs' dtype (the launcher allocates it so).
    if WARP_SPEC:
        o_desc.store([start_m, 0], out.to(q.dtype))
    elif USE_TMA:
        o_desc.store([off_b, off_h, start_m, 0], out.to(q.dtype).reshape(1, 1, BLOCK_M, BLOCK_D))
    else:
        offs_d = tl.arange(0, BLOCK_D)
        o_base = Out + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh
        o_ptrs = o_base + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
        tl.store(o_ptrs, out.to(q.dtype), mask=(offs_m[:, None] < seq_q) & (offs_d[None, :] < HEAD_DIM))


@triton.jit
def _attn_fwd(
    Q, K, V, Out, LSE, KV_WINDOW, BIAS,
    qk_scale,  # softmax scale * log2(e): the kernel works in base 2
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_zb, stride_zh, stride_zm, stride_zn,
    batch, heads_q, heads_kv, group, seq_q, seq_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SPLIT_DIAG: tl.constexpr, USE_TMA: tl.constexpr,
    STORE_LSE: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
    WARP_SPEC: tl.constexpr, EXP2_POLY: tl.constexpr, PERSISTENT: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    if PERSISTENT:
        # A grid of a few programs per SM walks all tiles, so the last wave has no tail of idle
        # SMs. Slots are dealt round by round; causal tiles go heaviest first (the last query
        # blocks see the most keys) and alternate rounds run in reverse lane order, so each
        # program's sum of tile costs stays close to the others' (a boustrophedon deal).
        num_m = (seq_q + BLOCK_M - 1) // BLOCK_M
        tiles = num_m * batch * heads_q
        lanes = tl.num_programs(0)
        lane = tl.program_id(0)
        rounds = (tiles + lanes - 1) // lanes
        for r in range(0, rounds):
            if CAUSAL:
                slot = r * lanes + tl.where(r % 2 == 0, lane, lanes - 1 - lane)
                pid_m = num_m - 1 - slot // (batch * heads_q)
                pid_bh = slot % (batch * heads_q)
            else:
                # Consecutive slots share a head: the programs running together reuse its K/V in L2.
                slot = r * lanes + lane
                pid_m = slot % num_m
                pid_bh = slot // num_m
            if slot < tiles:
                _attn_tile(Q, K, V, Out, LSE, KV_WINDOW, BIAS, qk_scale, pid_m, pid_bh,
                           stride_qb, stride_qh, stride_qm, stride_qd,
                           stride_kb, stride_kh, stride_kn, stride_kd,
                           stride_vb, stride_vh, stride_vn, stride_vd,
                           stride_ob, stride_oh, stride_om, stride_od,
                           stride_zb, stride_zh, stride_zm, stride_zn,
                           heads_q, group, seq_q, seq_kv,
                           HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, CAUSAL, WINDOW, SPLIT_DIAG, USE_TMA,
                           STORE_LSE, DOT_FP32, DOT_PRECISION, WARP_SPEC, EXP2_POLY, HAS_BIAS)
    else:
        pid_m = tl.program_id(0)
        if CAUSAL:
            # The last query blocks see the most keys: start them first so the tail of the grid
            # is short blocks, not long ones.
            pid_m = tl.num_programs(0) - 1 - pid_m
        _attn_tile(Q, K, V, Out, LSE, KV_WINDOW, BIAS, qk_scale, pid_m, tl.program_id(1),
                   stride_qb, stride_qh, stride_qm, stride_qd,
                   stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd,
                   stride_ob, stride_oh, stride_om, stride_od,
                   stride_zb, stride_zh, stride_zm, stride_zn,
                   heads_q, group, seq_q, seq_kv,
                   HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, CAUSAL, WINDOW, SPLIT_DIAG, USE_TMA,
                   STORE_LSE, DOT_FP32, DOT_PRECISION, WARP_SPEC, EXP2_POLY, HAS_BIAS)


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------
def _tma_eligible(*tensors: torch.Tensor) -> bool:
    """Tensor descriptors need a 16-byte aligned base, 16-byte aligned strides and stride(-1) 1."""
    for t in tensors:
        elt = t.element_size()
        if t.stride(-1) != 1 or t.data_ptr() % 16:
            return False
        if any((s * elt) % 16 for s in t.stride()[:-1]):
            return False
    return True


_HAS_DEVICE_DESC = hasattr(tl, "make_tensor_descriptor")  # triton >= 3.4
# Programs per SM of the interpreter's stand-in device: a few, so persistent programs walk
# several tiles and partial rounds in the tests.
INTERPRETER_SMS = 3


@functools.cache
def _device_props(index: int) -> Any:
    return torch.cuda.get_device_properties(index)  # read once per device: launches ask every call


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRETER_SMS
    return _device_props(_cuda_index(device)).multi_processor_count


def biased_stages(config: FlashAttentionConfig, block_d: int, elt: int, bias_elt: int, smem_limit: int) -> int:
    """Pipeline stages of a launch with an additive bias: the pipeliner buffers the bias tile
    (BLOCK_M x BLOCK_N) like K and V, so a config tuned without one can overflow shared memory
    (the sm_90 compile tier: 3 stages of 128 x 128 fp32 tiles took 246 KB). At most 2 stages,
    fewer until a (generous) estimate fits ``smem_limit``."""
    stages = min(int(config.num_stages), 2)
    per_stage = 2 * config.block_n * block_d * elt + config.block_m * config.block_n * bias_elt
    while stages > 1 and stages * per_stage + config.block_m * block_d * elt > smem_limit:
        stages -= 1
    return stages


def _smem_limit(device: torch.device) -> int:
    if device.type != "cuda":
        return 1 << 30  # the interpreter has no shared memory to run out of
    return _device_props(_cuda_index(device)).shared_memory_per_block_optin


def _scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_allocator() -> None:
    """Device-side descriptors live in scratch memory Triton asks an allocator for at launch.

    Installs a torch-backed allocator only when none is set: a caller's own allocator (a
    memory pool, CUDA-graph-safe buffers) is left in place.
    """
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(_scratch)


def launch(inputs: Mapping[str, Any], config: FlashAttentionConfig, out: torch.Tensor | None = None,
           lse: torch.Tensor | None = None) -> torch.Tensor:
    """Run the template with exactly ``config``.

    ``inputs``: ``q`` [B, Hq, Sq, D], ``k``/``v`` [B, Hkv, Skv, D] (any strides), ``causal``
    (bool), ``scale`` (float or None for 1/sqrt(D)), optionally ``kv_window``: contiguous int32
    [B, 3] rows (lo, hi, shift) saying that batch b sees keys lo <= j < hi and, when causal,
    row i sees keys j <= i + shift (default: 0, Skv, Skv - Sq); optionally ``bias``: an additive
    score bias broadcastable to [B, Hq, Sq, Skv] (fp32/fp16/bf16, any strides: T5's relative
    position bias), added to the scaled scores. ``out`` (same shape as q, any strides) and
    ``lse`` (contiguous fp32 [B, Hq, Sq]) are optional outputs to write into. Shapes are assumed
    checked by the caller (``tritune.flash_attention`` validates user input).
    """
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    causal = bool(inputs.get("causal", False))
    scale = inputs.get("scale")
    batch, heads_q, seq_q, head_dim = q.shape
    heads_kv, seq_kv = k.shape[1], k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    if not scale > 0:
        raise ValueError(f"scale={scale!r} must be positive")
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    block_d = padded_head_dim(head_dim)
    interp = interpreting()
    bias = inputs.get("bias")
    if bias is not None:
        bias = bias.expand(batch, heads_q, seq_q, seq_kv)  # a view: broadcast dims get stride 0
    # A biased launch keeps the plain pointer loop: the bias is a pointer load in the loop, which
    # the warp-specialization pass does not take (triton#9728), and descriptors alone gain little.
    descriptors = (bool(config.use_tma) and TensorDescriptor is not None and bias is None
                   and _tma_eligible(q, k, v, out))
    # Warp specialization runs only over device-side descriptors (the pass crashed on pointer
    # loads, triton#9728): where the inputs cannot have descriptors the loop stays plain.
    device_desc = descriptors and bool(config.warp_specialize) and _HAS_DEVICE_DESC
    if device_desc:
        if q.is_cuda:
            _ensure_allocator()
        q_arg, k_arg, v_arg, o_arg = q, k, v, out
    elif descriptors:  # host-side 4-D descriptors
        q_arg = TensorDescriptor.from_tensor(q, [1, 1, config.block_m, block_d])
        k_arg = TensorDescriptor.from_tensor(k, [1, 1, config.block_n, block_d])
        v_arg = TensorDescriptor.from_tensor(v, [1, 1, config.block_n, block_d])
        o_arg = TensorDescriptor.from_tensor(out, [1, 1, config.block_m, block_d])
    else:
        q_arg, k_arg, v_arg, o_arg = q, k, v, out
    store_lse = lse is not None
    lse_arg = lse if store_lse else q  # never touched when STORE_LSE is off
    window = inputs.get("kv_window")
    window_arg = window if window is not None else q  # never touched when WINDOW is off
    bias_arg = bias if bias is not None else q  # never touched when HAS_BIAS is off
    bias_strides = bias.stride() if bias is not None else (0, 0, 0, 0)
    num_m = triton.cdiv(seq_q, config.block_m)
    persistent = int(config.persistent) > 0
    if persistent:
        grid: tuple[int, ...] = (max(1, min(num_m * batch * heads_q, int(config.persistent) * _sm_count(q.device))),)
    else:
        grid = (num_m, batch * heads_q)
    stages = config.num_stages if bias is None else biased_stages(
        config, block_d, q.element_size(), bias.element_size(), _smem_limit(q.device))
    options: dict[str, Any] = {"num_warps": config.num_warps, "num_stages": stages}
    if int(config.maxnreg) > 0 and not interp:
        options["maxnreg"] = int(config.maxnreg)
    _attn_fwd[grid](
        q_arg, k_arg, v_arg, o_arg, lse_arg, window_arg, bias_arg,
        float(scale) * LOG2E,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *bias_strides,
        batch, heads_q, heads_kv, heads_q // heads_kv, seq_q, seq_kv,
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        CAUSAL=causal, WINDOW=window is not None, SPLIT_DIAG=bool(config.split_diag), USE_TMA=descriptors,
        STORE_LSE=store_lse,
        # Interpreter only: bf16 dots are wrong there (triton#11584) and fp16 dots run in
        # numpy's software float16; fp32 dots of the upcast operands give the GPU's numbers.
        DOT_FP32=interp and q.dtype != torch.float32,
        DOT_PRECISION="ieee" if (interp or q.dtype == torch.float32) else "tf32",
        WARP_SPEC=device_desc, EXP2_POLY=int(config.exp2_poly), PERSISTENT=persistent, HAS_BIAS=bias is not None,
        **options,
    )
    return out


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------
def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                   scale: float | None, dtype: torch.dtype, kv_window: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, max_scores: int = 1 << 26) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention in ``dtype`` (float64 for the reference, the input dtype for the baseline).

    Returns (out [B, Hq, Sq, D] in ``dtype``, lse [B, Hq, Sq] float32). Same semantics as the
    kernel: GQA by head grouping, bottom-right causal (or the window's shift), keys outside the
    window invisible, ``bias`` (broadcastable to [B, Hq, Sq, Skv]) added to the scaled scores,
    rows without visible keys give 0 / -inf. Works through query-row chunks of
    at most ``max_scores`` scores, so tuning-size problems (16k x 16k) fit in memory.
    """
    batch, heads_q, seq_q, head_dim = q.shape
    heads_kv, seq_kv = k.shape[1], k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    group = heads_q // heads_kv
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    j = torch.arange(seq_kv, device=q.device)[None, :]
    rows = max(1, max_scores // max(1, heads_q * seq_kv))
    if bias is not None:
        bias = bias.expand(batch, heads_q, seq_q, seq_kv)
    for b in range(batch):
        kd = k[b].to(dtype).repeat_interleave(group, dim=0)
        vd = v[b].to(dtype).repeat_interleave(group, dim=0)
        if kv_window is not None:
            lo, hi, shift = (int(x) for x in kv_window[b].tolist())
        else:
            lo, hi, shift = 0, seq_kv, seq_kv - seq_q
        for r0 in range(0, seq_q, rows):
            r1 = min(seq_q, r0 + rows)
            scores = torch.matmul(q[b, :, r0:r1].to(dtype), kd.transpose(-1, -2)) * scale
            if bias is not None:
                scores = scores + bias[b, :, r0:r1].to(dtype)
            visible = (j >= lo) & (j < hi)
            if causal:
                visible = visible & (j <= torch.arange(r0, r1, device=q.device)[:, None] + shift)
            scores = scores.masked_fill(~visible, float("-inf"))
            lse[b, :, r0:r1] = torch.logsumexp(scores.float(), dim=-1)
            probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no visible key -> 0
            out[b, :, r0:r1] = torch.matmul(probs, vd)
    return out, lse


def _math(inputs: Mapping[str, Any], dtype: torch.dtype) -> torch.Tensor:
    out, _ = attention_math(inputs["q"], inputs["k"], inputs["v"], causal=bool(inputs.get("causal", False)),
                            scale=inputs.get("scale"), dtype=dtype, kv_window=inputs.get("kv_window"),
                            bias=inputs.get("bias"))
    return out


def reference(inputs: Mapping[str, Any]) -> torch.Tensor:
    """float64 reference output (fp32 on devices without float64)."""
    return _math(inputs, torch.float64 if inputs["q"].device.type == "cpu" else torch.float32)


def baseline(inputs: Mapping[str, Any]) -> torch.Tensor:
    """The same math done by PyTorch in the input dtype: the yardstick of the tolerance rule."""
    return _math(inputs, inputs["q"].dtype)


# --------------------------------------------------------------------------------------------
# Family
# --------------------------------------------------------------------------------------------
def compile_signature(spec: FlashAttentionSpec, config: FlashAttentionConfig,
                      bias: str | None = None) -> tuple[dict, dict]:
    """(signature, constexprs) of ``_attn_fwd`` for an AOT compile of ``config`` on ``spec``.

    Mirrors a launch on contiguous inputs: the innermost strides are the constant 1 that
    Triton's specialization sees at run time. ``bias``: the dtype of an additive score bias
    ("fp32", "bf16", ...), which makes the launch take pointers (no descriptors), as ``launch``.
    """
    elt = spec.dtype
    block_d = padded_head_dim(spec.head_dim)
    if bias is not None:
        config = config.replace(use_tma=False, warp_specialize=False)
    device_desc = bool(config.use_tma and config.warp_specialize)
    if config.use_tma and not device_desc:
        rows = {"Q": config.block_m, "K": config.block_n, "V": config.block_n, "Out": config.block_m}
        sig: dict[str, str] = {n: f"tensordesc<{elt}[1, 1, {r}, {block_d}]>" for n, r in rows.items()}
    else:
        sig = {n: f"*{elt}" for n in ("Q", "K", "V", "Out")}
    sig["LSE"] = "*fp32"
    sig["KV_WINDOW"] = "*i32"
    sig["BIAS"] = f"*{bias or elt}"
    sig["qk_scale"] = "fp32"
    constexprs: dict[str, Any] = {}
    for t in "qkvo":
        for dim in ("b", "h", "m" if t in "qo" else "n"):
            sig[f"stride_{t}{dim}"] = "i32"
        sig[f"stride_{t}d"] = "constexpr"
        constexprs[f"stride_{t}d"] = 1
    for dim in "bhmn":
        sig[f"stride_z{dim}"] = "i32"
    for n in ("batch", "heads_q", "heads_kv", "group", "seq_q", "seq_kv"):
        sig[n] = "i32"
    constexprs.update(
        HEAD_DIM=spec.head_dim, BLOCK_D=block_d, BLOCK_M=config.block_m,
        BLOCK_N=config.block_n, CAUSAL=spec.causal, WINDOW=False, SPLIT_DIAG=bool(config.split_diag), USE_TMA=bool(config.use_tma),
        STORE_LSE=False, DOT_FP32=False, DOT_PRECISION="ieee" if spec.dtype == "fp32" else "tf32",
        WARP_SPEC=device_desc, EXP2_POLY=int(config.exp2_poly), PERSISTENT=int(config.persistent) > 0,
        HAS_BIAS=bias is not None,
    )
    for n in constexprs:
        sig[n] = "constexpr"
    return {n: sig[n] for n in _attn_fwd.arg_names}, constexprs


# Arguments Triton's launch-time specialization marks as divisible by 16 for typical shapes
# (aligned pointers, strides that are multiples of 16 elements).
ALIGNED_ARGS = ("Q", "K", "V", "Out", "LSE", "stride_qb", "stride_qh", "stride_qm", "stride_kb", "stride_kh",
                "stride_kn", "stride_vb", "stride_vh", "stride_vn", "stride_ob", "stride_oh", "stride_om")


class FlashAttentionFamily(KernelFamily):
    name = "flash_attention"
    spec_type = FlashAttentionSpec
    module_name = __name__
    jit_kernels = ("_attn_fwd",)

    def make_inputs(self, spec: FlashAttentionSpec, device: torch.device | str, seed: int) -> dict[str, Any]:
        device = torch.device(device)
        gen = None if device.type == "meta" else torch.Generator(device=device).manual_seed(seed)  # drawn where used
        dtype = TORCH_DTYPES[spec.dtype]

        def draw(heads: int, seq: int) -> torch.Tensor:
            if device.type == "meta":  # shapes only, for compiling without running (``warm``)
                return torch.empty(spec.batch, heads, seq, spec.head_dim, dtype=dtype, device=device)
            # Normal draws: fresh for every seed, and never all zeros.
            t = torch.randn(spec.batch, heads, seq, spec.head_dim, generator=gen, device=device)
            return t.to(dtype)

        return {"q": draw(spec.heads_q, spec.seq_q), "k": draw(spec.heads_kv, spec.seq_kv),
                "v": draw(spec.heads_kv, spec.seq_kv), "causal": spec.causal, "scale": None}

    def launch(self, inputs: Mapping[str, Any], config: FlashAttentionConfig,
               out: torch.Tensor | None = None) -> torch.Tensor:
        return launch(inputs, config, out=out)

    def reference(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        return reference(inputs)

    def verify(self, spec: FlashAttentionSpec, config: FlashAttentionConfig, device: torch.device | str,
               seed: int) -> Verification:
        def build() -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
            inputs = self.make_inputs(spec, device, seed)
            return inputs, reference(inputs), baseline(inputs)

        inputs, ref, base = self._expected((spec, str(device), seed), build)
        out = torch.full_like(inputs["q"], float("nan"))  # poisoned: an unwritten element fails
        self.launch(inputs, config, out=out)
        return compare(out, ref, base)

    def compile(self, spec: FlashAttentionSpec, config: FlashAttentionConfig, arch: int = 90, *,
                python: str | None = None) -> CompileReport:
        """AOT compile for ``sm_{arch}``; ``python``: a side virtualenv's interpreter whose Triton
        compiles instead of this one's (``tritune.kernels._compile.side_python``)."""
        sig, constexprs = compile_signature(spec, config)
        aligned = [a for a in ALIGNED_ARGS if not sig[a].startswith("tensordesc")]
        return compile_for_target(_attn_fwd, sig, constexprs, arch=arch, num_warps=config.num_warps,
                                  num_stages=config.num_stages, source_hash=source_hash(__name__),
                                  aligned=aligned, maxnreg=int(config.maxnreg) or None, python=python)

    def work(self, spec: FlashAttentionSpec) -> dict[str, float]:
        return {"flops": spec.flops}


FAMILY = FlashAttentionFamily()

__all__ = ["FAMILY", "FlashAttentionFamily", "attention_math", "baseline", "launch", "reference"]
