"""The built-in tuned table: filled from committed GPU runs (`tritune db promote`), and served by
the runtime, rows of an older kernel source only re-validated under ``builtin-older-kernel``."""

import json
import logging
import os

import pytest
from tritune import runtime
from tritune._builtin_table import promote_runs
from tritune.cli import main
from tritune.kernels import kernel_hash
from tritune.runtime import Dispatcher
from tritune.search_space import FlashAttentionSpec, Hardware, space_for, write_landscape

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
H100 = Hardware.from_spec("H100", "3.6.0")
SPEC = FlashAttentionSpec(1, 32, 8, 4096, 4096, 128, "bf16", True)


def _run(folder, *, khash, configs, hw=H100, real_timing=True):
    space = space_for(SPEC, hw)
    write_landscape(folder / "landscapes" / "fa.json.gz", kernel="flash_attention", kernel_name="tritune_fa",
                    spec=SPEC.to_dict(), hardware=hw, params={p.name: p.values for p in space.params},
                    results=[(c, t, None, {}) for c, t in configs],
                    extra={"kernel_hash": khash, "real_timing": real_timing, "date": "2026-11-25"})
    return folder


def _table(monkeypatch, path):
    data = json.loads(path.read_text())
    monkeypatch.setattr(runtime, "load_builtin_table", lambda: data)


def test_every_committed_gpu_run_is_in_the_shipped_table(tmp_path):
    shipped = json.loads(open(os.path.join(REPO, "tritune_root", "data", "builtin_tuned.json")).read())
    fresh = promote_runs([os.path.join(REPO, "data", "gpu_runs")], tmp_path / "table.json")
    rebuilt = json.loads(fresh.table.read_text())
    assert fresh.rows >= 1 and rebuilt["rows"] == shipped["rows"]  # `tritune db promote` was run and committed


def test_promote_keeps_the_fastest_gpu_config_and_skips_interpreter_runs(tmp_path, capsys):
    space = space_for(SPEC, H100)
    a, b = space.enumerate()[:2]
    _run(tmp_path / "gpu", khash=kernel_hash("flash_attention"), configs=[(a, 2.0), (b, 1.5)])
    _run(tmp_path / "cpu", khash="x", configs=[(a, 0.1)], hw=Hardware.cpu_interpreter(), real_timing=False)
    out = tmp_path / "table.json"
    assert main(["db", "promote", str(tmp_path / "gpu"), str(tmp_path / "cpu"), "--output", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 1 and report["changed"] == 1 and len(report["skipped"]) == 1
    [row] = json.loads(out.read_text())["rows"]
    assert row["config"] == b and row["time_ms"] == 1.5 and row["hardware"] == H100.to_dict()
    assert main(["db", "promote", str(tmp_path / "gpu"), "--output", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == 0  # the same runs: the same table


def test_promote_names_a_missing_folder(tmp_path, capsys):
    assert main(["db", "promote", str(tmp_path / "nope"), "--output", str(tmp_path / "t.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_current_source_rows_win_over_older_ones(tmp_path, monkeypatch):
    space = space_for(SPEC, H100)
    a, b = space.enumerate()[:2]
    _run(tmp_path / "old", khash="0ldsource", configs=[(a, 1.0)])
    _run(tmp_path / "new", khash=kernel_hash("flash_attention"), configs=[(b, 2.0)])
    table = tmp_path / "table.json"
    promote_runs([tmp_path / "old", tmp_path / "new"], table)
    _table(monkeypatch, table)
    sel = Dispatcher(H100, db_path=tmp_path / "none.db").lookup(SPEC)
    assert sel.rule == "builtin-exact" and sel.config.to_dict() == b


def test_an_older_source_row_is_served_after_revalidation_and_logged(tmp_path, monkeypatch, caplog):
    space = space_for(SPEC, H100)
    config = space.enumerate()[3]
    old = {k: v for k, v in config.items() if k != space.names[-1]}  # the old source lacked the last knob
    old["retired_knob"] = 7  # and had one the current source dropped
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"rows": [{"hardware": H100.to_dict(), "kernel": "flash_attention",
                                           "kernel_hash": "0ldsource", "bucket": SPEC.bucket().key,
                                           "config": old, "time_ms": 0.3}]}))
    _table(monkeypatch, table)
    disp = Dispatcher(H100, db_path=tmp_path / "none.db")
    with caplog.at_level(logging.WARNING, logger="tritune.runtime"):
        sel = disp.lookup(SPEC)
        disp.lookup(FlashAttentionSpec(1, 32, 8, 4000, 4000, 128, "bf16", True))  # same bucket: logged once
    expected = {**{k: v for k, v in old.items() if k in space.names}, space.names[-1]: space.default()[space.names[-1]]}
    assert sel.rule == "builtin-older-kernel" and sel.config.to_dict() == expected and sel.source == "builtin"
    assert sum("older source" in r.message for r in caplog.records) == 1
    # another card never gets it (no cross-hardware use of older rows), and nor does the user's database rule
    assert Dispatcher(Hardware.from_spec("A100", "3.6.0"), db_path=tmp_path / "none.db",
                      cross_hardware=True).lookup(SPEC).rule == "default"


def test_an_older_row_that_fails_the_current_space_is_skipped(tmp_path, monkeypatch):
    space = space_for(SPEC, H100)
    bad = dict(space.default())
    bad[space.params[0].name] = 10 ** 6  # outside today's domain
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"rows": [{"hardware": H100.to_dict(), "kernel": "flash_attention",
                                           "kernel_hash": "0ldsource", "bucket": SPEC.bucket().key,
                                           "config": bad, "time_ms": 0.3}]}))
    _table(monkeypatch, table)
    assert Dispatcher(H100, db_path=tmp_path / "none.db").lookup(SPEC).rule == "default"


@pytest.mark.parametrize("use_builtin", [False])
def test_use_builtin_false_ignores_older_rows_too(tmp_path, monkeypatch, use_builtin):
    space = space_for(SPEC, H100)
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"rows": [{"hardware": H100.to_dict(), "kernel": "flash_attention",
                                           "kernel_hash": "0ldsource", "bucket": SPEC.bucket().key,
                                           "config": space.enumerate()[1], "time_ms": 0.3}]}))
    _table(monkeypatch, table)
    assert Dispatcher(H100, db_path=tmp_path / "none.db", use_builtin=use_builtin).lookup(SPEC).rule == "default"
