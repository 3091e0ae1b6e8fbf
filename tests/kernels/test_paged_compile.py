"""AOT compile tier of the paged-attention template: sm_90 and sm_80 without a GPU.

What the interpreter cannot tell: that the configs compile for the GPU (tl.dot shapes), that the
search space's shared-memory estimate matches what the compiler allocates (so the space rejects
exactly the configs that would not launch), and that default configs do not spill registers.
"""

from __future__ import annotations

import random

import pytest
from tritune.kernels.paged_attention import FAMILY, compile_decode
from tritune.search_space import Hardware, PagedAttentionConfig, PagedAttentionSpec, space_for
from tritune.search_space.paged_attention import smem_bytes

ARCH_DEVICE = {90: "H100", 80: "A100"}

SPECS = [
    PagedAttentionSpec(num_seqs=8, heads_q=32, heads_kv=8, head_dim=128, context_len=4096, block_size=16, dtype="bf16"),
    PagedAttentionSpec(num_seqs=1, heads_q=32, heads_kv=32, head_dim=128, context_len=32768, block_size=16, dtype="fp16"),
    PagedAttentionSpec(num_seqs=64, heads_q=16, heads_kv=2, head_dim=64, context_len=512, block_size=32, dtype="bf16"),
    PagedAttentionSpec(num_seqs=4, heads_q=8, heads_kv=1, head_dim=256, context_len=2048, block_size=64, dtype="fp16"),
    PagedAttentionSpec(num_seqs=2, heads_q=64, heads_kv=2, head_dim=128, context_len=8192, block_size=8, dtype="bf16"),
]


def assert_estimate_agrees(spec, config, report):
    """Never below the compiler's figure (a config the space accepts must fit) and close above."""
    est = smem_bytes(spec, config.to_dict())
    assert report.shared_bytes <= est <= 1.25 * report.shared_bytes + 4096, (
        f"estimate {est} B vs compiler {report.shared_bytes} B for {config} on {spec.describe()}")


@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_default_config_compiles_without_spills(spec, arch):
    hw = Hardware.from_spec(ARCH_DEVICE[arch])
    config = FAMILY.default_config(spec, hw)
    assert not space_for(spec, hw).validate(config.to_dict())
    report = FAMILY.compile(spec, config, arch=arch)
    assert report.ok, report.error
    assert report.fits
    assert report.stack_bytes == 0, f"default config spills: {report}"
    assert_estimate_agrees(spec, config, report)
    if arch == 90:
        assert report.registers is not None and report.registers <= 255


@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 80])
def test_sampled_configs_compile_and_smem_estimate_agrees(arch):
    hw = Hardware.from_spec(ARCH_DEVICE[arch])
    rng = random.Random(arch)
    checked = 0
    for spec in SPECS[:3]:
        space = space_for(spec, hw)
        for values in space.sample(rng, 4):
            config = space.config(values)
            report = compile_decode(spec, config, arch)
            assert report.ok, (values, report.error)
            assert report.fits, (values, report)
            assert_estimate_agrees(spec, config, report)
            checked += 1
    assert checked >= 10


def test_fma_grouping_compiles_and_agrees():
    """group_block < 16 (no tensor cores) for a GQA-4 spec, both targets."""
    spec = SPECS[2].__class__(**{**SPECS[2].to_dict(), "heads_q": 8})  # G = 4
    config = PagedAttentionConfig(block_n=16, num_splits=2, group_block=4, num_warps=4, num_stages=2)
    assert not space_for(spec, Hardware.from_spec("H100")).validate(config.to_dict())
    for arch in (90, 80):
        report = compile_decode(spec, config, arch)
        assert report.ok and report.stack_bytes == 0, report
        assert_estimate_agrees(spec, config, report)


def test_shared_memory_rule_rejects_what_the_compiler_cannot_fit():
    """A config the space rejects for shared memory really is over the limit when compiled."""
    spec = SPECS[3]  # head_dim 256
    hw = Hardware.from_spec("A100")
    config = PagedAttentionConfig(block_n=256, num_splits=1, group_block=16, num_warps=8, num_stages=2)
    reasons = space_for(spec, hw).validate(config.to_dict())
    assert any(r.startswith("shared_memory") for r in reasons), reasons
    report = compile_decode(spec, config, 80)
    assert report.ok and not report.fits
    assert report.shared_bytes > hw.smem_per_block


def test_dot_shape_rule_is_what_the_compiler_enforces():
    """block_n=8 with tensor cores does not compile (tl.dot needs K >= 16; the interpreter does
    not enforce it): the space rejects it before any GPU sees it."""
    spec = SPECS[0]
    config = PagedAttentionConfig(block_n=8, num_splits=1, group_block=16, num_warps=4, num_stages=2)
    reasons = space_for(spec, Hardware.from_spec("H100")).validate(config.to_dict())
    assert any(r.startswith("dot_shapes") for r in reasons), reasons
    report = compile_decode(spec, config, 90)
    assert not report.ok and "K >= 16" in report.error
