"""``tritune.flash_attn`` against flash-attn 2.x's documented forward semantics.

The reference below is written from flash-attn's docstrings, per sequence: query i of a sequence
with sq queries and sk keys sits at position i + sk - sq (bottom-right alignment); causal keeps
keys j <= that position, ``window_size=(left, right)`` keeps ``pos - left <= j <= pos + right``
(-1 = unbounded), a row that sees no key gives 0; softcap is ``c * tanh(s / c)`` of the scaled
score; GQA head h reads KV head ``h // (Hq / Hkv)``. Tensors are laid out as flash-attn lays them
out (``[B, S, H, D]``, packed ``[total, H, D]``, pages ``[num_blocks, page_size, Hkv, D]``). The
check is the project's rule: error <= 2x the error of the same math in PyTorch at the input dtype.
"""

from __future__ import annotations

import math

import pytest
import torch
import tritune.flash_attn as fa
from tritune.kernels import compare

HEAD_DIM = 64


# ------------------------------------------------------------------------------------------
# reference (float64, or the input dtype for the PyTorch baseline)

def attend_one(q, k, v, *, causal=False, window=(-1, -1), softcap=0.0, scale=None, alibi=None, sinks=None,
               dtype=torch.float64):
    """One sequence: q [sq, Hq, D], k/v [sk, Hkv, D] -> out [sq, Hq, D] (dtype), lse [Hq, sq] (float64)."""
    sq, heads_q, dim = q.shape
    sk, heads_kv = k.shape[0], k.shape[1]
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    group = heads_q // heads_kv
    qd = q.to(dtype)
    kd = k.to(dtype).repeat_interleave(group, dim=1)
    vd = v.to(dtype).repeat_interleave(group, dim=1)
    scores = torch.einsum("ihd,jhd->hij", qd, kd) * scale
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    pos = torch.arange(sq)[:, None] + sk - sq
    key = torch.arange(sk)[None, :]
    if alibi is not None:
        scores = scores - (alibi.to(dtype)[:, None, None] * (pos - key).abs()[None].to(dtype))
    left, right = window
    if causal:
        right = 0  # flash-attn: causal is the window's right edge at the diagonal
    visible = torch.ones(sq, sk, dtype=torch.bool)
    if right >= 0:
        visible &= key <= pos + right
    if left >= 0:
        visible &= key >= pos - left
    scores = scores.masked_fill(~visible[None], float("-inf"))
    if sinks is not None:
        scores = torch.cat([scores, sinks.to(dtype)[:, None, None].expand(heads_q, sq, 1)], dim=-1)
    lse = torch.logsumexp(scores.double(), dim=-1)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no key: 0
    if sinks is not None:
        probs = probs[..., :-1]
    out = torch.einsum("hij,jhd->ihd", probs, vd)
    return out, lse


def attend(seqs_q, seqs_k, seqs_v, **kw):
    """Per-sequence lists -> packed out [total_q, H, D] and lse [H, total_q], for both precisions."""
    ref = [attend_one(q, k, v, **kw) for q, k, v in zip(seqs_q, seqs_k, seqs_v, strict=True)]
    base = [attend_one(q, k, v, dtype=q.dtype, **kw) for q, k, v in zip(seqs_q, seqs_k, seqs_v, strict=True)]
    return (torch.cat([o for o, _ in ref]), torch.cat([lse for _, lse in ref], dim=1),
            torch.cat([o for o, _ in base]))


def check(out, ref, base):
    verdict = compare(out, ref, base)
    assert verdict.ok, verdict.message


def check_lse(lse, ref_lse):
    assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    empty = torch.isinf(ref_lse)
    assert bool(torch.isneginf(lse[empty]).all()), "rows that see no key must have lse -inf"
    assert torch.allclose(lse[~empty].double(), ref_lse[~empty], atol=2e-2, rtol=1e-3)


def randn(*shape, dtype, gen):
    return torch.randn(*shape, generator=gen).to(dtype)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------
