"""Paged-attention decode (one query token per sequence) as a parameterized Triton template.

Layout (the one flash-attn's ``flash_attn_with_kvcache`` and FlashInfer's NHD use):

- ``q``            ``[S, Hq, D]``        one new token per sequence
- ``k/v cache``    ``[num_blocks, block_size, Hkv, D]``, a pool of fixed-size pages
- ``block_table``  ``[S, max_blocks]`` int32: page ids of each sequence, in token order
- ``seq_lens``     ``[S]`` int32: tokens of each sequence in the cache (>= 1)

Decode is bound by reading the cache, so the kernel is built around reading every K/V byte once:

- one program owns one (sequence, KV head, split): the ``G = Hq / Hkv`` query heads that share
  the KV head sit in the rows of one tile (``group_block`` rows), so a page is loaded once for
  the whole group (MHA, GQA and MQA alike). With ``group_block >= 16`` the two products run on
  tensor cores (``tl.dot``, which needs every dimension >= 16); below that, as FMAs.
- each step gathers ``block_n`` tokens: one page-id load per step when a step fits in a page,
  one per token otherwise. Rows are read as contiguous ``D``-element vectors (16-byte loads).
- flash-decoding: with ``num_splits > 1`` each sequence's tokens are cut into ``num_splits``
  ranges handled by separate programs (so a batch of one still fills the GPU); each writes its
  unnormalized partial output with its softmax max and sum, and a second kernel merges them
  (the log-sum-exp merge, in exp2 form). A split count of 1 takes a single pass that writes
  the final output directly.
- address arithmetic on page ids is 64-bit: ``page * stride`` passes 2^31 elements in a large
  cache.

Softmax runs in base 2 (``exp2``) with the scale folded into ``log2(e)``, in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl
from tritune.kernels._compile import CompileReport, compile_for_target
from tritune.kernels._family import TORCH_DTYPES, KernelFamily, Verification, compare, source_hash
from tritune.search_space import PagedAttentionConfig, PagedAttentionSpec, interpreting
from tritune.search_space.paged_attention import padded_head_dim

LOG2E = 1.4426950408889634


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr,
    out_ptr, part_ptr, stats_ptr, counter_ptr,
    scale_log2,
    stride_qs, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ts,
    stride_os, stride_oh,
    num_heads_q,
    GROUP: tl.constexpr,  # query heads per KV head
    BLOCK_G: tl.constexpr,  # rows of the query-head tile (>= GROUP)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,  # HEAD_DIM padded to a power of two
    PAGE: tl.constexpr,  # tokens per cache block
    BLOCK_N: tl.constexpr,  # tokens per inner step
    NUM_SPLITS: tl.constexpr,
    USE_DOT: tl.constexpr,  # tensor-core products (BLOCK_G >= 16) or FMA
    DOT_FP32: tl.constexpr,  # interpreter only: bf16 tl.dot is wrong there (triton#11584)
    FOLD_COMBINE: tl.constexpr = False,  # the last split of a row merges (no second kernel)
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(lens_ptr + seq)

    # Token range of this split; whole steps, so only the last step of a split is partial.
    if NUM_SPLITS == 1:
        start = 0
        end = seq_len
    else:
        # ceil(ceil(len / splits) / BLOCK_N) steps each; plain arithmetic rather than tl.cdiv
        # (a jit helper: each call costs milliseconds under the interpreter).
        per_split = ((seq_len + NUM_SPLITS - 1) // NUM_SPLITS + BLOCK_N - 1) // BLOCK_N * BLOCK_N
        start = split * per_split
        end = tl.minimum(start + per_split, seq_len)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    heads = kv_head * GROUP + offs_g
    g_mask = offs_g < GROUP
    d_mask = offs_d < HEAD_DIM
    seq64 = seq.to(tl.int64)

    q = tl.load(q_ptr + seq64 * stride_qs + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.full([BLOCK_G], 0.0, tl.float32)
    acc = tl.full([BLOCK_G, BLOCK_D], 0.0, tl.float32)

    table_row = table_ptr + seq64 * stride_ts
    k_head = k_ptr + kv_head.to(tl.int64) * stride_kh
    v_head = v_ptr + kv_head.to(tl.int64) * stride_vh

    for tok0 in range(start, end, BLOCK_N):
        toks = tok0 + offs_n
        n_mask = toks < end
        if BLOCK_N <= PAGE:
            # Steps are aligned to BLOCK_N, which divides PAGE: the whole step is in one page.
            page = tl.load(table_row + tok0 // PAGE).to(tl.int64)
            slot = (tok0 % PAGE) + offs_n
            k_rows = page * stride_kb + slot * stride_kt
            v_rows = page * stride_vb + slot * stride_vt
        else:
            page = tl.load(table_row + toks // PAGE, mask=n_mask, other=0).to(tl.int64)
            slot = toks % PAGE
            k_rows = page * stride_kb + slot * stride_kt
            v_rows = page * stride_vb + slot * stride_vt
        if BLOCK_D == HEAD_DIM:
            kv_mask = n_mask[:, None]
        else:
            kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_head + k_rows[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_head + v_rows[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)

        if USE_DOT:
            if DOT_FP32:
                s = tl.dot(q, tl.trans(k.to(tl.float32)))
            else:
                s = tl.dot(q, tl.trans(k))
        else:
            s = tl.sum(q[:, None, :].to(tl.float32) * k[None, :, :].to(tl.float32), axis=2)
        s = tl.where(n_mask[None, :], s * scale_log2, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        if USE_DOT:
            if DOT_FP32:
                acc = tl.dot(p, v.to(tl.float32), acc)
            else:
                acc = tl.dot(p.to(v.dtype), v, acc)
        else:
            acc += tl.sum(p[:, :, None] * v[None, :, :].to(tl.float32), axis=1)
        m_i = m_new

    io_mask = g_mask[:, None] & d_mask[None, :]
    if NUM_SPLITS == 1:
        out = acc / l_i[:, None]
        tl.store(out_ptr + seq64 * stride_os + heads[:, None] * stride_oh + offs_d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=io_mask)
    else:
        # Unnormalized partial output and its softmax statistics (running max m, in base 2, and
        # sum l); the merge rescales by 2^(m - max m), which is the log-sum-exp merge without a
        # log. An empty split (a short sequence in a batch split for long ones) leaves m = -inf,
        # l = 0, acc = 0: weight 0.
        rows = (seq64 * num_heads_q + heads) * NUM_SPLITS + split
        tl.store(part_ptr + rows[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=io_mask)
        tl.store(stats_ptr + 2 * rows, m_i, mask=g_mask)
        tl.store(stats_ptr + 2 * rows + 1, l_i, mask=g_mask)
        if FOLD_COMBINE:
            # The split that finishes last merges the row: every program's writes are in
            # before its arrival (CTA barrier, then the counter's acq_rel atomic at GPU scope),
            # and the one that sees NUM_SPLITS - 1 earlier arrivals reads them all back and
            # resets the counter, so the buffer is ready for the next launch (graph replays too).
            tl.debug_barrier()
            counter = counter_ptr + seq * tl.num_programs(1) + kv_head
            arrived = tl.atomic_add(counter, 1, sem="acq_rel")
            if arrived == NUM_SPLITS - 1:
                base = (seq64 * num_heads_q + heads) * NUM_SPLITS
                m_max = tl.full([BLOCK_G], float("-inf"), tl.float32)
                for p in range(0, NUM_SPLITS):
                    m_max = tl.maximum(m_max, tl.load(stats_ptr + 2 * (base + p), mask=g_mask, other=float("-inf"),
                                                      cache_modifier=".cg"))
                num = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
                den = tl.zeros([BLOCK_G], tl.float32)
                for p in range(0, NUM_SPLITS):
                    w = tl.math.exp2(tl.load(stats_ptr + 2 * (base + p), mask=g_mask, other=float("-inf"),
                                             cache_modifier=".cg") - m_max)
                    w = tl.where(g_mask, w, 0.0)
                    den += w * tl.load(stats_ptr + 2 * (base + p) + 1, mask=g_mask, other=0.0, cache_modifier=".cg")
                    num += w[:, None] * tl.load(part_ptr + (base + p)[:, None] * HEAD_DIM + offs_d[None, :],
                                                mask=io_mask, other=0.0, cache_modifier=".cg")
                den = tl.where(g_mask, den, 1.0)
                tl.store(out_ptr + seq64 * stride_os + heads[:, None] * stride_oh + offs_d[None, :],
                         (num / den[:, None]).to(out_ptr.dtype.element_ty), mask=io_mask)
                tl.atomic_xchg(counter, 0)


@triton.jit
def _merge_kernel(
    part_ptr, stats_ptr, out_ptr,
    stride_os, stride_oh,
    num_heads_q,
    NUM_SPLITS: tl.constexpr,
    BLOCK_P: tl.constexpr,  # NUM_SPLITS padded to a power of two
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Merge the splits of one (sequence, query head): out = sum_p w_p acc_p / sum_p w_p l_p,
    w_p = 2^(m_p - max m)."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    row = seq.to(tl.int64) * num_heads_q + head
    offs_p = tl.arange(0, BLOCK_P)
    offs_d = tl.arange(0, BLOCK_D)
    p_mask = offs_p < NUM_SPLITS
    split_rows = row * NUM_SPLITS + offs_p
    m = tl.load(stats_ptr + 2 * split_rows, mask=p_mask, other=float("-inf"))
    l_split = tl.load(stats_ptr + 2 * split_rows + 1, mask=p_mask, other=0.0)
    weight = tl.math.exp2(m - tl.max(m, axis=0))  # split 0 is never empty: the max is finite
    parts = tl.load(part_ptr + split_rows[:, None] * HEAD_DIM + offs_d[None, :],
                    mask=p_mask[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    out = tl.sum(parts * weight[:, None], axis=0) / tl.sum(weight * l_split, axis=0)
    tl.store(out_ptr + seq.to(tl.int64) * stride_os + head * stride_oh + offs_d,
             out.to(out_ptr.dtype.element_ty), mask=offs_d < HEAD_DIM)


# --- launcher ---------------------------------------------------------------------------------

# Arrival counters of the folded combine, one int32 per (sequence, KV head), kept zero between
# launches by the kernel itself: allocated once per device and grown, never per launch (a
# memset per launch would cost what folding saves, and CUDA graphs need a fixed address).
# Launches that run concurrently on different streams must not share them.
_COUNTERS: dict[str, torch.Tensor] = {}


def _counters(device: torch.device, n: int) -> torch.Tensor:
    key = str(device)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                 seq_lens: torch.Tensor, config: PagedAttentionConfig, *, scale: float | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the template with exactly ``config``; no validation beyond shapes (see the op)."""
    num_seqs, heads_q, head_dim = q.shape
    _, page, heads_kv, _ = k_cache.shape
    group = heads_q // heads_kv
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    if out is None:
        out = torch.empty_like(q)
    if num_seqs == 0:
        return out
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous along head_dim (stride(-1)=={t.stride(-1)})")
    block_d = padded_head_dim(head_dim)
    splits = int(config.num_splits)
    use_dot = int(config.group_block) >= 16
    dot_fp32 = use_dot and q.dtype == torch.bfloat16 and (interpreting() or q.device.type == "cpu")
    fold = splits > 1 and bool(config.fold_combine)
    if splits > 1:
        part = torch.empty((num_seqs, heads_q, splits, head_dim), device=q.device, dtype=torch.float32)
        stats = torch.empty((num_seqs, heads_q, splits, 2), device=q.device, dtype=torch.float32)
    else:
        part = stats = out  # unused by the single-pass path
    counters = _counters(q.device, num_seqs * heads_kv) if fold else seq_lens  # untouched unless folded
    _decode_kernel[(num_seqs, heads_kv, splits)](
        q, k_cache, v_cache, block_table, seq_lens,
        out, part, stats, counters,
        float(scale) * LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table.stride(0),
        out.stride(0), out.stride(1),
        heads_q,
        GROUP=group, BLOCK_G=int(config.group_block), HEAD_DIM=head_dim, BLOCK_D=block_d,
        PAGE=page, BLOCK_N=int(config.block_n), NUM_SPLITS=splits,
        USE_DOT=use_dot, DOT_FP32=dot_fp32, FOLD_COMBINE=fold,
        num_warps=int(config.num_warps), num_stages=int(config.num_stages),
    )
    if splits > 1 and not fold:
        _merge_kernel[(num_seqs, heads_q)](
            part, stats, out, out.stride(0), out.stride(1), heads_q,
            NUM_SPLITS=splits, BLOCK_P=triton.next_power_of_2(splits), HEAD_DIM=head_dim, BLOCK_D=block_d,
            num_warps=4 if block_d >= 128 else 2,
        )
    return out


