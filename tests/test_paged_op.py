"""tritune.paged_attention: argument errors, the torch operator (opcheck, torch.compile), and the
runtime's tuned config reaching the launch."""

from __future__ import annotations

import pytest
import torch
import tritune
import tritune._paged_op as op
from tritune.kernels import compare, kernel_hash
from tritune.kernels.paged_attention import make_paged_inputs, reference
from tritune.search_space import Hardware, PagedAttentionConfig


def inputs(dtype=torch.bfloat16, lens=(5, 40, 17), hq=8, hkv=2, d=32, bs=16, seed=0):
    return make_paged_inputs(len(lens), hq, hkv, d, torch.tensor(lens), block_size=bs, dtype=dtype,
                             device="cpu", seed=seed)


def call(x, **changes):
    args = {k: x[k] for k in ("q", "k_cache", "v_cache", "block_table", "seq_lens")}
    args.update(changes)
    return tritune.paged_attention(args["q"], args["k_cache"], args["v_cache"], args["block_table"],
                                   args["seq_lens"], scale=changes.get("scale"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_matches_reference(dtype):
    x = inputs(dtype)
    out = call(x)
    result = compare(out, reference(x), reference(x, dtype))
    assert result.ok, result.message
    scaled = call(x, scale=0.05)
    result = compare(scaled, reference({**x, "scale": 0.05}), reference({**x, "scale": 0.05}, dtype))
    assert result.ok, result.message


def bad_cases():
    x = inputs()
    table, lens = x["block_table"], x["seq_lens"]
    yield "seq_lens", dict(seq_lens=torch.tensor([5, 0, 17], dtype=torch.int32)), r"seq_lens\[1\] = 0"
    cap = table.shape[1] * 16
    yield "seq_lens", dict(seq_lens=torch.tensor([5, cap + 1, 17], dtype=torch.int32)), "beyond the block table's capacity"
    yield "seq_lens", dict(seq_lens=lens.long()), "seq_lens must be torch.int32"
    yield "seq_lens", dict(seq_lens=lens[:2]), r"seq_lens must be \[num_seqs=3\]"
    yield "block_table", dict(block_table=table.long()), "block_table must be torch.int32"
    bad = table.clone()
    bad[1, 2] = x["k_cache"].shape[0]
    yield "block_table", dict(block_table=bad), r"block_table\[1, 2\] = .* is not a block of the cache"
    neg = table.clone()
    neg[0, 0] = -1
    yield "block_table", dict(block_table=neg), r"block_table\[0, 0\] = -1"
    yield "q", dict(q=x["q"].float()), "q has dtype torch.float32"
    yield "k_cache", dict(k_cache=x["k_cache"].half(), v_cache=x["v_cache"].half()), "must equal q's"
    yield "heads", dict(q=torch.randn(3, 7, 32).bfloat16()), "not a multiple of the cache's 2 KV heads"
    yield "head_dim", dict(q=torch.randn(3, 8, 64).bfloat16()), "head_dim 32 does not match q's head_dim 64"
    yield "v_cache", dict(v_cache=x["v_cache"][:, :8]), "v_cache shape"
    yield "q", dict(q=x["q"][0]), r"q must be \[num_seqs, heads_q, head_dim\]"
    yield "k_cache", dict(k_cache=x["k_cache"][..., ::2], v_cache=x["v_cache"][..., ::2],
                          q=x["q"][..., :16]), "contiguous along head_dim"


@pytest.mark.parametrize("name,changes,message", list(bad_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_name_the_argument(name, changes, message):
    with pytest.raises(ValueError, match=message):
        call(inputs(), **changes)


def test_empty_batch():
    x = inputs()
    out = call(x, q=x["q"][:0], block_table=x["block_table"][:0], seq_lens=x["seq_lens"][:0])
    assert out.shape == (0, 8, 32)


def test_block_ids_beyond_a_sequence_are_not_checked():
    """Only the columns a sequence uses must hold valid ids (tables are padded with anything)."""
    x = inputs(lens=(5, 40, 17))
    table = x["block_table"].clone()
    table[0, 1:] = -7  # sequence 0 has 5 tokens: one page
    out = call(x, block_table=table)
    assert compare(out, reference(x), reference(x, torch.bfloat16)).ok


def test_value_checks_switch(monkeypatch):
    x = inputs()
    seen = []
    monkeypatch.setattr(op, "check_values", lambda *a: seen.append(1))
    try:
        op.set_validation(False)
        call(x)
        assert seen == []
        op.set_validation(None)  # default: on for CPU tensors
        call(x)
        assert seen == [1]
        monkeypatch.setenv("TRITUNE_VALIDATE", "0")
        call(x)
        assert seen == [1]
    finally:
        op.set_validation(None)


def test_opcheck():
    x = inputs(lens=(3, 20))
    args = (x["q"], x["k_cache"], x["v_cache"], x["block_table"], x["seq_lens"], 0.125)
    torch.library.opcheck(torch.ops.tritune.paged_attention.default, args)


def test_torch_compile_traces_through_the_fake():
    x = inputs(lens=(3, 20))

    def step(q, k_cache, v_cache, table, lens):
        return tritune.paged_attention(q * 1.0, k_cache, v_cache, table, lens) + 1

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    args = (x["q"], x["k_cache"], x["v_cache"], x["block_table"], x["seq_lens"])
    assert torch.allclose(compiled(*args).float(), step(*args).float())


def test_uses_the_runtime_tuned_config(tmp_path, monkeypatch):
    """A config tuned for this bucket in the database is the one launched."""
    from tritune import runtime
    from tritune.db import Trial, TuningDB

    x = inputs(lens=(5, 40, 17))
    spec = op.spec_of(x["q"], x["k_cache"], x["block_table"])
    tuned = PagedAttentionConfig(block_n=16, num_splits=2, group_block=4, num_warps=2, num_stages=1)
    db_path = tmp_path / "tuned.db"
    with TuningDB(db_path) as db:
        db.record_trial(Trial(hardware=Hardware.cpu_interpreter(), kernel="paged_attention",
                              kernel_hash=kernel_hash("paged_attention"), bucket=spec.bucket().key,
                              spec=spec.to_dict(), config=tuned.to_dict(), status="ok", backend="test",
                              real_timing=False, time_ms=1.0))
    launched = []
    import tritune.kernels.paged_attention as kernels

    real = kernels.paged_decode
    monkeypatch.setattr(kernels, "paged_decode", lambda *a, **k: launched.append(a[5]) or real(*a, **k))
    runtime.configure(db_path=db_path)
    try:
        out = call(x)
    finally:
        runtime.configure()
    assert launched == [tuned]
    assert compare(out, reference(x), reference(x, torch.bfloat16)).ok
