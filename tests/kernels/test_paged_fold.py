"""The decode kernel's folded combine: the last split of a row merges the partial results.

Interpreter numerics with the dtype rule (tensor-core and FMA groupings, mixed lengths with
empty splits, repeated launches on the same arrival counters), the space's rule, and the
compile tier on the installed Triton and triton 3.6 (side virtualenv; skipped without it).
"""

from __future__ import annotations

import pytest
import torch
import triton
from tritune.kernels import compare
from tritune.kernels._compile import side_python
from tritune.kernels.paged_attention import _COUNTERS, FAMILY, compile_decode, launch, reference
from tritune.search_space import Hardware, PagedAttentionConfig, PagedAttentionSpec, space_for

SPECS = [
    PagedAttentionSpec(3, 8, 2, 64, 300, 16, "bf16"),
    PagedAttentionSpec(2, 4, 4, 128, 200, 32, "fp16"),
    PagedAttentionSpec(4, 8, 2, 64, 150, 8, "fp16"),  # group 4 on FMA rows
]


@pytest.mark.parametrize(("spec", "config"), [
    (SPECS[0], PagedAttentionConfig(16, 4, 16, 4, 2, True)),
    (SPECS[0], PagedAttentionConfig(32, 8, 16, 2, 1, True)),
    (SPECS[1], PagedAttentionConfig(16, 8, 16, 4, 2, True)),
    (SPECS[2], PagedAttentionConfig(16, 4, 4, 4, 2, True)),
], ids=["dot-4", "dot-8", "mha", "fma"])
def test_folded_combine_matches_the_reference(spec: PagedAttentionSpec, config: PagedAttentionConfig) -> None:
    assert space_for(spec, Hardware.cpu_interpreter()).is_valid(config.to_dict())
    inputs = FAMILY.make_inputs(spec, "cpu", 5, mixed=True)  # a length-1 sequence: empty splits
    ref, base = reference(inputs, torch.float32), reference(inputs, inputs["q"].dtype)
    for _ in range(2):  # the second launch runs on the counters the first one reset
        out = torch.full_like(inputs["q"], float("nan"))
        launch(inputs, config, out=out)
        result = compare(out, ref, base)
        assert result.ok, result.message
    assert int(_COUNTERS["cpu"].abs().sum()) == 0


def test_fold_needs_splits() -> None:
    spec = SPECS[0]
    reasons = space_for(spec, Hardware.from_spec("H100")).validate(PagedAttentionConfig(16, 1, 16, 4, 2, True).to_dict())
    assert any(r.startswith("fold_combine") for r in reasons), reasons


def test_old_records_read_as_unfolded() -> None:
    cfg = PagedAttentionConfig.from_dict({"block_n": 16, "num_splits": 4, "group_block": 16, "num_warps": 4, "num_stages": 2})
    assert cfg.fold_combine is False


SIDE = side_python()


@pytest.mark.parametrize("python", [
    pytest.param(None, id=f"triton-{triton.__version__}"),
    pytest.param(str(SIDE) if SIDE else None, id="triton-3.6",
                 marks=pytest.mark.skipif(SIDE is None, reason="no side virtualenv with triton 3.6 "
                                          "(make it with scripts/make_triton_venv.sh)")),
])
@pytest.mark.parametrize("arch", [90, 80])
def test_folded_combine_compiles(arch: int, python: str | None) -> None:
    spec = PagedAttentionSpec(1, 32, 8, 128, 4096, 16, "bf16")
    folded = PagedAttentionConfig(64, 32, 16, 4, 2, True)
    report = compile_decode(spec, folded, arch, python=python)
    assert report.ok and report.fits and report.stack_bytes == 0, report


def test_paged_bench_times_the_folded_variant(tmp_path) -> None:
    """paged_bench --fold (default): a split config is also timed folded, as 'tritune_fold'."""
    import json

    from tritune.bench import paged_bench

    out = tmp_path / "r.json"
    assert paged_bench.main(["--dry", "--batches", "1", "--contexts", "100", "--heads", "4/2", "--backends", "tritune",
                             "--config", "block_n=16,num_splits=4,group_block=16,num_warps=4,num_stages=2",
                             "--json", str(out), "--markdown", str(tmp_path / "r.md")]) == 0
    (point,) = json.loads(out.read_text())["points"]
    assert set(point["us"]) == {"tritune", "tritune_fold"} and point["config"]["fold_combine"] is False
    assert point["config_rule"] == "forced" and "folded graph us" in (tmp_path / "r.md").read_text()
