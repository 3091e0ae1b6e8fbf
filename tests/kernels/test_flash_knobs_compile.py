"""AOT compile tier of the FlashAttention knobs past stock Triton, on two Tritons.

Every test runs with the installed Triton and with triton 3.6 (the GPU image's) from the side
virtualenv that ``scripts/make_triton_venv.sh`` makes (CI makes it; without it those cases skip).
What each knob is for has to show in the compiler's output:

- ``warp_specialize``: the loop splits into worker partitions (12 warps run for 4 asked), and
  ``setmaxnreg`` hands registers from the producer to the consumer warpgroups;
- ``exp2_poly``: fewer ``ex2.approx`` (special-function unit) per tile, more FMAs;
- ``persistent`` and ``maxnreg`` compile, fit and (the cap) bind; a cap that spills is the GPU
  backend's compile stage's to reject (the space rejects only certain spills).

And the search space's rules for these knobs agree with what the compiler does on a sample of
the space for sm_90 and sm_80: accepted configs compile, fit and show their knob's effect;
rejected ones fail to compile, or compile into a kernel where the knob does nothing or spills.
"""

from __future__ import annotations

import itertools
import random

import pytest
import triton
from tritune.kernels import CompileReport
from tritune.kernels._compile import _side, side_python
from tritune.kernels.flash_attention import FAMILY
from tritune.search_space import FlashAttentionConfig, FlashAttentionSpec, Hardware, space_for
from tritune.search_space.flash_attention import LATER_KNOBS, live_fp32_per_thread
from tritune.tuner._backend import Status
from tritune.tuner._tasks import compile_status

SIDE = side_python()
TRITONS = [
    pytest.param(None, id=f"triton-{triton.__version__}"),
    pytest.param(str(SIDE) if SIDE else None, id="triton-3.6",
                 marks=pytest.mark.skipif(SIDE is None, reason="no side virtualenv with triton 3.6 "
                                          "(make it with scripts/make_triton_venv.sh)")),
]
DEVICES = {90: "H100", 80: "A100"}

D128_CAUSAL = FlashAttentionSpec(1, 32, 8, 4096, 4096, 128, "bf16", True)
D64 = FlashAttentionSpec(4, 32, 32, 4096, 4096, 64, "bf16", False)
WS = FlashAttentionConfig(128, 64, 4, 3, False, True, warp_specialize=True)


def version_of(python: str | None) -> str:
    return _side(python).version if python else triton.__version__


def compiled(spec: FlashAttentionSpec, config: FlashAttentionConfig, arch: int, python: str | None) -> CompileReport:
    report = FAMILY.compile(spec, config, arch, python=python)
    if python:
        assert report.triton_version.startswith("3.6"), report
    return report


@pytest.mark.parametrize("python", TRITONS)
def test_warp_specialization_partitions_and_hands_off_registers(python: str | None) -> None:
    ws = compiled(D128_CAUSAL, WS, 90, python)
    plain = compiled(D128_CAUSAL, WS.replace(warp_specialize=False), 90, python)
    assert ws.ok and ws.fits and ws.stack_bytes == 0, ws
    assert ws.ws_partitions == 2 and ws.total_warps == 12 and ws.setmaxnreg > 0, ws
    assert ws.max_setmaxnreg > ws.registers  # consumers grow past the launch's per-thread share
    assert plain.ok and plain.ws_partitions == 0 and plain.setmaxnreg == 0 and plain.total_warps == 4, plain
    assert space_for(D128_CAUSAL, Hardware.from_spec("H100", version_of(python))).is_valid(WS.to_dict())


@pytest.mark.parametrize("python", TRITONS)
def test_exp2_poly_moves_exponentials_off_the_special_function_unit(python: str | None) -> None:
    """D=64, the exponential-bound case: ex2 per tile halve at 50%, drop a quarter at 25%."""
    base = FlashAttentionConfig(128, 128, 8, 3, True, False)
    reports = {p: compiled(D64, base.replace(exp2_poly=p), 90, python) for p in (0, 25, 50)}
    for p, r in reports.items():
        assert r.ok and r.fits and r.stack_bytes == 0, (p, r)
    tile_ex2 = 128 * 128 // (32 * base.num_warps)  # score elements per thread per tile
    assert reports[0].ex2 >= tile_ex2
    assert reports[50].ex2 <= reports[0].ex2 - tile_ex2 // 2 + 4
    assert reports[0].ex2 > reports[25].ex2 > reports[50].ex2
    assert reports[50].fma > reports[25].fma > reports[0].fma
    # No layout round trip through shared memory for the split tile.
    assert reports[50].shared_bytes == reports[0].shared_bytes


@pytest.mark.parametrize("python", TRITONS)
def test_persistent_and_maxnreg_compile(python: str | None) -> None:
    spec = D64
    persistent = compiled(spec, FlashAttentionConfig(128, 128, 4, 3, False, True, warp_specialize=True, persistent=1), 90, python)
    assert persistent.ok and persistent.fits and persistent.ws_partitions == 2, persistent
    capped = compiled(spec, FlashAttentionConfig(64, 64, 8, 2, True, False, maxnreg=128), 90, python)
    assert capped.ok and capped.registers <= 128 and capped.stack_bytes == 0, capped


KNOB_RULES = ("warp_specialize", "maxnreg", "exp2_poly")


