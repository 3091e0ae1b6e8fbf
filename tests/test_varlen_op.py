"""``tritune.varlen_attention``: argument errors, value checks, dispatch and the launch fallback."""

from __future__ import annotations

import logging

import pytest
import torch
import tritune
from tritune import runtime
from tritune._varlen_op import spec_of
from tritune.db import Trial, TuningDB
from tritune.kernels import compare, kernel_hash
from tritune.kernels import varlen_attention as va
from tritune.search_space import VarlenAttentionConfig, detect, space_for

Q_LENS, K_LENS = [1, 4, 0, 21], [30, 12, 5, 40]


def batch(**kw):
    args = dict(heads_q=4, heads_kv=2, head_dim=64, block_size=16, dtype=torch.float16, seed=2)
    args.update(kw)
    return va.make_batch(Q_LENS, K_LENS, **args)


def call(inputs, **kw):
    args = {k: v for k, v in inputs.items() if k in ("cu_seqlens_k", "seqused_k", "block_table", "k_descale",
                                                     "v_descale")}
    args.update(kw)
    return tritune.varlen_attention(inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], 21, 40, **args)


def test_matches_reference_with_lse_and_out():
    inputs = batch()
    out = torch.empty_like(inputs["q"])
    got, lse = call(inputs, causal=True, window_size=(9, -1), out=out, return_lse=True)
    assert got is out
    inputs.update(causal=True, window_size=(9, -1))
    ref, ref_lse = va.attention_math(inputs, torch.float64)
    assert compare(out, ref, va.baseline(inputs)).ok
    finite = torch.isfinite(ref_lse)
    assert torch.allclose(lse[finite], ref_lse[finite], atol=1e-2)


def test_opcheck():
    inputs = batch()
    out = torch.empty_like(inputs["q"])
    lse = torch.empty(0)
    args = (inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], 21, 40, None, inputs["seqused_k"],
            inputs["block_table"], None, True, -1, 0, 0.0, None, None, 0.125, None, None, out, lse, False)
    torch.library.opcheck(torch.ops.tritune.varlen_attention.default, args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("change,needle", [
    (lambda i: i.update(cu_seqlens_q=torch.tensor([0, 1, 5, 3, 26], dtype=torch.int32)), "cu_seqlens_q must be non-decreasing"),
    (lambda i: i.update(cu_seqlens_q=torch.tensor([0, 1, 5, 5, 25], dtype=torch.int32)), "cu_seqlens_q[-1]"),
    (lambda i: i.update(seqused_k=torch.tensor([30, 12, 5, 999], dtype=torch.int32)), "seqused_k[3]"),
    (lambda i: i["block_table"].__setitem__((0, 0), 10_000), "block_table[0, 0]"),
    (lambda i: i.update(v=i["v"].to(torch.bfloat16)), "v.dtype"),
    (lambda i: i.update(k=i["k"].to(torch.float8_e4m3fn), v=i["v"].to(torch.float8_e4m3fn)), "k_descale"),
    (lambda i: i.update(seqused_k=i["seqused_k"].long()), "seqused_k must be an int32"),
    (lambda i: i.update(cu_seqlens_q=i["cu_seqlens_q"].long()), "cu_seqlens_q must be an int32"),
])
def test_bad_input_names_the_argument(change, needle):
    inputs = batch()
    change(inputs)
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        call(inputs, causal=True)


def test_bad_options_name_the_argument():
    inputs = batch()
    with pytest.raises(ValueError, match="window_size"):
        call(inputs, window_size=4)
    with pytest.raises(ValueError, match="window_size"):
        call(inputs, window_size=(4.0, -1))
    with pytest.raises(ValueError, match="window_size"):
        call(inputs, window_size=(-2, -1))
    with pytest.raises(ValueError, match="softcap"):
        call(inputs, softcap="30")
    with pytest.raises(ValueError, match="softcap"):
        call(inputs, softcap=-1.0)
    with pytest.raises(ValueError, match="head_dim=320"):
        big = va.make_batch([1], [4], heads_q=2, heads_kv=1, head_dim=320, block_size=16, dtype=torch.float16)
        tritune.varlen_attention(big["q"], big["k"], big["v"], big["cu_seqlens_q"], 1, 4,
                                 seqused_k=big["seqused_k"], block_table=big["block_table"])
    with pytest.raises(ValueError, match="alibi_slopes"):
        call(inputs, alibi_slopes=torch.ones(3))
    with pytest.raises(ValueError, match="sinks"):
        call(inputs, sinks=torch.ones(2))
    with pytest.raises(ValueError, match="max_seqlen_q=2 is too small"):
        tritune.varlen_attention(inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], 2, 40,
                                 seqused_k=inputs["seqused_k"], block_table=inputs["block_table"])
    with pytest.raises(ValueError, match="needs seqused_k"):
        tritune.varlen_attention(inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], 21, 40,
                                 block_table=inputs["block_table"])
    packed = batch(block_size=0)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        tritune.varlen_attention(packed["q"], packed["k"], packed["v"], packed["cu_seqlens_q"], 21, 40)
    with pytest.raises(ValueError, match=r"cu_seqlens_k\[-1\]"):
        bad = packed["cu_seqlens_k"].clone()
        bad[-1] += 3
        tritune.varlen_attention(packed["q"], packed["k"], packed["v"], packed["cu_seqlens_q"], 21, 40,
                                 cu_seqlens_k=bad)


