"""The public ``flash_attention`` op: argument errors, results, torch.library, runtime configs."""

from __future__ import annotations

import pytest
import torch
import tritune
from tritune import runtime
from tritune._flash_op import flash_attention
from tritune.db import Trial, TuningDB
from tritune.kernels import compare, kernel_hash
from tritune.kernels import flash_attention as fa
from tritune.search_space import FlashAttentionSpec, Hardware, space_for


def qkv(b=2, hq=4, hkv=2, sq=19, skv=23, d=64, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, sq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, skv, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, skv, d, generator=g).to(dtype)
    return q, k, v


def check_close(out, q, k, v, causal, scale=None, kv_window=None, bias=None):
    inputs = {"q": q, "k": k, "v": v, "causal": causal, "scale": scale, "kv_window": kv_window, "bias": bias}
    result = compare(out, fa.reference(inputs), fa.baseline(inputs))
    assert result.ok, result.message


@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference_gqa_and_bshd_views(causal):
    q, k, v = qkv(sq=37, skv=21, dtype=torch.bfloat16)
    # [B, S, H, D] storage seen as [B, H, S, D], as transformers hands it over
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    out = flash_attention(q, k, v, causal=causal)
    assert out.shape == q.shape and out.dtype == q.dtype
    check_close(out, q, k, v, causal)


def _value_dim_reference(q, k, v, causal, dtype):
    import torch.nn.functional as F

    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    mask = None
    if causal:  # bottom-right aligned, as the kernel
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril(k.shape[2] - q.shape[2])
    return F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=mask)


