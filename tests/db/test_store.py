import json
import sqlite3

import pytest
from tritune.db import (
    EXPORT_FORMAT,
    SCHEMA_VERSION,
    DatabaseError,
    SchemaTooNewError,
    Trial,
    TuningDB,
)
from tritune.search_space import Hardware

HW = Hardware.from_spec("H100", "3.6.0")
CPU = Hardware.cpu_interpreter("3.9.0")


def trial(config, time_ms, *, status="ok", hw=HW, bucket="b", number=None, study="s", kernel_hash="h1"):
    return Trial(hardware=hw, kernel="flash_attention", kernel_hash=kernel_hash, bucket=bucket, spec={"batch": 1},
                 config=config, status=status, backend="gpu", real_timing=True, time_ms=time_ms,
                 error=None if status == "ok" else "boom", study=study if number is not None else None,
                 trial_number=number)


def test_best_keeps_the_fastest_verified_config(tmp_db):
    with TuningDB(tmp_db) as db:
        db.record_trial(trial({"block_m": 64}, 2.0))
        db.record_trial(trial({"block_m": 128}, 1.0))
        db.record_trial(trial({"block_m": 32}, 3.0))
        db.record_trial(trial({"block_m": 16}, 0.1, status="wrong_result"))  # never best, however fast
        [best] = db.best()
        assert best.config == {"block_m": 128} and best.time_ms == 1.0
        assert len(db.trials()) == 4
        assert db.trials(status="wrong_result")[0]["error"] == "boom"


def test_a_trial_is_stored_once(tmp_db):
    with TuningDB(tmp_db) as db:
        assert db.record_trial(trial({"block_m": 64}, 2.0, number=0)) is not None
        assert db.record_trial(trial({"block_m": 64}, 2.0, number=0)) is None
        assert db.trial_uids("s") == {"s#0"}


def test_keys_separate_hardware_kernel_version_and_bucket(tmp_db):
    with TuningDB(tmp_db) as db:
        db.record_trial(trial({"x": 1}, 1.0))
        db.record_trial(trial({"x": 2}, 1.0, hw=CPU))
        db.record_trial(trial({"x": 3}, 1.0, kernel_hash="h2"))
        db.record_trial(trial({"x": 4}, 1.0, bucket="other"))
        assert len(db.best()) == 4
        assert [b.config for b in db.best(hardware=CPU.key)] == [{"x": 2}]


def test_export_import_round_trip(tmp_path):
    with TuningDB(tmp_path / "a.db") as a:
        a.record_trial(trial({"x": 1}, 1.0))
        data = a.export_best()
    assert data["format"] == EXPORT_FORMAT
    json.dumps(data)  # plain JSON
    with TuningDB(tmp_path / "b.db") as b:
        assert b.import_best(data) == {"rows": 1, "changed": 1}
        assert b.import_best(data) == {"rows": 1, "changed": 0}  # not faster: kept
        assert b.best()[0].config == {"x": 1} and b.best()[0].source == "import"
        with pytest.raises(ValueError, match="not a tritune export"):
            b.import_best({"rows": []})
        broken = {"format": EXPORT_FORMAT, "rows": [{"kernel": "flash_attention"}]}
        with pytest.raises(ValueError, match="row 0 of the export is malformed"):
            b.import_best(broken)
        assert len(b.best()) == 1


def test_merge_copies_trials_once_and_faster_best_wins(tmp_path):
    with TuningDB(tmp_path / "a.db") as a:
        a.record_trial(trial({"x": 1}, 2.0, number=0))
        a.record_trial(trial({"x": 9}, 5.0))
    with TuningDB(tmp_path / "b.db") as b:
        b.record_trial(trial({"x": 2}, 1.0, number=1))
        assert b.merge(tmp_path / "a.db") == {"trials_added": 2, "best_changed": 0}
        assert b.merge(tmp_path / "a.db") == {"trials_added": 0, "best_changed": 0}
        assert len(b.trials()) == 3 and b.best()[0].config == {"x": 2}


def test_records_for_training(tmp_db):
    with TuningDB(tmp_db) as db:
        db.record_trial(trial({"x": 1}, 2.0))
        db.record_trial(trial({"x": 2}, None, status="compile_error"))
        recs = db.records()
    assert [r.time_ms for r in recs] == [2.0, None]
    assert recs[0].hardware == HW and recs[0].group == recs[1].group


def test_not_sqlite_is_refused_untouched(tmp_db):
    tmp_db.write_bytes(b"this is a text file, not a database\n" * 10)
    before = tmp_db.read_bytes()
    with pytest.raises(DatabaseError, match="is not a SQLite database"):
        TuningDB(tmp_db)
    assert tmp_db.read_bytes() == before


def test_corrupt_sqlite_is_refused(tmp_db):
    with TuningDB(tmp_db) as db:
        db.record_trial(trial({"x": 1}, 1.0))
    data = bytearray(tmp_db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # clobber the schema page after the header
    tmp_db.write_bytes(bytes(data))
    with pytest.raises(DatabaseError):
        with TuningDB(tmp_db) as db:
            db.best()


def test_newer_schema_is_refused(tmp_db):
    with TuningDB(tmp_db) as db:
        db.record_trial(trial({"x": 1}, 1.0))
    conn = sqlite3.connect(tmp_db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNewError, match="newer than this tritune"):
        TuningDB(tmp_db)
    with pytest.raises(SchemaTooNewError):
        TuningDB(tmp_db, readonly=True)
    conn = sqlite3.connect(tmp_db)
    conn.execute("PRAGMA user_version = 1")
    assert conn.execute("SELECT count(*) FROM trials").fetchone()[0] == 1  # nothing lost
    conn.close()


def test_foreign_sqlite_database_is_refused(tmp_db):
    conn = sqlite3.connect(tmp_db)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseError, match="not a tritune one"):
        TuningDB(tmp_db)


def test_readonly_never_creates(tmp_db):
    with pytest.raises(DatabaseError, match="does not exist"):
        TuningDB(tmp_db, readonly=True)
    assert not tmp_db.exists()
