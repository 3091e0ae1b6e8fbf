"""The CLI's contract: help everywhere, one-line errors with exit 2, nothing stored is lost."""

import json
import sqlite3
import subprocess
import sys

import pytest
from tritune.cli import build_parser, main
from tritune.db import SCHEMA_VERSION, Trial, TuningDB
from tritune.kernels import kernel_hash
from tritune.search_space import FlashAttentionSpec, Hardware, space_for

CPU = Hardware.cpu_interpreter()
SHAPE = ["B=1", "Hq=4", "Hkv=2", "seq=100", "D=64", "dtype=fp16"]


def _store(db_path):
    spec = FlashAttentionSpec.parse(SHAPE).representative()
    config = space_for(spec, CPU).enumerate()[2]
    with TuningDB(db_path) as db:
        db.record_trial(Trial(hardware=CPU, kernel=spec.kernel, kernel_hash=kernel_hash(spec.kernel),
                              bucket=spec.bucket().key, spec=spec.to_dict(), config=config, status="ok",
                              backend="interpreter", real_timing=False, time_ms=12.5))
    return config


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert len(capsys.readouterr().out) > 200


def test_query_reports_rule(capsys, tmp_db):
    code, out, _ = run(capsys, "query", "--kernel", "flash_attention", "--shape", *SHAPE, "--db", str(tmp_db),
                       "--hardware", "cpu-interpreter", "--json")
    assert code == 0 and json.loads(out)["rule"] == "default"
    config = _store(tmp_db)
    code, out, _ = run(capsys, "query", "--kernel", "flash_attention", "--shape", *SHAPE, "--db", str(tmp_db),
                       "--hardware", "cpu-interpreter", "--json")
    data = json.loads(out)
    assert code == 0 and data["rule"] == "exact" and data["config"] == config
    code, out, _ = run(capsys, "query", "--kernel", "flash_attention", "--shape", *SHAPE, "--db", str(tmp_db),
                       "--hardware", "cpu-interpreter")
    assert "found by  exact" in out
    # the same db answers "default" for a GPU: CPU results are never served to a GPU
    code, out, _ = run(capsys, "query", "--kernel", "flash_attention", "--shape", *SHAPE, "--db", str(tmp_db),
                       "--hardware", "H100", "--json")
    assert json.loads(out)["rule"] == "default"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["query", "--kernel", "matmul", "--shape", "B=1"], "unknown kernel 'matmul'"),
        (["query", "--kernel", "flash_attention", "--shape", "B=1,Hq=8"], "missing"),
        (["query", "--kernel", "flash_attention", "--shape", "B1"], "malformed shape item 'B1'"),
        (["query", "--kernel", "flash_attention", "--shape", "B=1,Hq=6,Hkv=4,seq=8,D=64"], "multiple of heads_kv"),
        (["query", "--kernel", "flash_attention", "--shape", "B=1,Hq=4,Hkv=4,seq=0,D=64"], "seq_q=0"),
        (["query", "--kernel", "paged_attention", "--shape", "S=1,Hq=4,Hkv=4,D=64,ctx=9,block_size=12"], "power of two"),
        (["query", "--kernel", "flash_attention", "--shape", *SHAPE, "--hardware", "Z80"], "unknown device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("tritune: error:") and fragment in err and err.count("\n") == 1


def test_bad_database_files_are_refused_and_kept(capsys, tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("my notes, not a database\n")
    newer = tmp_path / "newer.db"
    _store(newer)
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    for path, fragment in ((text, "not a SQLite database"), (newer, "newer than this tritune")):
        before = path.read_bytes()
        for argv in (["db", "stats", "--db", str(path)], ["db", "import", "--db", str(path), str(path)],
                     ["db", "merge", "--db", str(tmp_path / "fresh.db"), str(path)]):
            code, _, err = run(capsys, *argv)
            assert code == 2 and err.count("\n") == 1, (argv, err)
        code, _, err = run(capsys, "db", "stats", "--db", str(path))
        assert fragment in err
        assert path.read_bytes() == before


def test_db_export_import_merge_stats(capsys, tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    config = _store(a)
    export = tmp_path / "best.json"
    assert run(capsys, "db", "export", "--db", str(a), "-o", str(export))[0] == 0
    code, out, _ = run(capsys, "db", "import", "--db", str(b), str(export), "--json")
    assert code == 0 and json.loads(out) == {"rows": 1, "changed": 1}
    code, out, _ = run(capsys, "db", "merge", "--db", str(b), str(a), "--json")
    assert code == 0 and json.loads(out)["trials_added"] == 1
    code, out, _ = run(capsys, "db", "stats", "--db", str(b), "--json")
    stats = json.loads(out)
    assert stats["trials"] == 1 and stats["best_configs"] == 1
    code, out, _ = run(capsys, "db", "best", "--db", str(b), "--json")
    assert json.loads(out)[0]["config"] == config
    code, out, _ = run(capsys, "db", "best", "--db", str(b))
    assert "not a GPU time" in out
    code, _, err = run(capsys, "db", "stats", "--db", str(tmp_path / "missing.db"))
    assert code == 2 and "does not exist" in err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "tritune.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("tritune ")