# flash_attn_func: [B, S, H, D]

CASES = [
    # (seqlen_q, seqlen_k, causal, window)
    (7, 7, False, (-1, -1)),
    (7, 7, True, (-1, -1)),
    (9, 5, True, (-1, -1)),  # more queries than keys: the first rows see nothing and give 0
    (3, 19, True, (-1, -1)),  # a chunk at the end of a longer context
    (6, 11, False, (0, 0)),  # each query sees exactly its diagonal key
    (8, 13, True, (4, -1)),  # sliding window, causal
    (8, 13, False, (2, 3)),  # two-sided local window
    (10, 4, False, (1, 0)),  # a window that leaves rows empty
]


@pytest.mark.parametrize("seqlen_q, seqlen_k, causal, window", CASES)
def test_flash_attn_func(seqlen_q, seqlen_k, causal, window):
    g = gen(seqlen_q * 31 + seqlen_k)
    dtype = torch.bfloat16 if causal else torch.float16
    q = randn(2, seqlen_q, 4, HEAD_DIM, dtype=dtype, gen=g)
    k = randn(2, seqlen_k, 2, HEAD_DIM, dtype=dtype, gen=g)
    v = randn(2, seqlen_k, 2, HEAD_DIM, dtype=dtype, gen=g)
    out, lse = fa.flash_attn_func(q, k, v, causal=causal, window_size=window, return_softmax_lse=True)
    assert out.shape == q.shape and out.dtype == dtype and lse.shape == (2, 4, seqlen_q)
    ref, ref_lse, base = attend(list(q), list(k), list(v), causal=causal, window=window)
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)
    check_lse(lse.permute(1, 0, 2).reshape(4, -1), ref_lse)
    if seqlen_q > seqlen_k and causal:
        assert bool((out[:, : seqlen_q - seqlen_k] == 0).all())
    # the default return is the output alone, as in flash-attn
    plain = fa.flash_attn_func(q, k, v, causal=causal, window_size=window)
    assert torch.equal(plain, out)


def test_flash_attn_func_softcap_alibi_scale_mqa():
    g = gen(5)
    q = randn(2, 6, 4, HEAD_DIM, dtype=torch.bfloat16, gen=g)
    k = randn(2, 9, 1, HEAD_DIM, dtype=torch.bfloat16, gen=g) * 3
    v = randn(2, 9, 1, HEAD_DIM, dtype=torch.bfloat16, gen=g)
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    out = fa.flash_attn_func(q, k, v, softmax_scale=0.2, causal=True, softcap=5.0, alibi_slopes=slopes)
    ref, _, base = attend(list(q), list(k), list(v), causal=True, softcap=5.0, scale=0.2, alibi=slopes)
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)


def test_packed_forms_match_the_reference():
    g = gen(6)
    qkv = randn(2, 8, 3, 4, HEAD_DIM, dtype=torch.float16, gen=g)
    out = fa.flash_attn_qkvpacked_func(qkv, causal=True)
    ref, _, base = attend(list(qkv[:, :, 0]), list(qkv[:, :, 1]), list(qkv[:, :, 2]), causal=True)
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)
    q = randn(2, 5, 4, HEAD_DIM, dtype=torch.float16, gen=g)
    kv = randn(2, 8, 2, 2, HEAD_DIM, dtype=torch.float16, gen=g)
    out = fa.flash_attn_kvpacked_func(q, kv, window_size=(2, 2))
    ref, _, base = attend(list(q), list(kv[:, :, 0]), list(kv[:, :, 1]), window=(2, 2))
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)


# ------------------------------------------------------------------------------------------
# varlen: packed sequences (flash-attn's unpadded layout), paged K/V