def launch(inputs: Mapping[str, Any], config: PagedAttentionConfig, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run the template on ``inputs`` (as made by ``make_inputs``) with exactly ``config``."""
    return paged_decode(inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["block_table"],
                        inputs["seq_lens"], config, scale=inputs.get("scale"), out=out)


# --- reference --------------------------------------------------------------------------------

def gather_pages(cache: torch.Tensor, block_table: torch.Tensor, seq: int, length: int) -> torch.Tensor:
    """The first ``length`` tokens of sequence ``seq`` as a contiguous ``[length, Hkv, D]`` tensor."""
    page = cache.shape[1]
    pages = block_table[seq, : -(-length // page)].long()
    return cache[pages].reshape(-1, *cache.shape[2:])[:length]


def reference(inputs: Mapping[str, Any], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gather each sequence's pages and run contiguous attention in ``dtype`` (fp32: the reference).

    With the input dtype instead, it is the "same math in PyTorch at that precision" baseline of
    the tolerance rule: products in that dtype, softmax in fp32 rounded back to it.
    """
    q, k_cache, v_cache = inputs["q"], inputs["k_cache"], inputs["v_cache"]
    table, lens = inputs["block_table"], inputs["seq_lens"].tolist()
    num_seqs, heads_q, head_dim = q.shape
    group = heads_q // k_cache.shape[2]
    scale = inputs.get("scale") or 1.0 / math.sqrt(head_dim)
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    for s in range(num_seqs):
        k = gather_pages(k_cache, table, s, lens[s]).to(dtype).repeat_interleave(group, dim=1)
        v = gather_pages(v_cache, table, s, lens[s]).to(dtype).repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,nhd->hn", q[s].to(dtype), k) * scale
        p = torch.softmax(scores.float(), dim=-1).to(dtype)
        out[s] = torch.einsum("hn,nhd->hd", p, v)
    return out


# --- inputs -----------------------------------------------------------------------------------

def draw_lengths(num_seqs: int, context_len: int, gen: torch.Generator, *, mixed: bool) -> torch.Tensor:
    """Sequence lengths: all ``context_len`` (timing), or mixed in [1, context_len] with the
    longest present and, where the batch allows, a length-1 sequence (verification)."""
    if not mixed:
        return torch.full((num_seqs,), context_len, dtype=torch.int32)
    lens = torch.randint(1, context_len + 1, (num_seqs,), generator=gen, dtype=torch.int32)
    lens[0] = context_len
    if num_seqs > 1:
        lens[-1] = 1
    return lens


def make_paged_inputs(num_seqs: int, heads_q: int, heads_kv: int, head_dim: int, lens: torch.Tensor,
                      *, block_size: int, dtype: torch.dtype, device: torch.device | str, seed: int,
                      spare: float = 0.125, extra_columns: int = 1) -> dict[str, Any]:
    """Random q and a random paged cache holding sequences of ``lens`` tokens.

    Pages come from a permutation of a pool over-provisioned by ``spare``, so block tables are
    non-contiguous and unsorted. Pool pages no sequence owns, and the slots past each sequence's
    end in its last page, hold NaN: a kernel that reads past a sequence poisons its output.
    Unused block-table columns point at other sequences' pages, never at nothing. Token data is
    drawn on ``device`` in ``dtype`` directly (a tuning-size cache is tens of GB); the block
    table is built on the CPU.
    """
    gen = torch.Generator().manual_seed(seed)
    lens = lens.to(torch.int32).cpu()
    pages_per_seq = [-(-int(n) // block_size) for n in lens]
    used = sum(pages_per_seq)
    pool = used + max(2, int(used * spare))
    perm = torch.randperm(pool, generator=gen)
    max_blocks = max(pages_per_seq) + extra_columns
    table = perm[torch.randint(0, pool, (num_seqs, max_blocks), generator=gen)].to(torch.int32)
    nan_mask = torch.ones(pool, block_size, dtype=torch.bool)
    at = 0
    for s, n_pages in enumerate(pages_per_seq):
        own = perm[at: at + n_pages]
        at += n_pages
        table[s, :n_pages] = own.to(torch.int32)
        nan_mask[own] = False
        tail = n_pages * block_size - int(lens[s])
        if tail:
            nan_mask[own[-1], block_size - tail:] = True
    device = torch.device(device)
    shape = (pool, block_size, heads_kv, head_dim)
    if device.type == "meta":  # shapes only, for compiling without running (``warm``)
        def empty(*size: int) -> torch.Tensor:
            return torch.empty(size, dtype=dtype, device=device)

        return {"q": empty(num_seqs, heads_q, head_dim), "k_cache": empty(*shape), "v_cache": empty(*shape),
                "block_table": table.to(device), "seq_lens": lens.to(device), "scale": 1.0 / math.sqrt(head_dim)}
    dev_gen = torch.Generator(device=device).manual_seed(seed)
    k_cache = torch.empty(shape, dtype=dtype, device=device).normal_(generator=dev_gen)
    v_cache = torch.empty(shape, dtype=dtype, device=device).normal_(generator=dev_gen)
    nan_mask = nan_mask.to(device)
    k_cache[nan_mask] = float("nan")
    v_cache[nan_mask] = float("nan")
    q = torch.empty((num_seqs, heads_q, head_dim), dtype=dtype, device=device).normal_(generator=dev_gen)
    return {"q": q, "k_cache": k_cache, "v_cache": v_cache, "block_table": table.to(device),
            "seq_lens": lens.to(device), "scale": 1.0 / math.sqrt(head_dim)}


# --- the family -------------------------------------------------------------------------------

class PagedAttentionFamily(KernelFamily):
    name = "paged_attention"
    spec_type = PagedAttentionSpec
    module_name = __name__
    jit_kernels = ("_decode_kernel", "_merge_kernel")

    def make_inputs(self, spec: PagedAttentionSpec, device: torch.device | str, seed: int, *,
                    mixed: bool = False) -> dict[str, Any]:
        """Every sequence at ``context_len`` (what ``work`` counts) unless ``mixed``."""
        gen = torch.Generator().manual_seed(seed + 1)
        lens = draw_lengths(spec.num_seqs, spec.context_len, gen, mixed=mixed)
        return make_paged_inputs(spec.num_seqs, spec.heads_q, spec.heads_kv, spec.head_dim, lens,
                                 block_size=spec.block_size, dtype=TORCH_DTYPES[spec.dtype],
                                 device=device, seed=seed)

    def launch(self, inputs: Mapping[str, Any], config: PagedAttentionConfig,
               out: torch.Tensor | None = None) -> torch.Tensor:
        return launch(inputs, config, out=out)

    def reference(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        return reference(inputs, torch.float32)

    def warm_inputs(self, spec: PagedAttentionSpec) -> list[Mapping[str, Any]]:
        # verify() runs on mixed lengths, timing on full ones: warm both launches.
        return [self.make_inputs(spec, "meta", 0), self.make_inputs(spec, "meta", 0, mixed=True)]

    def verify(self, spec: PagedAttentionSpec, config: PagedAttentionConfig, device: torch.device | str,
               seed: int) -> Verification:
        """Fresh random inputs with mixed lengths, a NaN-poisoned output, the dtype rule."""
        def build() -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
            inputs = self.make_inputs(spec, device, seed, mixed=True)
            return inputs, reference(inputs, torch.float32), reference(inputs, inputs["q"].dtype)

        inputs, ref, baseline = self._expected((spec, str(device), seed), build)
        out = torch.full_like(inputs["q"], float("nan"))
        try:
            launch(inputs, config, out=out)
        except Exception as exc:  # a config that cannot launch is a failed verification
            return Verification(False, float("inf"), 0.0, f"launch failed: {type(exc).__name__}: {exc}"[:400])
        return compare(out, ref.to(out.device), baseline)

    def compile(self, spec: PagedAttentionSpec, config: PagedAttentionConfig, arch: int = 90, *,
                python: str | None = None) -> CompileReport:
        return compile_decode(spec, config, arch, python=python)

    def work(self, spec: PagedAttentionSpec) -> dict[str, float]:
        return {"bytes": spec.bytes_moved}


def compile_decode(spec: PagedAttentionSpec, config: PagedAttentionConfig, arch: int = 90, *,
                   python: str | None = None) -> CompileReport:
    """AOT-compile the decode kernel of ``config`` for ``sm_{arch}``, specialized as a real launch
    would be (16-divisible pointers and strides). The merge kernel of split configs is small and
    fixed (no tunable tiles), so the report is the decode kernel's."""
    elt = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}[spec.dtype]
    group = spec.heads_q // spec.heads_kv
    pointers = {"q_ptr": f"*{elt}", "k_ptr": f"*{elt}", "v_ptr": f"*{elt}", "table_ptr": "*i32",
                "lens_ptr": "*i32", "out_ptr": f"*{elt}", "part_ptr": "*fp32", "stats_ptr": "*fp32",
                "counter_ptr": "*i32"}
    ints = ["stride_qs", "stride_qh", "stride_kb", "stride_kt", "stride_kh", "stride_vb", "stride_vt",
            "stride_vh", "stride_ts", "stride_os", "stride_oh", "num_heads_q"]
    constexprs = {
        "GROUP": group, "BLOCK_G": config.group_block, "HEAD_DIM": spec.head_dim,
        "BLOCK_D": padded_head_dim(spec.head_dim), "PAGE": spec.block_size, "BLOCK_N": config.block_n,
        "NUM_SPLITS": config.num_splits, "USE_DOT": config.group_block >= 16, "DOT_FP32": False,
        "FOLD_COMBINE": bool(config.fold_combine) and config.num_splits > 1,
    }
    signature = {**pointers, "scale_log2": "fp32", **dict.fromkeys(ints, "i32"), **dict.fromkeys(constexprs, "constexpr")}
    # Strides are multiples of 16 elements whenever head_dim is (what the JIT would specialize).
    aligned = list(pointers) + ([s for s in ints if s != "num_heads_q"] if spec.head_dim % 16 == 0 else [])
    return compile_for_target(_decode_kernel, signature, constexprs, arch=arch, num_warps=config.num_warps,
                              num_stages=config.num_stages, source_hash=source_hash(__name__), aligned=aligned,
                              python=python)


FAMILY = PagedAttentionFamily()
