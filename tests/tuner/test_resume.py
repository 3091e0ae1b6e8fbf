"""Killing a tuning job with SIGKILL and rerunning it loses no finished trial and re-measures none."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest
from tuner_helpers import CONV, run_job, start_job


def _rows(db):
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT id, trial_uid, config_key, status, time_ms FROM trials ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the job is still creating its tables
        return []


def _measured(log):
    with open(log) as f:
        return [line.split(" ", 1)[1].strip() for line in f if line.strip()]


@pytest.mark.slow
def test_sigkill_mid_job_then_rerun_resumes_without_remeasuring(tmp_path):
    db, log = tmp_path / "tuned.db", tmp_path / "measured.log"
    args = ("--landscape", str(CONV / "A100.json.gz"), "--db", str(db), "--log", str(log), "--budget", "24",
            "--delay", "0.15")
    proc = start_job(*args)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if db.exists() and len(_rows(db)) >= 8:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    first = _rows(db)
    first_keys = {key for _, _, key, _, _ in first}
    assert 8 <= len(first) < 24, "the job must be killed mid-way"
    first_log = _measured(log)

    done = run_job(*args)
    assert done.returncode == 0, done.stderr
    assert "evaluations=24" in done.stdout

    after = _rows(db)
    assert after[: len(first)] == first, "rows stored before the kill are kept as they were"
    uids = [uid for _, uid, _, _, _ in after]
    assert len(uids) == len(set(uids)) == 24, "every trial stored exactly once, up to the budget"
    second_log = _measured(log)[len(first_log):]
    assert not first_keys & set(second_log), "a trial finished before the kill was measured again"
    assert len(second_log) == len(set(second_log))
    assert len({key for _, _, key, _, _ in after}) == 24, "no config measured twice"
