"""The GPU suite's dry mode runs every part on CPU, so the suite cannot rot between GPU loans."""

import json
import tarfile

import pytest
from tritune.bench import gpu_suite
from tritune.bench._suite_parts import promote_builtin
from tritune.kernels import kernel_hash
from tritune.search_space import FlashAttentionSpec, Hardware, Landscape, write_landscape


@pytest.mark.slow
def test_dry_run_covers_every_part_and_resumes(tmp_path):
    out = tmp_path / "suite"
    summary = gpu_suite.run_suite(out, budget_s=600, dry=True, log=lambda m: None)
    assert set(summary) == set(gpu_suite.PARTS)
    for part in gpu_suite.PARTS:
        data = json.loads((out / f"{part}.json").read_text())
        assert data["dry"] is True and data["card"] == "cpu-interpreter"
        assert (out / f"{part}.md").read_text().startswith(f"# {part}:")
    correctness = json.loads((out / "correctness.json").read_text())
    assert correctness["complete"] and correctness["checked"] >= 4 and correctness["failed"] == 0
    lands = sorted((out / "landscapes").glob("*.json.gz"))
    assert len(lands) == 2
    for path in lands:
        ls = Landscape.load(path)
        assert ls.raw_meta["tritune"]["real_timing"] is False  # CPU times are marked as such
        assert all(e.status == "ok" for e in ls)
    assert "SUMMARY.md" in {p.name for p in out.iterdir()}
    # a second call finds every part done and redoes nothing
    again = gpu_suite.run_suite(out, budget_s=600, dry=True, log=lambda m: None)
    assert all(r.get("complete") for r in again.values() if r["part"] != "bench")
    # one archive for the device's few-files limit
    archive = gpu_suite.pack(out, tmp_path / "suite.tar.gz")
    with tarfile.open(archive) as tar:
        assert "suite/landscapes.json" in tar.getnames()
    # interpreter landscapes never reach the built-in table
    table = tmp_path / "builtin.json"
    assert promote_builtin(out, table) == 0


def test_promote_takes_the_best_gpu_config(tmp_path):
    hw = Hardware.from_spec("H100", "3.6.0")
    spec = FlashAttentionSpec(1, 32, 8, 4096, 4096, 128, "bf16", True)
    write_landscape(tmp_path / "runs" / "fa.json.gz", kernel="flash_attention", kernel_name="x", spec=spec.to_dict(),
                    hardware=hw, params={"block_m": (64, 128), "block_n": (64,)},
                    results=[({"block_m": 64, "block_n": 64}, 2.0, None, {}),
                             ({"block_m": 128, "block_n": 64}, 1.5, None, {})],
                    extra={"kernel_hash": kernel_hash("flash_attention"), "real_timing": True, "date": "2026-11-25"})
    table = tmp_path / "builtin.json"
    assert promote_builtin(tmp_path / "runs", table) == 1
    [row] = json.loads(table.read_text())["rows"]
    assert row["config"] == {"block_m": 128, "block_n": 64} and row["time_ms"] == 1.5
    assert row["bucket"] == spec.bucket().key and row["hardware"] == hw.to_dict()
    assert promote_builtin(tmp_path / "runs", table) == 0  # idempotent