def _sample(space, rng: random.Random, n: int) -> tuple[list[dict], list[tuple[dict, str]]]:
    """``n`` accepted configs with a knob on, and up to ``n`` rejected by a knob rule alone."""
    accepted: list[dict] = []
    rejected: list[tuple[dict, str]] = []
    combos = list(itertools.product(*(p.values for p in space.params)))
    rng.shuffle(combos)
    for combo in combos:
        values = dict(zip(space.names, combo, strict=True))
        if all(values[k] == v for k, v in LATER_KNOBS.items()):
            continue
        reasons = space.validate(values)
        if not reasons and len(accepted) < n:
            accepted.append(values)
        elif reasons and len(rejected) < n and all(r.startswith(KNOB_RULES) for r in reasons):
            rejected.append((values, reasons[0]))
        if len(accepted) == n and len(rejected) == n:
            break
    return accepted, rejected


def _check_agreement(spec: FlashAttentionSpec, arch: int, python: str | None, n: int, seed: int) -> None:
    hw = Hardware.from_spec(DEVICES[arch], version_of(python))
    space = space_for(spec, hw)
    accepted, rejected = _sample(space, random.Random(seed), n)
    assert accepted
    for values in accepted:
        config = FlashAttentionConfig.from_dict(values)
        r = compiled(spec, config, arch, python)
        where = f"sm_{arch} triton {hw.triton_version} {config.key()}: {r}"
        assert r.ok and r.fits, where
        if config.warp_specialize:
            assert r.ws_partitions >= 2 and r.setmaxnreg > 0, where
        if config.maxnreg:  # binds, and a spill is the compile stage's to reject (free, before measuring)
            assert r.registers <= config.maxnreg, where
            if r.stack_bytes:
                assert compile_status(r)[0] is Status.OUT_OF_RESOURCES, where
    for values, reason in rejected:
        config = FlashAttentionConfig.from_dict(values)
        r = compiled(spec, config, arch, python)
        where = f"sm_{arch} triton {hw.triton_version} {config.key()} ({reason}): {r}"
        if reason.startswith("warp_specialize"):
            if "maxnreg" in reason:  # the cap takes over the pass's register hand-off
                uncapped = compiled(spec, config.replace(maxnreg=0), arch, python)
                assert not r.ok or r.setmaxnreg < uncapped.setmaxnreg, where
            else:  # fails, or compiles into a kernel without partitions (the knob does nothing)
                assert not r.ok or r.ws_partitions == 0, where
        elif reason.startswith("maxnreg"):  # a certain spill: the capped kernel spills
            assert not r.ok or r.stack_bytes > 0, where


@pytest.mark.parametrize("python", TRITONS)
@pytest.mark.parametrize("arch", [90, 80])
def test_knob_rules_agree_with_the_compiler(arch: int, python: str | None) -> None:
    _check_agreement(D128_CAUSAL, arch, python, n=2, seed=arch)


@pytest.mark.slow
@pytest.mark.parametrize("python", TRITONS)
@pytest.mark.parametrize("arch", [90, 80])
def test_knob_rules_agree_with_the_compiler_larger_sample(arch: int, python: str | None) -> None:
    _check_agreement(D64, arch, python, n=5, seed=7 + arch)
    _check_agreement(D128_CAUSAL.__class__(**{**D128_CAUSAL.to_dict(), "causal": False}), arch, python, n=3, seed=arch)


def test_maxnreg_rule_rejects_only_below_the_live_tile() -> None:
    # The rule's bound is the accumulator + score tile per thread (+ loop state): 64x64 D64 on 8
    # warps keeps 32 fp32 values live, far under a 128 cap; 128x128 on 4 warps keeps 256.
    hw = Hardware.from_spec("A100", triton.__version__)
    space = space_for(D64, hw)
    small = FlashAttentionConfig(64, 64, 8, 2, True, False, maxnreg=128).to_dict()
    big = FlashAttentionConfig(128, 128, 4, 2, True, False, maxnreg=128).to_dict()
    assert live_fp32_per_thread(D64, small) == (64 * 64 + 64 * 64) // 256
    assert not [r for r in space.validate(small) if r.startswith("maxnreg")]
    assert [r for r in space.validate(big) if r.startswith("maxnreg")]


@pytest.mark.parametrize("python", TRITONS)
def test_compile_stage_rejects_a_cap_that_spills(python: str | None) -> None:
    """What the space leaves to the compiler: a valid-looking cap that spills (sm_80, causal
    D=128, 64x32 tiles on 8 warps with exp2_poly: 194 registers uncapped, 112 B of stack at the
    cap) is out of resources at the GPU backend's compile stage; a cap the tile fits under (32x16
    on 4 warps, persistent: 128 uncapped) is not."""
    spec = D128_CAUSAL
    hw = Hardware.from_spec("A100", version_of(python))
    spilling = FlashAttentionConfig(64, 32, 8, 3, True, False, exp2_poly=50, maxnreg=128)
    fitting = FlashAttentionConfig(32, 16, 4, 2, True, False, persistent=2, maxnreg=128)
    for config in (spilling, fitting):
        assert space_for(spec, hw).is_valid(config.to_dict()), config
    r = compiled(spec, spilling, 80, python)
    assert r.ok and r.stack_bytes > 0, r
    status, reason = compile_status(r)
    assert status is Status.OUT_OF_RESOURCES and "maxnreg=128 spills" in reason, reason
    ok = compiled(spec, fitting, 80, python)
    assert ok.ok and ok.stack_bytes == 0 and compile_status(ok) is None, ok