@pytest.mark.parametrize(("qk_dim", "value_dim", "causal"), [(24, 16, True), (40, 64, False), (192 // 4, 32, False)])
def test_value_head_dim_may_differ(qk_dim, value_dim, causal):
    # latent attention (DeepSeek V2/V3: q/k 192, v 128) and the reverse; the default scale is q's
    q, k, _ = qkv(sq=21, skv=27, d=qk_dim, dtype=torch.bfloat16, seed=3)
    v = torch.randn(2, 2, 27, value_dim, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    out = flash_attention(q, k, v, causal=causal)
    assert out.shape == (2, 4, 21, value_dim) and out.is_contiguous()
    result = compare(out, _value_dim_reference(q, k, v, causal, torch.float64),
                     _value_dim_reference(q, k, v, causal, torch.bfloat16))
    assert result.ok, result.message


def test_public_entry_points_are_the_same_op():
    # tritune.ops also re-exports the paged op, which another branch provides
    pytest.importorskip("tritune._paged_op")
    assert tritune.flash_attention is flash_attention
    from tritune import ops

    assert ops.flash_attention is flash_attention


def test_scale_and_lse():
    q, k, v = qkv(sq=30, skv=40, d=32, dtype=torch.float32)
    out, lse = flash_attention(q, k, v, causal=True, scale=0.2, return_lse=True)
    check_close(out, q, k, v, True, scale=0.2)
    _, ref_lse = fa.attention_math(q, k, v, causal=True, scale=0.2, dtype=torch.float64)
    assert lse.shape == (2, 4, 30) and lse.dtype == torch.float32
    assert torch.allclose(lse, ref_lse.float(), atol=1e-4)


def test_empty_query_returns_empty():
    q, k, v = qkv(sq=0)
    assert flash_attention(q, k, v).shape == (2, 4, 0, 64)


def _bad(**changes):
    q, k, v = qkv()
    args = {"q": q, "k": k, "v": v}
    args.update(changes)
    return args


BAD_INPUTS = [
    ("batch", lambda: _bad(k=torch.randn(3, 2, 23, 64).half(), v=torch.randn(3, 2, 23, 64).half()), "k.shape[0]"),
    ("head_dim", lambda: _bad(k=torch.randn(2, 2, 23, 32).half(), v=torch.randn(2, 2, 23, 32).half()), "k.shape[3]"),
    ("v_shape", lambda: _bad(v=torch.randn(2, 2, 24, 64).half()), "v.shape"),
    ("heads_multiple", lambda: _bad(k=torch.randn(2, 3, 23, 64).half(), v=torch.randn(2, 3, 23, 64).half()), "heads_q"),
    ("mixed_dtype", lambda: _bad(v=torch.randn(2, 2, 23, 64).bfloat16()), "v.dtype"),
    ("unsupported_dtype", lambda: _bad(q=torch.randn(2, 4, 19, 64).double()), "q.dtype"),
    ("head_dim_too_big", lambda: _bad(q=torch.randn(1, 1, 4, 512).half(), k=torch.randn(1, 1, 4, 512).half(),
                                      v=torch.randn(1, 1, 4, 512).half()), "head_dim=512"),
    ("rank", lambda: _bad(q=torch.randn(2, 19, 64).half()), "q must be 4-D"),
    ("device", lambda: _bad(k=torch.randn(2, 2, 23, 64, device="meta").half()), "k is on meta"),
    ("not_tensor", lambda: _bad(v=[1, 2]), "v must be a torch.Tensor"),
]


@pytest.mark.parametrize("name,make,needle", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_the_argument(name, make, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        flash_attention(**make())


def test_bad_scale_and_window():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="scale"):
        flash_attention(q, k, v, scale=float("nan"))
    with pytest.raises(ValueError, match="kv_window"):
        flash_attention(q, k, v, kv_window=torch.zeros(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="kv_window.dtype"):
        flash_attention(q, k, v, kv_window=torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"bias.shape=\(1, 4, 19\) must be 4-D"):
        flash_attention(q, k, v, bias=torch.zeros(1, 4, 19))
    with pytest.raises(ValueError, match=r"broadcastable to \[batch, heads_q, seq_q, seq_kv\] = \[2, 4, 19, 23\]"):
        flash_attention(q, k, v, bias=torch.zeros(1, 4, 19, 19))
    with pytest.raises(ValueError, match="bias.dtype"):
        flash_attention(q, k, v, bias=torch.zeros(1, 4, 19, 23, dtype=torch.float64))


def test_bias_through_the_op():
    q, k, v = qkv(b=2, sq=7, skv=29, d=32)
    bias = torch.randn(1, 4, 7, 29, generator=torch.Generator().manual_seed(4)) * 4  # T5's [1, H, q, k]
    window = torch.tensor([[0, 29, 22], [5, 29, 22]], dtype=torch.int32)
    out = flash_attention(q, k, v, causal=True, kv_window=window, bias=bias)
    check_close(out, q, k, v, True, kv_window=window, bias=bias)
    inputs = {"q": q, "k": k, "v": v, "causal": True, "kv_window": window}
    assert not compare(out, fa.reference(inputs), fa.baseline(inputs)).ok  # the bias mattered


def test_kv_window_through_the_op():
    q, k, v = qkv(b=3, sq=5, skv=40, d=32)
    window = torch.tensor([[0, 40, 35], [10, 40, 35], [3, 20, 15]], dtype=torch.int32)
    out = flash_attention(q, k, v, causal=True, kv_window=window)
    check_close(out, q, k, v, True, kv_window=window)


@pytest.mark.parametrize("return_lse", [False, True])
def test_opcheck(return_lse):
    q, k, v = qkv(b=1, hq=2, hkv=1, sq=9, skv=13, d=32)
    window = torch.tensor([[2, 13, 4]], dtype=torch.int32)
    bias = torch.randn(1, 2, 9, 13)
    for args in ((q, k, v, None, True, 0.17, return_lse), (q, k, v, window, False, 0.17, return_lse),
                 (q, k, v, window, True, 0.17, return_lse, bias)):
        torch.library.opcheck(torch.ops.tritune.flash_attention.default, args)


@pytest.mark.slow
def test_torch_compile_traces_the_op():
    q, k, v = qkv(b=1, hq=2, hkv=1, sq=17, skv=17, d=32)

    def block(q, k, v):
        return flash_attention(q * 1.5, k, v, causal=True).float().sum(dim=-1)

    compiled = torch.compile(block, fullgraph=True, backend="inductor")
    assert torch.allclose(compiled(q, k, v), block(q, k, v))


@pytest.fixture
def tuned_db(tmp_path):
    path = tmp_path / "tuned.db"
    runtime.configure(db_path=path, use_builtin=False)
    yield path
    runtime.configure()


def test_op_launches_the_tuned_config(tuned_db, monkeypatch):
    q, k, v = qkv(b=1, hq=4, hkv=1, sq=100, skv=100, d=64)
    spec = FlashAttentionSpec(1, 4, 1, 100, 100, 64, "fp16", True)
    hw = Hardware.cpu_interpreter()
    space = space_for(spec.representative(), hw)
    tuned = next(c for c in space.enumerate() if c != space.default() and c["block_m"] == 32 and not c["split_diag"])
    with TuningDB(tuned_db) as db:
        db.record_trial(Trial(hardware=hw, kernel="flash_attention", kernel_hash=kernel_hash("flash_attention"),
                              bucket=spec.bucket().key, spec=spec.representative().to_dict(), config=tuned,
                              status="ok", backend="interpreter", real_timing=False, time_ms=1.0))
    seen = []
    real = fa.launch

    def spy(inputs, config, **kwargs):
        seen.append(config)
        return real(inputs, config, **kwargs)

    monkeypatch.setattr(fa, "launch", spy)
    out = flash_attention(q, k, v, causal=True)
    assert [c.to_dict() for c in seen] == [tuned]
    check_close(out, q, k, v, True)
    # an untuned bucket (other head count) falls back to the default config
    q2, k2, v2 = qkv(b=1, hq=2, hkv=1, sq=100, skv=100, d=64)
    flash_attention(q2, k2, v2, causal=True)
    spec2 = FlashAttentionSpec(1, 2, 1, 100, 100, 64, "fp16", True)
    assert seen[-1] == fa.FAMILY.default_config(spec2, hw)


def test_eager_fast_path_equals_the_operator():
    q, k, v = qkv(b=1, hq=2, hkv=1, sq=20, skv=20, d=32)
    direct = flash_attention(q, k, v, causal=True, scale=0.3)
    via_op, _ = torch.ops.tritune.flash_attention(q, k, v, None, True, 0.3, False)
    assert torch.equal(direct, via_op)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:  # a dispatch mode routes through the op's fake implementation
        fq, fk, fv = (mode.from_tensor(t) for t in (q, k, v))
        out = flash_attention(fq, fk, fv, causal=True)
    assert out.shape == q.shape and out.dtype == q.dtype


def test_inputs_that_require_grad_are_refused_under_grad_mode():
    # forward-only: a result silently cut out of the autograd graph would train wrong weights
    q, k, v = qkv(d=16)
    q.requires_grad_(True)
    with pytest.raises(ValueError, match="q requires grad: tritune.flash_attention is forward-only"):
        flash_attention(q, k, v)
    with torch.no_grad():
        check_close(flash_attention(q, k, v), q.detach(), k, v, False)

