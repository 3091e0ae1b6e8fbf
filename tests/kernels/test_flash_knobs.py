"""Numerics of the FlashAttention knobs past stock Triton, under the interpreter.

``warp_specialize`` (device-side descriptors), ``exp2_poly`` (exponentials by a cubic on the
FMA pipes), ``persistent`` (a grid of a few programs per SM walking the tiles in a
causal-balanced order) and ``maxnreg`` each get ragged causal and non-causal GQA shapes in
fp16 and bf16, checked with the dtype rule (at most 2x PyTorch's own error in that dtype). The
grid of test_flash_attention.py also draws these knobs for its sampled configs.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl
from tritune.kernels import compare
from tritune.kernels.flash_attention import FAMILY, INTERPRETER_SMS, _exp2_fma, baseline, launch, reference
from tritune.search_space import FlashAttentionConfig, FlashAttentionSpec, Hardware, space_for

HW = Hardware.cpu_interpreter()


@triton.jit
def _exp2_probe(x_ptr, out_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(out_ptr + offs, _exp2_fma(tl.load(x_ptr + offs)))


def test_exp2_cubic_is_accurate_and_exact_at_the_ends() -> None:
    """Max relative error ~1e-4 (under half an fp16 ulp) over the whole range softmax uses,
    exactly 1 at 0 and exactly 0 for -inf and anything below -127 (masked scores)."""
    n = 4096
    x = torch.cat([-torch.rand(n - 8, dtype=torch.float64) * 120,
                   torch.tensor([0.0, -0.5, 0.5 - 1, -1.0, -127.0, -200.0, -1e30, float("-inf")], dtype=torch.float64)])
    out = torch.empty(n, dtype=torch.float32)
    _exp2_probe[(1,)](x.float(), out, N=n)
    exact = torch.exp2(x.float().double())
    normal = x >= -120
    rel = ((out.double() - exact) / exact)[normal].abs().max().item()
    assert rel < 1.1e-4, rel
    assert out[n - 8].item() == 1.0
    assert (out[n - 4:] == 0).all() and not torch.signbit(out[n - 4:]).any()


def check(spec: FlashAttentionSpec, config: FlashAttentionConfig, seed: int = 0) -> torch.Tensor:
    assert space_for(spec, HW).is_valid(config.to_dict()), space_for(spec, HW).validate(config.to_dict())
    inputs = FAMILY.make_inputs(spec, "cpu", seed)
    out = torch.full_like(inputs["q"], float("nan"))  # poisoned: a tile nobody writes fails
    launch(inputs, config, out=out)
    result = compare(out, reference(inputs), baseline(inputs))
    assert result.ok, f"{spec.describe()} {config.key()}: {result.message}"
    return out


SHAPES = [
    FlashAttentionSpec(2, 4, 2, 77, 93, 64, "bf16", True),
    FlashAttentionSpec(1, 4, 1, 130, 130, 128, "fp16", True),
    FlashAttentionSpec(2, 2, 2, 91, 150, 64, "fp16", False),
    FlashAttentionSpec(1, 8, 2, 65, 40, 80, "bf16", False),
]
IDS = [s.describe() for s in SHAPES]
BASE = FlashAttentionConfig(64, 32, 4, 2, False, True)


@pytest.mark.parametrize("spec", SHAPES, ids=IDS)
@pytest.mark.parametrize("percent", [25, 50])
def test_exp2_poly(spec: FlashAttentionSpec, percent: int) -> None:
    check(spec, BASE.replace(exp2_poly=percent, use_tma=False, split_diag=True))


def test_exp2_poly_changes_the_math_within_tolerance() -> None:
    """The knob really computes different exponentials (outputs differ in the last bits) and
    both stay within the fp16 rule; 100% emulation (outside the tuned domain) too."""
    spec = SHAPES[2]
    inputs = FAMILY.make_inputs(spec, "cpu", 3)
    ref, base = reference(inputs), baseline(inputs)
    outs = {}
    for percent in (0, 50, 100):
        out = launch(inputs, BASE.replace(exp2_poly=percent))
        assert compare(out, ref, base).ok, percent
        outs[percent] = out
    assert not torch.equal(outs[0], outs[50]) and not torch.equal(outs[50], outs[100])


@pytest.mark.parametrize("spec", SHAPES, ids=IDS)
@pytest.mark.parametrize("per_sm", [1, 2])
def test_persistent(spec: FlashAttentionSpec, per_sm: int) -> None:
    """Programs walk several tiles and a partial last round (the interpreter has 3 'SMs')."""
    config = BASE.replace(persistent=per_sm, block_m=32, split_diag=per_sm == 1)
    tiles = spec.batch * spec.heads_q * math.ceil(spec.seq_q / config.block_m)
    assert tiles > per_sm * INTERPRETER_SMS
    check(spec, config)


@pytest.mark.parametrize("spec", SHAPES, ids=IDS)
def test_warp_specialize(spec: FlashAttentionSpec) -> None:
    """Device-side per-head descriptors: rows past S read 0 and are not written."""
    check(spec, BASE.replace(warp_specialize=True))


def test_warp_specialize_with_the_other_knobs() -> None:
    spec = SHAPES[0]
    check(spec, BASE.replace(warp_specialize=True, persistent=1, exp2_poly=50))
    check(SHAPES[2], BASE.replace(warp_specialize=True, persistent=2, exp2_poly=25, block_m=128))


def test_warp_specialize_falls_back_where_descriptors_cannot_go() -> None:
    """A head-dim offset breaks TMA's 16-byte alignment: the launch takes the pointer path."""
    spec = SHAPES[2]
    inputs = FAMILY.make_inputs(spec, "cpu", 1)
    for name in ("q", "k", "v"):
        t = inputs[name]
        big = torch.zeros(*t.shape[:3], t.shape[3] + 1, dtype=t.dtype)
        big[..., 1:] = t
        inputs[name] = big[..., 1:]
    out = launch(inputs, BASE.replace(warp_specialize=True))
    assert compare(out, reference(inputs), baseline(inputs)).ok


def test_maxnreg_runs() -> None:
    """The cap is a launch option the interpreter ignores; the config must still run."""
    check(SHAPES[2], FlashAttentionConfig(32, 16, 4, 2, True, False, maxnreg=128))


def test_old_records_read_as_knobs_off() -> None:
    old = {"block_m": 64, "block_n": 32, "num_warps": 4, "num_stages": 2, "split_diag": True, "use_tma": False}
    cfg = FlashAttentionConfig.from_dict(old)
    assert (cfg.warp_specialize, cfg.exp2_poly, cfg.persistent, cfg.maxnreg) == (False, 0, 0, 0)
    with pytest.raises(ValueError, match="missing"):
        FlashAttentionConfig.from_dict({"block_m": 64})
