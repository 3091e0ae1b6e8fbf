"""Where studies live, what they are called, and how a killed run's trials are recovered.

Default storage: an Optuna journal file next to the tuning database (``tuned.db.optuna.journal``),
safe for several processes on one machine. ``--storage URL`` with a SQLAlchemy URL
(``postgresql+psycopg2://...``, ``sqlite:///...``) puts studies in Optuna's RDB storage, shared
by workers on many machines; any other value is taken as a journal file path.

A study's name is derived from what defines the search (hardware fingerprint, kernel and its
source hash, shape bucket, strategy, backend), so rerunning the same command resumes it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from tritune.tuner._backend import MeasureResult, Problem, Status
from tritune.tuner._study import StudyDriver, config_from_trial, inflight, unclaimed_and_old


def worker_id() -> str:
    """host:pid of this process, stored on every trial it asks (to recognise its stale trials)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def make_storage(url: str | None, db_path: str | os.PathLike[str]) -> optuna.storages.BaseStorage:
    """The Optuna storage for ``url`` (None: the journal file next to the database)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url is None:
        path = Path(f"{db_path}.optuna.journal")
        path.parent.mkdir(parents=True, exist_ok=True)
        return _journal(path)
    if "://" in url:
        return _rdb(url)
    return _journal(Path(url))


def _rdb(url: str, attempts: int = 6) -> optuna.storages.BaseStorage:
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except ImportError as exc:
            raise ValueError(f"--storage {url.split('://')[0]}://...: a database driver is missing ({exc}); "
                             "for PostgreSQL: pip install psycopg2-binary") from None
        except Exception as exc:  # sqlalchemy.exc.* (bad URL, server down, schema race)
            # Workers starting together on an empty database race to create Optuna's tables;
            # the losers see a duplicate-key error, and the tables exist when they try again.
            if type(exc).__name__ in ("IntegrityError", "ProgrammingError") and attempt + 1 < attempts:
                time.sleep(0.5 + random.random())
                continue
            raise ValueError(f"cannot open --storage {_redact(url)}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0]}") from None
    raise AssertionError("unreachable")


def _journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileOpenLock, JournalStorage

    # The open-lock works on every file system (the default symlink lock needs symlinks). The lock
    # is held for one append (milliseconds); one left behind by a SIGKILLed job is broken after
    # 5 s instead of Optuna's default 30.
    lock = JournalFileOpenLock(str(path), grace_period=5)
    return JournalStorage(_UnsyncedJournalFile(str(path), lock_obj=lock))


def _unsynced_backend() -> type:
    from optuna.storages.journal import JournalFileBackend

    class UnsyncedJournalFile(JournalFileBackend):
        """Appends without fsync: Optuna writes one journal line per parameter and attribute, and an
        fsync each made the search cost ~0.1 s per trial. A killed process loses nothing (the lines
        are in the OS cache); a machine crash may lose the last trials of the study, which the
        tuning database (SQLite, synchronous) still holds."""

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            from optuna.storages.journal._file import get_lock_file

            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with get_lock_file(self._lock), open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))

    return UnsyncedJournalFile


def _UnsyncedJournalFile(path: str, *, lock_obj: Any) -> Any:  # noqa: N802 - a class factory
    return _unsynced_backend()(path, lock_obj=lock_obj)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def study_name(problem: Problem, *, strategy: str, backend: str, prefix: str = "tritune") -> str:
    """Readable and unique: kernel, backend, strategy, plus a hash of the full key."""
    key = "|".join([problem.hardware.key, problem.kernel, problem.kernel_hash, problem.bucket, strategy, backend])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{prefix}/{problem.kernel}/{backend}/{strategy}/{digest}"


def open_study(storage: optuna.storages.BaseStorage, name: str, sampler: optuna.samplers.BaseSampler,
               problem: Problem) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, direction="minimize",
                                load_if_exists=True)
    if "bucket" not in study.user_attrs:
        for k, v in {"kernel": problem.kernel, "bucket": problem.bucket, "hardware": problem.hardware.key,
                     "kernel_hash": problem.kernel_hash, "objective": "ln(time_ms)"}.items():
            study.set_user_attr(k, v)
    return study


def recover_stale_trials(driver: StudyDriver, db: Any, study: str, *, stale_after_s: float) -> dict[str, int]:
    """Finish the RUNNING trials a killed worker left behind.

    A trial is stale when its owner ran on this host and is gone, when it has been running for
    ``stale_after_s`` (owners on other hosts), or when no worker claimed it for measuring within
    seconds of asking (its worker died in between). One whose measurement reached the database is told that
    result, so it is never measured again; one killed before that is marked FAIL (it was never
    finished, so a later proposal of the same config measures it).
    """
    host = socket.gethostname()
    stored = None
    counts = {"completed": 0, "failed": 0}
    now = datetime.datetime.now()
    for t in driver.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner_host, _, pid = str((inflight(t) or {}).get("worker", "")).rpartition(":")
        if owner_host == host and pid.isdigit() and int(pid) == os.getpid():
            continue
        old = t.datetime_start is not None and (now - t.datetime_start).total_seconds() >= stale_after_s
        dead_here = owner_host == host and pid.isdigit() and not _alive(int(pid))
        if not (old or dead_here or unclaimed_and_old(t)):
            continue
        if stored is None:
            stored = {r["trial_uid"]: r for r in db.trials(study=study)}
        row = stored.get(f"{study}#{t.number}")
        trial = optuna.trial.Trial(driver.study, t._trial_id)
        config = config_from_trial(t)
        if row is not None and config is not None:
            result = MeasureResult(Status(row["status"]), time_ms=row["time_ms"], error=row["error"],
                                   cost_ms=row["cost_ms"] or 0.0, real_timing=bool(row["real_timing"]))
            driver.finish(trial, config, result, evaluated=result.status.costs_evaluation)
            counts["completed"] += 1
        else:
            trial.set_user_attr("abandoned", "its worker died before the result was stored")
            driver.study.tell(t.number, state=TrialState.FAIL)
            counts["failed"] += 1
    return counts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
