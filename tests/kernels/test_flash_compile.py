"""AOT compile tier of the FlashAttention template: sm_90 and sm_80 without a GPU.

The interpreter does not enforce GPU-only rules (``tl.dot`` shapes, shared memory per block),
so this is where they are checked: the default configs compile, fit, use wgmma on Hopper and
do not spill; and the search space's shared-memory estimate agrees with the compiler's figure,
so configs that would fail on the GPU are rejected before they reach it.
"""

from __future__ import annotations

import itertools
import random

import pytest
from tritune.kernels import CompileReport
from tritune.kernels._compile import SMEM_LIMIT
from tritune.kernels.flash_attention import FAMILY
from tritune.search_space import FlashAttentionConfig, FlashAttentionSpec, Hardware, space_for
from tritune.search_space.flash_attention import smem_bytes, uses_wgmma

H100 = Hardware.from_spec("H100", "3.9.0")
A100 = Hardware.from_spec("A100", "3.9.0")
TARGETS = {90: H100, 80: A100}

# The shapes models run: Llama-style D=128 causal GQA, D=64 MHA, D=256 (Gemma), D=80 (padded).
SPECS = {
    "d128": FlashAttentionSpec(1, 32, 8, 4096, 4096, 128, "bf16", True),
    "d64": FlashAttentionSpec(4, 32, 32, 2048, 2048, 64, "fp16", False),
    "d256": FlashAttentionSpec(1, 8, 4, 4096, 4096, 256, "bf16", True),
    "d80": FlashAttentionSpec(2, 16, 16, 1024, 1024, 80, "bf16", False),
}


def compile_report(spec: FlashAttentionSpec, config: FlashAttentionConfig, arch: int) -> CompileReport:
    report = FAMILY.compile(spec, config, arch)
    assert report.ok, f"{spec.describe()} {config.key()} sm_{arch}: {report.error}"
    return report


@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("name", ["d128", "d64"])
def test_default_config_compiles_fits_and_does_not_spill(name: str, arch: int) -> None:
    spec, hw = SPECS[name], TARGETS[arch]
    config = FAMILY.default_config(spec, hw)
    report = compile_report(spec, config, arch)
    assert report.fits and report.shared_bytes + report.static_shared_bytes <= hw.smem_per_block
    assert report.stack_bytes == 0, f"default {config.key()} spills {report.stack_bytes} B on sm_{arch}"
    assert report.uses_wgmma == (arch >= 90 and config.block_m >= 64)
    assert report.shared_bytes + report.static_shared_bytes <= smem_bytes(spec, config.to_dict(), arch)


@pytest.mark.parametrize("side", [False, True], ids=["installed", "triton-3.6"])
def test_an_additive_bias_compiles_for_hopper(side: bool) -> None:
    """T5's position bias: a pointer load per tile in the loop; the default config (whatever its
    descriptor knobs) compiles with it on sm_90, on this Triton and on the GPU image's."""
    from tritune.kernels import source_hash
    from tritune.kernels._compile import compile_for_target, side_python
    from tritune.kernels.flash_attention import ALIGNED_ARGS, _attn_fwd, biased_stages, compile_signature

    python = side_python() if side else None
    if side and python is None:
        pytest.skip("no Triton 3.6 side virtualenv (scripts/make_triton_venv.sh makes it; CI does)")
    spec = FlashAttentionSpec(4, 8, 8, 512, 512, 64, "bf16", False)  # a T5-base encoder layer
    config = FAMILY.default_config(spec, H100)
    sig, constexprs = compile_signature(spec, config, bias="fp32")
    assert constexprs["HAS_BIAS"] and not constexprs["USE_TMA"] and sig["BIAS"] == "*fp32"
    stages = biased_stages(config, 64, 2, 4, H100.smem_per_block)  # what launch() runs
    assert stages < config.num_stages  # the tuned 3 stages do not fit with a bias (246 KB)
    report = compile_for_target(_attn_fwd, sig, constexprs, arch=90, num_warps=config.num_warps,
                                num_stages=stages, source_hash=source_hash(FAMILY.module_name),
                                aligned=list(ALIGNED_ARGS), python=python)
    assert report.ok, f"triton {report.triton_version}: {report.error}"
    # the bias tile in registers costs some spill at 8 warps; it must still fit and use wgmma
    assert report.fits and report.uses_wgmma == (config.block_m >= 64)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("name", ["d256", "d80"])
def test_default_config_other_head_dims(name: str, arch: int) -> None:
    spec, hw = SPECS[name], TARGETS[arch]
    config = FAMILY.default_config(spec, hw)
    report = compile_report(spec, config, arch)
    assert report.fits and report.stack_bytes == 0


def test_tma_config_compiles_with_wgmma() -> None:
    spec = SPECS["d128"]
    config = FlashAttentionConfig(128, 64, 8, 3, True, True)
    assert space_for(spec, H100).is_valid(config.to_dict())
    report = compile_report(spec, config, 90)
    assert report.uses_wgmma and report.fits and report.stack_bytes == 0


def _accepted_and_rejected(spec: FlashAttentionSpec, hw: Hardware, n: int, seed: int):
    """``n`` valid configs and up to ``n`` configs rejected for shared memory alone."""
    space = space_for(spec, hw)
    rng = random.Random(seed)
    accepted = space.sample(rng, n)
    rejected = []
    combos = list(itertools.product(*(p.values for p in space.params)))
    rng.shuffle(combos)
    for combo in combos:
        values = dict(zip(space.names, combo, strict=True))
        reasons = space.validate(values)
        if reasons and all(r.startswith("shared_memory") for r in reasons):
            rejected.append(values)
            if len(rejected) == n:
                break
    return accepted, rejected


def _check_agreement(name: str, arch: int, n: int, seed: int) -> None:
    spec, hw = SPECS[name], TARGETS[arch]
    limit = SMEM_LIMIT[arch]
    assert limit == hw.smem_per_block
    accepted, rejected = _accepted_and_rejected(spec, hw, n, seed)
    assert accepted and rejected
    for values in accepted + rejected:
        config = FlashAttentionConfig.from_dict(values)
        report = compile_report(spec, config, arch)
        actual = report.shared_bytes + report.static_shared_bytes
        estimate = smem_bytes(spec, values, arch)
        where = f"{name} {config.key()} sm_{arch}: estimate {estimate}, compiler {actual}, limit {limit}"
        # The estimate never under-counts, so an accepted config always fits ...
        assert estimate >= actual, where
        if values in accepted:
            assert report.fits, where
        exact = uses_wgmma(spec, values, arch) and values["num_stages"] >= 2
        if exact:
            # ... it is exact for Hopper's pipelined wgmma kernels (the bulk of the sm_90
            # space), so there a rejected config really does not fit ...
            assert estimate - (1024 if values["use_tma"] else 0) <= actual, where
            assert report.fits or values in rejected, where
            if values in rejected:
                assert not report.fits, where
        else:
            # ... and elsewhere (mma.sync, one stage) it is an upper bound within 2x.
            assert estimate <= 2 * actual, where


@pytest.mark.parametrize("arch", [90, 80])
def test_smem_estimate_agrees_with_compiler(arch: int) -> None:
    _check_agreement("d128", arch, n=3, seed=arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("name", ["d64", "d256", "d80"])
def test_smem_estimate_agrees_with_compiler_more_shapes(name: str, arch: int) -> None:
    _check_agreement(name, arch, n=1, seed=arch + len(name))
