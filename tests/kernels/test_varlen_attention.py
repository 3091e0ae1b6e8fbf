"""The varlen serving kernel against its float64 reference, under the Triton interpreter.

Every case is one serving step in one launch: decode rows, speculative rows (2-8 tokens) and
chunked-prefill chunks (1-300 tokens) on cached prefixes (0-2000 tokens), idle sequences (0 new
tokens), over a paged cache whose block table is drawn from a permutation of an over-provisioned
pool (pages nobody owns and slots past each sequence's end hold NaN), or packed / batched K/V;
vLLM's strided cache views; GQA groups 1, 3, 4, 8 and MQA; every head dim serving models use;
fp16 and bf16; FP8 caches with descales (the reference runs on the dequantized cache); sliding
windows, softcap, sinks and ALiBi alone and combined. Each case runs with two configs drawn from
the search space, into a NaN-filled output, and must meet the dtype rule of
``tritune.kernels.compare`` for the output and the log-sum-exp.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritune.kernels import compare
from tritune.kernels.varlen_attention import FP8, attention_math, launch, make_batch
from tritune.search_space import Hardware, VarlenAttentionConfig, VarlenAttentionSpec, space_for

CPU = Hardware.cpu_interpreter()
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
HEADS = {"mha": (2, 2), "gqa3": (6, 2), "gqa4": (8, 2), "gqa8": (8, 1), "mqa": (4, 1)}  # (Hq, Hkv)
HEAD_DIMS = (64, 80, 96, 128, 192, 256)
FEATURES = ("plain", "window", "softcap", "sinks", "alibi", "window+softcap", "window+sinks", "alibi+window",
            "softcap+sinks+window", "all")


def batch_lengths(rng: random.Random, kind: str, long: bool) -> tuple[list[int], list[int]]:
    """(new tokens, keys) per sequence for one kind of serving step."""
    prefix_max = 1200 if long else 120  # long: many pages and key blocks; the interpreter runs each in Python
    q_lens: list[int] = []
    k_lens: list[int] = []

    def add(q: int, prefix: int) -> None:
        q_lens.append(q)
        k_lens.append(q + prefix)

    if kind in ("decode", "mixed"):
        for _ in range(rng.randint(2, 4)):
            add(1, rng.randint(0, prefix_max))
    if kind in ("spec", "mixed"):
        for _ in range(rng.randint(1, 3) if kind == "spec" else 1):
            add(rng.randint(2, 8), rng.randint(0, prefix_max))
    if kind in ("prefill", "mixed"):
        for _ in range(rng.randint(1, 2)):
            add(rng.randint(1, 200 if long else 90), rng.choice((0, rng.randint(1, prefix_max))))
    if kind == "mixed" and rng.random() < 0.5:
        add(0, rng.randint(1, 40))  # a sequence idle this step
    order = list(range(len(q_lens)))
    rng.shuffle(order)
    return [q_lens[i] for i in order], [k_lens[i] for i in order]


def features(name: str, rng: random.Random, heads_q: int, num_seqs: int) -> dict:
    out: dict = {}
    parts = {"window", "softcap", "sinks", "alibi"} if name == "all" else set(name.split("+")) - {"plain"}
    if "window" in parts:
        out["window_size"] = (rng.choice((0, 1, 7, 33, 100)), -1)
    if "softcap" in parts:
        out["softcap"] = rng.choice((5.0, 30.0))
    if "sinks" in parts:
        out["sinks"] = torch.randn(heads_q, generator=torch.Generator().manual_seed(rng.randint(0, 99))) * 2
    if "alibi" in parts:
        slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads_q) for h in range(heads_q)])
        out["alibi_slopes"] = slopes if rng.random() < 0.5 else slopes[None].repeat(num_seqs, 1).contiguous()
    return out


def spec_of(q_lens, k_lens, heads, head_dim, block_size, dtype, fp8, causal, feats) -> VarlenAttentionSpec:
    window = feats.get("window_size", (-1, -1))
    return VarlenAttentionSpec(
        num_seqs=len(q_lens), total_q=max(1, sum(q_lens)), max_seqlen_q=max(1, max(q_lens)),
        max_seqlen_k=max(1, max(k_lens)), heads_q=heads[0], heads_kv=heads[1], head_dim=head_dim,
        block_size=block_size, dtype=dtype, kv_dtype="fp8" if fp8 else "auto", causal=causal,
        window_left=window[0], window_right=window[1], softcap="softcap" in feats, alibi="alibi_slopes" in feats,
        sinks="sinks" in feats)


def pick_configs(spec: VarlenAttentionSpec, rng: random.Random, n: int, cycle: int) -> list[VarlenAttentionConfig]:
    """``n`` valid configs, rotating pack_gqa / splits / split_diag so the grid covers every knob;
    steps of 16 keys only on short contexts (the interpreter runs every step in Python)."""
    space = space_for(spec, CPU)
    pool = [c for c in space.sample(rng, 400) if spec.max_seqlen_k <= 256 or int(c["block_n"]) >= 64]
    if not pool:
        pool = [space.default()]
    chosen = []
    for i in range(n):
        want_pack = (cycle + i) % 2 == 0
        want_split = (cycle + i) % 3 != 0
        ranked = sorted(pool, key=lambda c: ((c["pack_gqa"] != want_pack) + ((c["num_splits"] > 1) != want_split)
                                             + (c["split_diag"] != (i % 2 == 0)), rng.random()))
        chosen.append(space.config(ranked[0]))
    return chosen


def _grid() -> list:
    cases = []
    kinds = itertools.cycle(("mixed", "decode", "spec", "prefill", "mixed"))
    blocks = itertools.cycle((16, 32, 64, 128, 0, 16, 32, 64))
    dims = itertools.cycle(HEAD_DIMS)
    feats = itertools.cycle(FEATURES)
    for layout, dtype in itertools.product(HEADS, DTYPES):
        for _ in range(17):
            n = len(cases)
            kind, block_size, head_dim, feat = next(kinds), next(blocks), next(dims), next(feats)
            long = n % 9 == 4
            fp8 = n % 7 == 3 and block_size > 0
            causal = n % 6 != 5
            vllm = block_size > 0 and n % 3 == 1
            cases.append(pytest.param(n, kind, long, HEADS[layout], head_dim, block_size, dtype, fp8, causal, vllm,
                                      feat, id=f"{n}-{kind}{'-long' if long else ''}-{layout}-D{head_dim}-"
                                      f"bs{block_size}{'-vllm' if vllm else ''}-{dtype}{'-fp8' if fp8 else ''}-"
                                      f"{'causal' if causal else 'full'}-{feat}"))
    return cases


GRID = _grid()


def check(inputs: dict, config: VarlenAttentionConfig, what: str) -> None:
    ref, ref_lse = attention_math(inputs, torch.float64)
    base, base_lse = attention_math(inputs, inputs["q"].dtype)
    out = torch.full_like(inputs["q"], float("nan"))
    lse = torch.full((inputs["q"].shape[1], inputs["q"].shape[0]), float("nan"))
    launch(inputs, config, out=out, lse=lse)
    result = compare(out, ref, base)
    assert result.ok, f"{result.message}: {what}, {config}"
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), f"LSE finite pattern differs: {what}, {config}"
    lse_err = (lse[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0
    lse_base = (base_lse[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0
    assert lse_err <= 2 * lse_base + 2e-3, f"LSE error {lse_err:.3g} > 2x {lse_base:.3g}: {what}, {config}"


@pytest.mark.parametrize("n,kind,long,heads,head_dim,block_size,dtype,fp8,causal,vllm,feat", GRID)
def test_grid(n, kind, long, heads, head_dim, block_size, dtype, fp8, causal, vllm, feat):
    rng = random.Random(n)
    q_lens, k_lens = batch_lengths(rng, kind, long)
    extra = features(feat, rng, heads[0], len(q_lens))
    if not causal and "window_size" in extra:
        extra["window_size"] = (extra["window_size"][0], rng.choice((0, 5, 40)))
    inputs = make_batch(q_lens, k_lens, heads_q=heads[0], heads_kv=heads[1], head_dim=head_dim,
                        block_size=block_size, dtype=DTYPES[dtype], kv_dtype=FP8 if fp8 else None, seed=n,
                        vllm_layout=vllm)
    if fp8 and n % 3 == 0:  # per-sequence-and-head descales ([B, Hkv]) besides per-head ([Hkv])
        inputs["k_descale"] = inputs["k_descale"][None].repeat(len(q_lens), 1).contiguous()
        inputs["v_descale"] = inputs["v_descale"][None].repeat(len(q_lens), 1).contiguous() * 0.9
    elif fp8 and n % 3 == 1:  # one descale per tensor
        inputs["k_descale"], inputs["v_descale"] = inputs["k_descale"][:1].clone(), inputs["v_descale"][:1].clone()
    inputs.update(extra, causal=causal)
    spec = spec_of(q_lens, k_lens, heads, head_dim, block_size, dtype, fp8, causal, extra)
    for config in pick_configs(spec, rng, 2, n):
        check(inputs, config, f"q_lens={q_lens} k_lens={k_lens}")


def test_grid_covers_the_issue():
    assert len(GRID) * 2 >= 300  # cases x configs
    ids = " ".join(p.id for p in GRID)
    for needle in ("-long-", "-vllm-", "-fp8-", "bs0-", "bs128-", "-full-", "gqa3", "mqa", "-all", "spec", "decode"):
        assert needle in ids, needle
    for d in HEAD_DIMS:
        assert f"-D{d}-" in ids


def batched_from_packed(inputs: dict, k_lens: list[int], width: int) -> dict:
    """The same batch with K/V as batched ``[B, width, Hkv, D]`` slabs (padding NaN) and seqused_k."""
    k, v, cu_k = inputs.pop("k"), inputs.pop("v"), inputs.pop("cu_seqlens_k").tolist()
    kb = torch.full((len(k_lens), width, *k.shape[1:]), float("nan"), dtype=k.dtype)
    vb = kb.clone()
    for b, n in enumerate(k_lens):
        kb[b, :n], vb[b, :n] = k[cu_k[b]:cu_k[b] + n], v[cu_k[b]:cu_k[b] + n]
    inputs.update(k=kb, v=vb, seqused_k=torch.tensor(k_lens, dtype=torch.int32))
    return inputs


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("feat", ["plain", "window+sinks"])
def test_batched_layout(dtype, feat):
    """Batched K/V (transformers' padded layout as a strided view), NaN past each sequence's end."""
    rng = random.Random(3)
    q_lens, k_lens = [5, 1, 0, 17], [40, 9, 3, 17]
    inputs = batched_from_packed(make_batch(q_lens, k_lens, heads_q=4, heads_kv=2, head_dim=64, block_size=0,
                                            dtype=DTYPES[dtype], seed=4), k_lens, 48)
    inputs.update(features(feat, rng, 4, 4), causal=True)
    # transformers hands [B, Hkv, S, D]: the kernel reads its transpose without a copy
    inputs["k"] = inputs["k"].transpose(1, 2).contiguous().transpose(1, 2)
    check(inputs, VarlenAttentionConfig(32, 32, True, 2, True, 4, 2), "batched")


def test_kv_bounds_left_padding():
    """kv_bounds (lo, hi, shift): a left-padded batch whose padding keys are NaN never leaks."""
    q_lens, k_lens = [6, 6], [30, 30]
    inputs = batched_from_packed(make_batch(q_lens, k_lens, heads_q=4, heads_kv=1, head_dim=64, block_size=0,
                                            dtype=torch.float16, seed=9), k_lens, 30)
    inputs["k"][0, :11] = float("nan")  # left padding of sequence 0
    inputs["v"][0, :11] = float("nan")
    inputs["kv_bounds"] = torch.tensor([[11, 30, 24], [0, 30, 24]], dtype=torch.int32)
    inputs.update(causal=True, window_size=(8, -1))
    for config in (VarlenAttentionConfig(16, 16, True, 1, True, 4, 2), VarlenAttentionConfig(32, 16, False, 2, False, 4, 2)):
        check(inputs, config, "kv_bounds")


def test_reference_matches_sdpa():
    """The reference itself against PyTorch SDPA on an equal-length GQA batch (float64)."""
    q_lens, k_lens = [7, 7], [19, 19]
    inputs = make_batch(q_lens, k_lens, heads_q=6, heads_kv=2, head_dim=32, block_size=16, dtype=torch.float16,
                        seed=1)
    inputs["causal"] = True
    out, _ = attention_math(inputs, torch.float64)
    from tritune.kernels.varlen_attention import _keys

    for b in range(2):
        q = inputs["q"][b * 7:(b + 1) * 7].double().transpose(0, 1)
        k = _keys(inputs["k"], inputs, b, 0, 19).double().transpose(0, 1).repeat_interleave(3, 0)
        v = _keys(inputs["v"], inputs, b, 0, 19).double().transpose(0, 1).repeat_interleave(3, 0)
        mask = torch.arange(19)[None, :] <= torch.arange(7)[:, None] + 12
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.testing.assert_close(out[b * 7:(b + 1) * 7].transpose(0, 1), want)


def test_reference_sinks_and_softcap_by_hand():
    """One row worked by hand: softcap, ALiBi and a sink on two keys."""
    q = torch.tensor([[[1.0, 0.0]]], dtype=torch.float16)
    k = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float16)
    v = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float16)
    inputs = {"q": q, "k": k, "v": v, "cu_seqlens_q": torch.tensor([0, 1], dtype=torch.int32),
              "cu_seqlens_k": torch.tensor([0, 2], dtype=torch.int32), "causal": True, "scale": 1.0,
              "softcap": 1.5, "sinks": torch.tensor([0.25]), "alibi_slopes": torch.tensor([0.5])}
    out, lse = attention_math(inputs, torch.float64)
    s = torch.tensor([1.5 * torch.tanh(torch.tensor(2.0 / 1.5)) - 0.5, 0.0], dtype=torch.float64)
    logits = torch.cat([s, torch.tensor([0.25], dtype=torch.float64)])
    p = torch.softmax(logits, 0)[:2]
    torch.testing.assert_close(out[0, 0], p.double())
    assert abs(float(lse[0, 0]) - float(torch.logsumexp(logits, 0))) < 1e-6


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_random_batches_and_configs(data):
    """Random ragged batches, layouts, features and any valid config of the space."""
    seqs = data.draw(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 60)), min_size=1, max_size=5))
    q_lens = [q for q, _ in seqs]
    if sum(q_lens) == 0:
        q_lens[0] = 1
    k_lens = [q + prefix for q, (_, prefix) in zip(q_lens, seqs, strict=True)]
    heads = data.draw(st.sampled_from(list(HEADS.values())))
    head_dim = data.draw(st.sampled_from((16, 32, 48, 64)))
    block_size = data.draw(st.sampled_from((0, 8, 16, 32)))
    dtype = data.draw(st.sampled_from(list(DTYPES)))
    causal = data.draw(st.booleans())
    rng = random.Random(data.draw(st.integers(0, 10_000)))
    extra = features(data.draw(st.sampled_from(FEATURES)), rng, heads[0], len(q_lens))
    inputs = make_batch(q_lens, k_lens, heads_q=heads[0], heads_kv=heads[1], head_dim=head_dim,
                        block_size=block_size, dtype=DTYPES[dtype], seed=rng.randint(0, 99),
                        vllm_layout=block_size > 0 and data.draw(st.booleans()))
    inputs.update(extra, causal=causal)
    spec = spec_of(q_lens, k_lens, heads, head_dim, block_size, dtype, False, causal, extra)
    space = space_for(spec, CPU)
    config = space.config(data.draw(st.sampled_from(space.sample(rng, 60) or [space.default()])))
    check(inputs, config, f"q_lens={q_lens} k_lens={k_lens}")


@pytest.mark.parametrize("poly", [25, 50, 100])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_exp2_on_the_fma_pipes(poly, dtype):
    """The exp2_poly knob (a share of the exponentials by a cubic) meets the dtype rule, masked
    and unmasked tiles alike (causal chunk over a prefix, a window, softcap and sinks)."""
    q_lens, k_lens = [1, 37, 3, 0], [50, 120, 9, 4]
    inputs = make_batch(q_lens, k_lens, heads_q=8, heads_kv=2, head_dim=64, block_size=16, dtype=DTYPES[dtype],
                        seed=poly)
    inputs.update(features("softcap+sinks+window", random.Random(poly), 8, 4), causal=True)
    for pack, splits in ((True, 1), (False, 2)):
        check(inputs, VarlenAttentionConfig(32, 32, pack, splits, True, 4, 2, poly), f"exp2_poly={poly}")
