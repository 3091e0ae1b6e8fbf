"""The ``tritune tune`` / ``bench-search`` commands: one-line errors, JSON output, the README job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tritune.cli import main
from tritune.db import TuningDB
from tritune.tuner import model_config_specs
from tuner_helpers import CONV


@pytest.mark.parametrize("argv, message", [
    (["tune", "--kernel", "nope", "--shape", "a=1"], "unknown kernel 'nope'"),
    (["tune", "--shape", "B=x", "Hq=2", "Hkv=1", "seq=64", "D=32"], "batch='x' is not an integer"),
    (["tune", "--shape", "B=1", "Hq=3", "Hkv=2", "seq=64", "D=32"], "must be a multiple of heads_kv"),
    (["tune", "--shape", "B=1", "Hq=2", "Hkv=1", "seq=0", "D=32"], "must be a positive integer"),
    (["tune", "--strategy", "nope", "--landscape", str(CONV / "A100.json.gz")], "unknown strategy 'nope'"),
    (["tune", "--landscape", "missing.json.gz"], "does not exist"),
    (["tune", "--landscape", str(CONV / "A100.json.gz"), "--budget", "0"], "--budget 0 must be at least 1"),
    (["tune", "--preset", "cpu-small", "--shape", "B=1"], "choose one of"),
    (["tune", "--preset", "nope"], "unknown preset 'nope'"),
    (["tune", "--model-config", "missing/config.json"], "file not found"),
    (["tune", "--backend", "replay"], "needs --landscape"),
    (["bench-search", "--landscape", str(CONV / "A100.json.gz"), "--repeats", "0"], "--repeats 0"),
    (["bench-search", "--landscape", str(CONV / "A100.json.gz"), "--strategy", "nope"], "unknown strategy"),
])
def test_errors_are_one_line_with_nonzero_exit(argv, message, capsys, tmp_db):
    code = main([*argv, *(["--db", str(tmp_db)] if argv[0] == "tune" else [])])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("tritune: error:") and "\n" not in err and message in err, err
    assert not tmp_db.exists() or TuningDB(tmp_db).stats()["trials"] == 0


def test_tune_landscape_json_and_resume(capsys, tmp_db):
    argv = ["tune", "--landscape", str(CONV / "A6000.json.gz"), "--budget", "12", "--db", str(tmp_db), "--json",
            "--no-progress"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)["problems"][0]
    assert first["evaluations"] == first["measured_here"] == 12 and first["best_ms"] > 0
    assert main([*argv[:4], "16", *argv[5:]]) == 0
    second = json.loads(capsys.readouterr().out)["problems"][0]
    assert second["evaluations"] == 16 and second["measured_here"] == 4 and second["study"] == first["study"]
    with TuningDB(tmp_db) as db:
        rows = db.trials()
    assert len(rows) == 16 and len({r["trial_uid"] for r in rows}) == 16


def test_summary_table_and_plot(capsys, tmp_db, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "conv.png"
    argv = ["tune", "--landscape", str(CONV / "W6600.json.gz"), "--budget", "6", "--db", str(tmp_db), "--plot",
            str(png), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "best ms" in out and "convolution_milo/W6600" in out
    assert png.stat().st_size > 1000


def test_bench_search_json(capsys):
    argv = ["bench-search", "--landscape", str(CONV / "A100.json.gz"), "--strategy", "random", "--budget", "5",
            "10", "--repeats", "2", "--json", "--no-progress"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    keys = {k for row in data["rows"] for k in row if "fraction" in k}
    assert {"fraction_mean", "fraction_std", "random_expected_fraction"} <= keys


def test_model_config_gives_prefill_and_decode_problems(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"num_attention_heads": 12, "num_key_value_heads": 4, "hidden_size": 768,
                               "torch_dtype": "float16"}))
    specs = model_config_specs(tmp_path)
    fa = [s for k, s in specs if k == "flash_attention"]
    assert [(s.heads_q, s.heads_kv, s.head_dim, s.dtype, s.causal) for s in fa] == [(12, 4, 64, "fp16", True)] * 2
    assert [s.seq_q for s in fa] == [1024, 4096]


def test_list_presets(capsys):
    assert main(["tune", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "cpu-small" in out and "llama3-8b" in out


@pytest.mark.slow
def test_readme_job_on_cpu_then_query_finds_it_exact(tmp_path):
    """The README's first command (small budget): interpreter on CPU, then `tritune query`."""
    db = tmp_path / "tuned.db"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITUNE_DB"] = str(db)
    cli = [sys.executable, "-m", "tritune.cli"]
    job = subprocess.run([*cli, "tune", "--budget", "3", "--no-progress"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert job.returncode == 0, job.stderr[-2000:]
    assert "not GPU timings" in job.stderr and "best ms (cpu)" in job.stdout
    query_line = next(line for line in job.stdout.splitlines() if line.startswith("query it: "))
    query = query_line.removeprefix("query it: ").split()[1:]
    out = subprocess.run([*cli, *query, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["rule"] == "exact"
    with TuningDB(db) as tdb:
        best = {b.bucket: b.config for b in tdb.best()}
    assert answer["config"] == best[answer["bucket"]]