def padded_batch(lengths_q, lengths_k, dtype, g, heads_q=4, heads_kv=2):
    """flash-attn's test shape: padded [B, S, H, D] tensors + padding masks, and their packed form."""
    batch, sq, sk = len(lengths_q), max(lengths_q), max(lengths_k)
    q = randn(batch, sq, heads_q, HEAD_DIM, dtype=dtype, gen=g)
    k = randn(batch, sk, heads_kv, HEAD_DIM, dtype=dtype, gen=g)
    v = randn(batch, sk, heads_kv, HEAD_DIM, dtype=dtype, gen=g)
    mask_q = torch.arange(sq)[None] < torch.tensor(lengths_q)[:, None]
    mask_k = torch.arange(sk)[None] < torch.tensor(lengths_k)[:, None]

    def cu(lengths):
        return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)

    return {"q": q[mask_q], "k": k[mask_k], "v": v[mask_k], "cu_q": cu(lengths_q), "cu_k": cu(lengths_k),
            "seqs_q": [q[b, :n] for b, n in enumerate(lengths_q)],
            "seqs_k": [k[b, :n] for b, n in enumerate(lengths_k)],
            "seqs_v": [v[b, :n] for b, n in enumerate(lengths_k)], "mask_q": mask_q}


VARLEN = [
    # (lengths_q, lengths_k, causal, window)
    ([5, 5, 5], [5, 5, 5], True, (-1, -1)),  # unpadded: equal lengths
    ([7, 1, 12, 3], [7, 1, 12, 3], True, (-1, -1)),  # padded batch, self-attention
    ([4, 9, 1], [10, 3, 20], True, (-1, -1)),  # seqlen_q > seqlen_k in one sequence
    ([6, 2, 11], [6, 17, 11], False, (-1, -1)),
    ([8, 3, 5], [12, 3, 9], True, (3, 0)),
    ([6, 0, 4], [6, 5, 0], False, (0, 0)),  # a sequence with no queries, one with no keys
]


@pytest.mark.parametrize("lengths_q, lengths_k, causal, window", VARLEN)
def test_flash_attn_varlen_func(lengths_q, lengths_k, causal, window):
    g = gen(sum(lengths_q) + 7 * sum(lengths_k))
    b = padded_batch(lengths_q, lengths_k, torch.bfloat16, g)
    out, lse = fa.flash_attn_varlen_func(b["q"], b["k"], b["v"], b["cu_q"], b["cu_k"], max(lengths_q),
                                         max(lengths_k), causal=causal, window_size=window, return_softmax_lse=True)
    ref, ref_lse, base = attend(b["seqs_q"], b["seqs_k"], b["seqs_v"], causal=causal, window=window)
    assert out.shape == b["q"].shape and lse.shape == (4, sum(lengths_q))
    check(out, ref, base)
    check_lse(lse, ref_lse)