def test_fp8_descale_shapes_are_checked():
    inputs = batch(kv_dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="k_descale must be float32"):
        call(inputs, k_descale=torch.ones(3), v_descale=torch.ones(3))
    out = call(inputs, causal=True)
    inputs["causal"] = True
    assert compare(out, va.reference(inputs), va.baseline(inputs)).ok


def test_bucket_key_uses_host_values_only():
    inputs = batch()
    spec = spec_of(inputs["q"], inputs["k"], 4, 21, 40, paged=True, causal=True, window=(-1, 0), softcap=False,
                   alibi=False, sinks=False)
    assert (spec.num_seqs, spec.total_q, spec.max_seqlen_q, spec.max_seqlen_k, spec.block_size) == (4, 26, 21, 40, 16)
    # an over-generous max_seqlen_q (flash-attn callers pass bounds) is clamped to the rows there are
    spec = spec_of(inputs["q"], inputs["k"], 4, 4096, 40, paged=True, causal=True, window=(-1, 0), softcap=False,
                   alibi=False, sinks=False)
    assert spec.max_seqlen_q == 26


def test_planted_failing_config_falls_back_to_default_once(tmp_path, monkeypatch, caplog):
    """A tuned config that cannot launch on this card (here: every launch with block_m=32 raises
    Triton's OutOfResources) is dropped for its bucket, logged once, and the default runs."""
    from triton.runtime.errors import OutOfResources

    inputs = batch()
    hw = detect(None)
    spec = spec_of(inputs["q"], inputs["k"], 4, 21, 40, paged=True, causal=True, window=(-1, 0), softcap=False,
                   alibi=False, sinks=False)
    default = space_for(spec, hw).default()
    planted = next(c for c in space_for(spec, hw) if c["block_m"] != default["block_m"] and c["num_splits"] == 1)
    db = tmp_path / "tuned.db"
    with TuningDB(db) as handle:
        handle.record_trial(Trial(hardware=hw, kernel=spec.kernel, kernel_hash=kernel_hash(spec.kernel),
                                  bucket=spec.bucket().key, spec=spec.representative().to_dict(), config=planted,
                                  status="ok", backend="gpu", real_timing=True, time_ms=0.1))
    runtime.configure(db_path=db, use_builtin=False)
    real = va._varlen_fwd
    launched = []

    class Failing:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                launched.append(kwargs["BLOCK_M"])
                if kwargs["BLOCK_M"] == planted["block_m"]:
                    raise OutOfResources(300_000, 232_448, "shared memory")
                return real[grid](*args, **kwargs)
            return run

    monkeypatch.setattr(va, "_varlen_fwd", Failing())
    try:
        assert runtime.select(spec).config.to_dict() == planted  # it is what the table says
        with caplog.at_level(logging.WARNING, logger="tritune.runtime"):
            first = call(inputs, causal=True)
            second = call(inputs, causal=True)
        assert launched == [planted["block_m"], default["block_m"], default["block_m"]]
        assert sum("failed to launch" in r.message for r in caplog.records) == 1
        inputs["causal"] = True
        ref, base = va.reference(inputs), va.baseline(inputs)
        assert compare(first, ref, base).ok and torch.equal(first, second)
    finally:
        runtime.configure()


def test_a_failing_default_is_not_hidden(monkeypatch):
    inputs = batch()

    class Broken:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                raise RuntimeError("planted compile error")
            return run

    monkeypatch.setattr(va, "_varlen_fwd", Broken())
    runtime.configure(use_builtin=False)
    try:
        with pytest.raises(RuntimeError, match="planted compile error"):
            call(inputs, causal=True, window_size=(3, -1))
    finally:
        runtime.configure()


def test_zero_rows_and_idle_batch():
    inputs = va.make_batch([0, 0], [3, 5], heads_q=2, heads_kv=1, head_dim=32, block_size=16, dtype=torch.float16)
    out, lse = tritune.varlen_attention(inputs["q"], inputs["k"], inputs["v"], inputs["cu_seqlens_q"], 0, 5,
                                        seqused_k=inputs["seqused_k"], block_table=inputs["block_table"],
                                        return_lse=True)
    assert out.shape == (0, 2, 32) and lse.shape == (2, 0)


def test_config_type_is_the_spaces():
    assert isinstance(runtime.select(spec_of(batch()["q"], batch()["k"], 4, 21, 40, paged=True, causal=True,
                                             window=(-1, 0), softcap=False, alibi=False, sinks=False)).config,
                      VarlenAttentionConfig)
