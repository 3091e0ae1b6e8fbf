"""AOT compile tier of the varlen serving kernel: sm_90 and sm_80 without a GPU.

The interpreter enforces neither ``tl.dot`` shape rules nor shared memory or register limits,
so this is where the search space's rules are checked against the compiler: default configs
compile, fit and do not spill (wgmma on Hopper for 64+ row tiles); the shared-memory estimate
never under-states the compiler's figure; configs the space accepts do not spill; and an FP8
cache, which Triton cannot convert on sm_80, is rejected there by the space as by the compiler.
"""

from __future__ import annotations

import random

import pytest
from tritune.kernels import get_family
from tritune.search_space import Hardware, VarlenAttentionSpec, space_for
from tritune.search_space.varlen_attention import smem_bytes

FAMILY = get_family("varlen_attention")
TARGETS = {90: Hardware.from_spec("H100", "3.9.0"), 80: Hardware.from_spec("A100", "3.9.0")}

SPECS = {
    # Llama-3-8B serving step: 64 decode rows + one 512-token chunk, page 16
    "mixed": VarlenAttentionSpec(65, 576, 512, 8192, 32, 8, 128),
    # pure decode, batch 8, 4k context: split-KV
    "decode": VarlenAttentionSpec(8, 8, 1, 4096, 32, 8, 128),
    # speculative rows, FP8 cache (Hopper only)
    "spec_fp8": VarlenAttentionSpec(8, 32, 4, 4096, 32, 8, 128, kv_dtype="fp8"),
    # Gemma-2 style: D=256, window + softcap, plus sinks and ALiBi, fp16, page 64
    "features": VarlenAttentionSpec(4, 400, 200, 2048, 16, 8, 256, block_size=64, dtype="fp16", window_left=1024,
                                    softcap=True, sinks=True, alibi=True),
    # MHA, D=80 (padded to 128), packed K/V
    "packed_d80": VarlenAttentionSpec(6, 300, 100, 1000, 16, 16, 80, block_size=0),
}


def report(name, arch, config):
    r = FAMILY.compile(SPECS[name], config, arch)
    assert r.ok, f"{name} {config.key()} sm_{arch}: {r.error}"
    return r


@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("name", ["mixed", "decode"])
def test_default_config_compiles_fits_and_does_not_spill(name, arch):
    spec, hw = SPECS[name], TARGETS[arch]
    config = FAMILY.default_config(spec, hw)
    r = report(name, arch, config)
    assert r.fits and r.shared_bytes + r.static_shared_bytes <= hw.smem_per_block
    assert r.stack_bytes == 0, f"default {config.key()} spills {r.stack_bytes} B on sm_{arch}"
    assert r.uses_wgmma == (arch >= 90 and config.block_m >= 64 and config.num_warps >= 4)
    assert r.shared_bytes + r.static_shared_bytes <= smem_bytes(spec, config.to_dict(), arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("name", ["features", "packed_d80", "spec_fp8"])
def test_default_config_other_shapes(name, arch):
    spec, hw = SPECS[name], TARGETS[arch]
    space = space_for(spec, hw)
    if name == "spec_fp8" and arch == 80:
        # the compiler refuses e4m3 on sm_80, and the space says so before any compile
        r = FAMILY.compile(spec, FAMILY.default_config(spec, hw), arch)
        assert not r.ok and "fp8" in (r.error or "").lower()
        assert not space.enumerate(1) and any("fp8_cache" in x for x in space.validate(space.default()))
        return
    config = FAMILY.default_config(spec, hw)
    assert space.is_valid(config.to_dict())
    r = report(name, arch, config)
    assert r.fits and r.stack_bytes == 0
    assert r.shared_bytes + r.static_shared_bytes <= smem_bytes(spec, config.to_dict(), arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 80])
def test_space_rules_agree_with_the_compiler_on_a_sample(arch):
    """Accepted configs compile, fit and do not spill; the estimate is an upper bound."""
    hw = TARGETS[arch]
    rng = random.Random(arch)
    for name in ("mixed", "decode"):
        spec = SPECS[name]
        for values in space_for(spec, hw).sample(rng, 4):
            config = space_for(spec, hw).config(values)
            r = report(name, arch, config)
            total = r.shared_bytes + r.static_shared_bytes
            assert r.fits and total <= hw.smem_per_block, f"{config.key()}: {total} B"
            assert total <= smem_bytes(spec, values, arch), f"{config.key()}: estimate below the compiler's {total} B"
            assert r.stack_bytes == 0, f"{config.key()} spills {r.stack_bytes} B on sm_{arch}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixed", "decode", "spec_fp8", "features"])
def test_default_config_compiles_on_the_gpu_images_triton(name):
    """The GPU machine compiles with Triton 3.6: the defaults must compile there too (sm_90),
    through the side virtualenv of scripts/make_triton_venv.sh."""
    from tritune.kernels import source_hash
    from tritune.kernels._compile import compile_for_target, side_python
    from tritune.kernels.varlen_attention import _KERNEL_ARGS_ALIGNED, _varlen_fwd, compile_signature

    python = side_python()
    if python is None:
        pytest.skip("no Triton 3.6 side virtualenv (scripts/make_triton_venv.sh makes it; CI does)")
    spec = SPECS[name]
    config = FAMILY.default_config(spec, Hardware.from_spec("H100", "3.6.0"))
    sig, constexprs = compile_signature(spec, config)
    r = compile_for_target(_varlen_fwd, sig, constexprs, arch=90, num_warps=config.num_warps,
                           num_stages=config.num_stages, source_hash=source_hash(FAMILY.module_name),
                           aligned=list(_KERNEL_ARGS_ALIGNED), python=python)
    assert r.ok, f"triton {r.triton_version}: {r.error}"
    assert r.triton_version.startswith("3.6") and r.fits and r.stack_bytes == 0
    assert r.uses_wgmma == (config.block_m >= 64 and config.num_warps >= 4)


@pytest.mark.slow
def test_exp2_poly_moves_exponentials_off_the_sfu():
    """exp2_poly: fewer ex2.approx in the PTX as the share on the FMA pipes grows (sm_90)."""
    spec, hw = SPECS["mixed"], TARGETS[90]
    base = FAMILY.default_config(spec, hw)
    counts = {}
    for poly in (0, 50, 100):
        r = report("mixed", 90, base.replace(exp2_poly=poly))
        assert r.fits and r.stack_bytes == 0
        counts[poly] = (r.ex2, r.fma)
    assert counts[0][0] > counts[50][0] > counts[100][0], counts
    assert counts[100][1] > counts[0][1], counts
