"""Three worker processes share one PostgreSQL-backed study (replay backend): every trial is
recorded exactly once in the tuning database and the global trial cap holds."""

from __future__ import annotations

import os
import sqlite3
import uuid

import optuna
import pytest
from tuner_helpers import CONV, start_job

URL = os.environ.get("TRITUNE_TEST_POSTGRES_URL")
pytestmark = [pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.skipif(not URL, reason="TRITUNE_TEST_POSTGRES_URL is not set (.ci/postgres.sh sets it)")]


# tpe: workers propose different configs; default: the learned pipeline ranks deterministically, so
# its workers propose the same config at the same moment and the claim protocol decides (before
# the claim check read running and finished trials in one go, 3 of 4 such runs measured a config
# twice: a rival's trial finishing between two reads was in neither).
@pytest.mark.parametrize("strategy", ["tpe", "default"])
def test_three_workers_share_one_study_under_a_global_cap(tmp_path, strategy):
    db, log = tmp_path / "tuned.db", tmp_path / "measured.log"
    prefix = f"test-{uuid.uuid4().hex[:8]}"  # a fresh study on a server that may outlive this run
    cap = 30
    args = ("--landscape", str(CONV / "W7800.json.gz"), "--db", str(db), "--log", str(log), "--budget", str(cap),
            "--delay", "0.05", "--storage", URL, "--prefix", prefix, "--strategy", strategy)
    workers = [start_job(*args) for _ in range(3)]
    outputs = [w.communicate(timeout=240) for w in workers]
    for w, (_out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT trial_uid, study, config_key FROM trials").fetchall()
    uids = [uid for uid, _, _ in rows]
    assert len(uids) == len(set(uids)) == cap, "every trial stored once, and no more than the cap"
    studies = {study for _, study, _ in rows}
    assert len(studies) == 1
    measured = [line.split()[1] for line in log.read_text().splitlines()]
    assert len(measured) == cap, "the workers together measured exactly the cap"
    assert len({pid for pid in (line.split()[0] for line in log.read_text().splitlines())}) >= 2, \
        "the work was shared"
    assert len(set(measured)) == cap, "no config measured twice across workers"

    study = optuna.load_study(study_name=studies.pop(), storage=URL)
    evaluated = [t for t in study.trials if t.user_attrs.get("result", {}).get("evaluated")]
    assert sorted(f"{study.study_name}#{t.number}" for t in evaluated) == sorted(uids)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