def page_pool(seqs_k, seqs_v, page_size, g, spare=5):
    """Pages [num_blocks, page_size, Hkv, D] drawn from a shuffled, over-provisioned pool."""
    need = [max(1, math.ceil(s.shape[0] / page_size)) for s in seqs_k]
    total = sum(need) + spare
    heads_kv = seqs_k[0].shape[1]
    dtype = seqs_k[0].dtype
    k_cache = randn(total, page_size, heads_kv, HEAD_DIM, dtype=dtype, gen=g)  # garbage where unused
    v_cache = randn(total, page_size, heads_kv, HEAD_DIM, dtype=dtype, gen=g)
    order = torch.randperm(total, generator=g)
    table = torch.zeros(len(seqs_k), max(need), dtype=torch.int32)
    used = 0
    for b, (k, v) in enumerate(zip(seqs_k, seqs_v, strict=True)):
        pages = order[used:used + need[b]]
        used += need[b]
        table[b, :need[b]] = pages.to(torch.int32)
        for t in range(k.shape[0]):
            k_cache[pages[t // page_size], t % page_size] = k[t]
            v_cache[pages[t // page_size], t % page_size] = v[t]
    return k_cache, v_cache, table


@pytest.mark.parametrize("use_seqused", [False, True])
def test_flash_attn_varlen_func_paged(use_seqused):
    g = gen(11 + use_seqused)
    lengths_q, lengths_k = [1, 4, 1, 9], [17, 33, 5, 40]
    b = padded_batch(lengths_q, lengths_k, torch.float16, g)
    k_cache, v_cache, table = page_pool(b["seqs_k"], b["seqs_v"], 16, g)
    kwargs = {"seqused_k": torch.tensor(lengths_k, dtype=torch.int32)} if use_seqused else {}
    cu_k = None if use_seqused else b["cu_k"]
    out = fa.flash_attn_varlen_func(b["q"], k_cache, v_cache, b["cu_q"], cu_k, max(lengths_q), max(lengths_k),
                                    causal=True, block_table=table, **kwargs)
    ref, _, base = attend(b["seqs_q"], b["seqs_k"], b["seqs_v"], causal=True)
    check(out, ref, base)


def test_varlen_packed_forms():
    g = gen(12)
    b = padded_batch([5, 8, 2], [5, 8, 2], torch.bfloat16, g, heads_kv=4)
    qkv = torch.stack([b["q"], b["k"], b["v"]], dim=1)  # [total, 3, H, D]
    out = fa.flash_attn_varlen_qkvpacked_func(qkv, b["cu_q"], 8, causal=True)
    ref, _, base = attend(b["seqs_q"], b["seqs_k"], b["seqs_v"], causal=True)
    check(out, ref, base)
    kv = torch.stack([b["k"], b["v"]], dim=1)  # [total_k, 2, Hkv, D]
    out = fa.flash_attn_varlen_kvpacked_func(b["q"], kv, b["cu_q"], b["cu_k"], 8, 8, causal=True)
    check(out, ref, base)


# ------------------------------------------------------------------------------------------
# flash_attn_with_kvcache

def kvcache_case(g, batch=3, cache_len=48, heads_q=4, heads_kv=2, seqlen_new=3, dtype=torch.bfloat16):
    k_cache = randn(batch, cache_len, heads_kv, HEAD_DIM, dtype=dtype, gen=g)
    v_cache = randn(batch, cache_len, heads_kv, HEAD_DIM, dtype=dtype, gen=g)
    q = randn(batch, seqlen_new, heads_q, HEAD_DIM, dtype=dtype, gen=g)
    k = randn(batch, seqlen_new, heads_kv, HEAD_DIM, dtype=dtype, gen=g)
    v = randn(batch, seqlen_new, heads_kv, HEAD_DIM, dtype=dtype, gen=g)
    return k_cache, v_cache, q, k, v


def appended(cache_row, new, end):
    row = cache_row.clone()
    row[end:end + new.shape[0]] = new
    return row


@pytest.mark.parametrize("causal, window", [(True, (-1, -1)), (False, (-1, -1)), (True, (6, 0))])
def test_kvcache_append_dense(causal, window):
    g = gen(20)
    k_cache, v_cache, q, k, v = kvcache_case(g)
    ends = torch.tensor([0, 17, 40], dtype=torch.int32)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    out, lse = fa.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, cache_seqlens=ends, causal=causal,
                                          window_size=window, num_splits=4, return_softmax_lse=True)
    assert out.shape == q.shape and lse.shape == (3, 4, 3)
    rows_k = [appended(before_k[b], k[b], int(ends[b])) for b in range(3)]
    rows_v = [appended(before_v[b], v[b], int(ends[b])) for b in range(3)]
    assert all(torch.equal(k_cache[b], rows_k[b]) and torch.equal(v_cache[b], rows_v[b]) for b in range(3))
    seqs_k = [rows_k[b][: int(ends[b]) + 3] for b in range(3)]
    seqs_v = [rows_v[b][: int(ends[b]) + 3] for b in range(3)]
    ref, ref_lse, base = attend(list(q), seqs_k, seqs_v, causal=causal, window=window)
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)
    check_lse(lse.permute(1, 0, 2).reshape(4, -1), ref_lse)


def test_kvcache_int_seqlens_without_new_keys():
    g = gen(21)
    k_cache, v_cache, q, _, _ = kvcache_case(g)
    q = q[:, :1]  # one decode token per sequence
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=30)
    ref, _, base = attend(list(q), [c[:30] for c in k_cache], [c[:30] for c in v_cache])
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)
    # cache_seqlens=None: every sequence fills its cache row
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache)
    ref, _, base = attend(list(q), list(k_cache), list(v_cache))
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)


