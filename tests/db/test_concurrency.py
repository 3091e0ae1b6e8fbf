"""Many tuner workers write to one database file at once: no row may be lost, no writer may fail."""

import multiprocessing as mp

from tritune.db import Trial, TuningDB
from tritune.search_space import Hardware

WRITERS = 4
TRIALS = 500


def _writer(path: str, worker: int) -> None:
    hw = Hardware.from_spec("H100", "3.6.0")
    db = TuningDB(path)  # every process opens (and may try to migrate) the new file at once
    for i in range(TRIALS):
        db.record_trial(Trial(
            hardware=hw, kernel="flash_attention", kernel_hash="h", bucket=f"b{i % 7}", spec={"i": i},
            config={"worker": worker, "i": i}, status="ok" if i % 3 else "compile_error", backend="replay",
            real_timing=True, time_ms=float(1 + (i * 7919 + worker) % 1000), study=f"w{worker}", trial_number=i,
        ))
    db.close()


def test_four_processes_lose_no_row(tmp_db):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_db), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * WRITERS, "a writer failed (database is locked?)"
    with TuningDB(tmp_db) as db:
        rows = db.trials()
        assert len(rows) == WRITERS * TRIALS
        assert {r["trial_uid"] for r in rows} == {f"w{w}#{i}" for w in range(WRITERS) for i in range(TRIALS)}
        # best per bucket is the global minimum over every ok trial of that bucket
        for b in db.best():
            ok = [r["time_ms"] for r in rows if r["bucket"] == b.bucket and r["status"] == "ok"]
            assert b.time_ms == min(ok)
