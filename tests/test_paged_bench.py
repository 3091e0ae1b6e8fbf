"""The paged-attention benchmark's pipeline, in its tiny CPU mode (times mean nothing there)."""

from __future__ import annotations

import json

import pytest
from tritune.bench import paged_bench


def test_dry_run_writes_json_and_markdown(tmp_path, capsys):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    rc = paged_bench.main(["--dry", "--batches", "2", "--contexts", "33", "--heads", "4/2", "4/4",
                           "--json", str(out_json), "--markdown", str(out_md)])
    assert rc == 0
    result = json.loads(out_json.read_text())
    assert result["dry"] and result["copy_bandwidth_gbps"] > 0
    assert len(result["points"]) == 2 and not result["notes"]
    for p in result["points"]:
        assert set(p["us"]) == {"tritune", "sdpa_gather", "sdpa_contiguous"}  # all verified, all timed
        assert p["bytes"] == 2 * 2 * 33 * p["heads_kv"] * 32 * 2 + 2 * 2 * 4 * 32 * 2
        assert p["config_rule"] == "default" and p["config"]["num_splits"] >= 1
    assert "| 2 | 33 | 4/2 |" in out_md.read_text()
    assert "DRY RUN" in capsys.readouterr().out


def test_a_wrong_backend_is_not_timed(monkeypatch, tmp_path):
    monkeypatch.setattr(paged_bench, "_check", lambda fn, x: (False, "max error 1 > allowed 0.01"))
    out_json = tmp_path / "r.json"
    assert paged_bench.main(["--dry", "--batches", "1", "--contexts", "8", "--heads", "2/1",
                             "--backends", "tritune", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["points"][0]["us"] == {}
    assert "wrong result, not timed" in result["notes"][0]


def test_help_and_errors(capsys):
    with pytest.raises(SystemExit):
        paged_bench.main(["--help"])
    assert "copy bandwidth" in capsys.readouterr().out
    assert paged_bench.main(["--dry", "--heads", "32/5"]) == 2
    assert "multiple of Hkv" in capsys.readouterr().err