def test_kvcache_paged_append():
    g = gen(22)
    page_size, batch, seqlen_new = 16, 3, 2
    ends = [0, 21, 47]
    old_k = [randn(n, 2, HEAD_DIM, dtype=torch.float16, gen=g) for n in ends]
    old_v = [randn(n, 2, HEAD_DIM, dtype=torch.float16, gen=g) for n in ends]
    # the pages also hold the slots the new tokens go to, filled with garbage the append overwrites
    junk = [randn(seqlen_new, 2, HEAD_DIM, dtype=torch.float16, gen=g) * 100 for _ in ends]
    k_cache, v_cache, table = page_pool([torch.cat([o, j]) for o, j in zip(old_k, junk, strict=True)],
                                        [torch.cat([o, j]) for o, j in zip(old_v, junk, strict=True)], page_size, g)
    q = randn(batch, seqlen_new, 4, HEAD_DIM, dtype=torch.float16, gen=g)
    k = randn(batch, seqlen_new, 2, HEAD_DIM, dtype=torch.float16, gen=g)
    v = randn(batch, seqlen_new, 2, HEAD_DIM, dtype=torch.float16, gen=g)
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, cache_seqlens=torch.tensor(ends, dtype=torch.int32),
                                     block_table=table, causal=True)
    for b in range(batch):  # the new tokens landed in their pages
        for t in range(seqlen_new):
            pos = ends[b] + t
            assert torch.equal(k_cache[table[b, pos // page_size], pos % page_size], k[b, t])
            assert torch.equal(v_cache[table[b, pos // page_size], pos % page_size], v[b, t])
    seqs_k = [torch.cat([old_k[b], k[b]]) for b in range(batch)]
    seqs_v = [torch.cat([old_v[b], v[b]]) for b in range(batch)]
    ref, _, base = attend(list(q), seqs_k, seqs_v, causal=True)
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)


@pytest.mark.parametrize("cache_len", [48, 40])  # 48 = 3 pages of 16 (page-table view); 40: gather
def test_kvcache_batch_idx_and_leftpad(cache_len):
    g = gen(23)
    k_cache, v_cache, _, _, _ = kvcache_case(g, batch=5, cache_len=cache_len)
    q = randn(3, 2, 4, HEAD_DIM, dtype=torch.bfloat16, gen=g)
    k = randn(3, 2, 2, HEAD_DIM, dtype=torch.bfloat16, gen=g)
    v = randn(3, 2, 2, HEAD_DIM, dtype=torch.bfloat16, gen=g)
    rows = torch.tensor([4, 0, 2], dtype=torch.int32)
    ends = torch.tensor([9, 30, 3], dtype=torch.int32)
    leftpad = torch.tensor([4, 0, 3], dtype=torch.int32)  # the third sequence's old cache is empty
    before_k, before_v = k_cache.clone(), v_cache.clone()
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, cache_seqlens=ends, cache_batch_idx=rows,
                                     cache_leftpad=leftpad, causal=True)
    seqs_k, seqs_v = [], []
    for b in range(3):
        r, e, lp = int(rows[b]), int(ends[b]), int(leftpad[b])
        row_k, row_v = appended(before_k[r], k[b], e), appended(before_v[r], v[b], e)
        assert torch.equal(k_cache[r], row_k) and torch.equal(v_cache[r], row_v)
        seqs_k.append(row_k[lp:e + 2])
        seqs_v.append(row_v[lp:e + 2])
    untouched = [1, 3]
    assert torch.equal(k_cache[untouched], before_k[untouched])
    ref, _, base = attend(list(q), seqs_k, seqs_v, causal=True)
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)


def rotate_ref(x, cos, sin, positions, interleaved):
    """Rotary embedding written as a complex rotation of dimension pairs (independent of the module)."""
    rot = 2 * cos.shape[1]
    x64 = x.double()
    angle = torch.complex(cos[positions].double(), sin[positions].double())[:, None, :]  # [S, 1, rot/2]
    head = x64[..., :rot]
    if interleaved:
        pairs = torch.complex(head[..., 0::2], head[..., 1::2]) * angle
        head = torch.stack([pairs.real, pairs.imag], dim=-1).flatten(-2)
    else:
        pairs = torch.complex(head[..., :rot // 2], head[..., rot // 2:]) * angle
        head = torch.cat([pairs.real, pairs.imag], dim=-1)
    return torch.cat([head, x64[..., rot:]], dim=-1).to(x.dtype)


@pytest.mark.parametrize("interleaved, causal", [(True, True), (False, True), (False, False)])
def test_kvcache_rotary(interleaved, causal):
    g = gen(24)
    k_cache, v_cache, q, k, v = kvcache_case(g, batch=2, seqlen_new=3)
    ends = torch.tensor([5, 20], dtype=torch.int32)
    rot = 32  # rotate the first half of the head dims
    freqs = torch.rand(64, rot // 2, generator=g) * 3
    cos, sin = torch.cos(freqs).to(q.dtype), torch.sin(freqs).to(q.dtype)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, rotary_cos=cos, rotary_sin=sin, cache_seqlens=ends,
                                     causal=causal, rotary_interleaved=interleaved)
    seqs_q, seqs_k, seqs_v = [], [], []
    for b in range(2):
        e = int(ends[b])
        new_pos = torch.arange(e, e + 3)
        k_rot = rotate_ref(k[b], cos, sin, new_pos, interleaved)
        q_pos = new_pos if causal else torch.full((3,), e)  # flash-attn: non-causal q sits at cache_seqlens
        seqs_q.append(rotate_ref(q[b], cos, sin, q_pos, interleaved))
        row_k = appended(before_k[b], k_rot, e)
        assert torch.allclose(k_cache[b].double(), row_k.double(), atol=2e-2)
        seqs_k.append(k_cache[b][:e + 3])  # the kernel must attend to what it wrote
        seqs_v.append(appended(before_v[b], v[b], e)[:e + 3])
    ref, _, base = attend(seqs_q, seqs_k, seqs_v, causal=causal)
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)


def test_sinks_as_s_aux():
    g = gen(25)
    q = randn(2, 4, 4, HEAD_DIM, dtype=torch.bfloat16, gen=g)
    k = randn(2, 10, 2, HEAD_DIM, dtype=torch.bfloat16, gen=g)
    v = randn(2, 10, 2, HEAD_DIM, dtype=torch.bfloat16, gen=g)
    sinks = torch.tensor([0.5, -1.0, 2.0, 0.0])
    out = fa.flash_attn_func(q, k, v, causal=True, window_size=(3, 0), s_aux=sinks)
    ref, _, base = attend(list(q), list(k), list(v), causal=True, window=(3, 0), sinks=sinks)
    check(out.reshape(-1, 4, HEAD_DIM), ref, base)


# ------------------------------------------------------------------------------------------
# what it cannot honour, and bad arguments: ValueError naming the argument

def small():
    g = gen(30)
    return (randn(1, 3, 2, HEAD_DIM, dtype=torch.float16, gen=g), randn(1, 3, 2, HEAD_DIM, dtype=torch.float16, gen=g),
            randn(1, 3, 2, HEAD_DIM, dtype=torch.float16, gen=g))


@pytest.mark.parametrize("kwargs, name", [
    ({"dropout_p": 0.1}, "dropout_p"),
    ({"return_attn_probs": True}, "return_attn_probs"),
    ({"deterministic": True}, "deterministic"),
    ({"window_size": 3}, "window_size"),
    ({"window_size": (2, -3)}, "window_size"),
    ({"softcap": -1.0}, "softcap"),
    ({"softmax_scale": 0.0}, "softmax_scale"),
])
def test_unsupported_arguments_raise(kwargs, name):
    q, k, v = small()
    with pytest.raises(ValueError, match=name):
        fa.flash_attn_func(q, k, v, **kwargs)


def test_backward_is_refused():
    q, k, v = small()
    q.requires_grad_(True)
    with pytest.raises(ValueError, match="q requires grad"):
        fa.flash_attn_func(q, k, v)
    with torch.no_grad():  # inference on a leaf that requires grad is fine
        assert fa.flash_attn_func(q, k, v).shape == q.shape


def test_kvcache_argument_errors():
    q, k, v = small()
    cache = torch.zeros(1, 16, 2, HEAD_DIM, dtype=torch.float16)
    table = torch.zeros(1, 1, dtype=torch.int32)
    seqlens = torch.tensor([3], dtype=torch.int32)
    with pytest.raises(ValueError, match="cache_seqlens"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), k, v)
    with pytest.raises(ValueError, match="k and v"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), k, None, cache_seqlens=seqlens)
    with pytest.raises(ValueError, match="cache_batch_idx"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), cache_seqlens=seqlens, block_table=table,
                                   cache_batch_idx=torch.zeros(1, dtype=torch.int32))
    with pytest.raises(ValueError, match="cache_seqlens"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), cache_seqlens=seqlens.long())
    with pytest.raises(ValueError, match="num_splits"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), cache_seqlens=seqlens, num_splits=-1)
    with pytest.raises(ValueError, match="rotary_cos"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), cache_seqlens=seqlens,
                                   rotary_cos=torch.ones(8, 16), rotary_sin=torch.ones(8, 16))
    with pytest.raises(ValueError, match="k_cache"):
        fa.flash_attn_with_kvcache(q, cache.transpose(2, 3), cache.clone(), cache_seqlens=seqlens)
    # value checks, before anything is written into the cache
    before = cache.clone()
    with pytest.raises(ValueError, match="cache_seqlens"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), k, v, cache_seqlens=torch.tensor([14], dtype=torch.int32))
    with pytest.raises(ValueError, match="cache_leftpad"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), k, v, cache_seqlens=seqlens,
                                   cache_leftpad=torch.tensor([4], dtype=torch.int32))
    with pytest.raises(ValueError, match="cache_batch_idx"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), k, v, cache_seqlens=seqlens,
                                   cache_batch_idx=torch.tensor([1], dtype=torch.int32))
    with pytest.raises(ValueError, match="block_table"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), k, v, cache_seqlens=seqlens, block_table=table.long())
    assert torch.equal(cache, before)


def test_varlen_argument_errors():
    g = gen(31)
    b = padded_batch([3, 2], [3, 2], torch.float16, g)
    with pytest.raises(ValueError, match="max_seqlen_q"):
        fa.flash_attn_varlen_func(b["q"], b["k"], b["v"], b["cu_q"], b["cu_k"], torch.tensor(3), 3)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        fa.flash_attn_varlen_func(b["q"], b["k"], b["v"], b["cu_q"], None, 3, 3)
    with pytest.raises(ValueError, match="dropout_p"):
        fa.flash_attn_varlen_func(b["q"], b["k"], b["v"], b["cu_q"], b["cu_k"], 3, 3, 0.5)


def test_imports_as_flash_attn_does():
    import tritune
    from tritune.flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

    assert tritune.flash_attn.flash_attn_func is flash_attn_func
    assert callable(flash_attn_varlen_func) and callable(flash_attn_with_kvcache)


def test_empty_query_batch():
    q, k, v = small()
    out, lse = fa.flash_attn_func(q[:, :0], k, v, causal=True, return_softmax_lse=True)
    assert out.shape == (1, 0, 2, HEAD_DIM) and lse.shape == (1, 2, 0)
