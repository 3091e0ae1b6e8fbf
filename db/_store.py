"""The tuning database: every trial, and the best verified config per key.

Key of a tuned config: (hardware fingerprint, kernel, kernel source hash, shape bucket). Only
trials with status "ok" (verified against the reference by the backend) can become "best".

Writers are many processes (tuner workers); each write is one short ``BEGIN IMMEDIATE``
transaction on a WAL database with a generous busy timeout, so concurrent writers queue instead
of failing with "database is locked".
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils
from tritune.search_space import Hardware, TuningRecord, config_key

from ._schema import MIGRATIONS, SCHEMA_VERSION

EXPORT_FORMAT = "tritune-best/1"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 120.0


class DatabaseError(Exception):
    """The database file cannot be used (not SQLite, corrupt, unreadable); nothing was written."""


class SchemaTooNewError(DatabaseError):
    """The file was written by a newer tritune; refusing to touch it."""


def default_db_path() -> Path:
    """``$TRITUNE_DB``, else ``$XDG_CACHE_HOME/tritune/tuned.db`` (``~/.cache/tritune/tuned.db``)."""
    env = os.environ.get("TRITUNE_DB")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "tritune" / "tuned.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def versions() -> dict[str, str]:
    """Versions that a measurement depends on (stored with every trial)."""
    out = {"python": platform.python_version()}
    try:
        from tritune import __version__

        out["tritune"] = __version__
    except ImportError:  # pragma: no cover - the package is always importable when installed
        out["tritune"] = "unknown"
    for mod in ("torch", "triton"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = "none"
    return out


@dataclass(frozen=True)
class Trial:
    """One measurement, as the tuner hands it to the database."""

    hardware: Hardware
    kernel: str
    kernel_hash: str
    bucket: str
    spec: Mapping[str, Any]
    config: Mapping[str, Any]
    status: str
    backend: str
    real_timing: bool
    time_ms: float | None = None
    times_ms: tuple[float, ...] = ()
    compile_ms: float | None = None
    cost_ms: float | None = None
    error: str | None = None
    study: str | None = None
    trial_number: int | None = None
    versions: Mapping[str, str] = field(default_factory=versions)


@dataclass(frozen=True)
class BestConfig:
    """A row of the ``best`` table."""

    hardware: str
    kernel: str
    kernel_hash: str
    bucket: str
    spec: dict[str, Any]
    config: dict[str, Any]
    time_ms: float
    backend: str
    real_timing: bool
    source: str
    updated_at: str
    trial_id: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BestConfig:
        return cls(
            hardware=row["hardware"], kernel=row["kernel"], kernel_hash=row["kernel_hash"], bucket=row["bucket"],
            spec=json.loads(row["spec"]), config=json.loads(row["config"]), time_ms=row["time_ms"],
            backend=row["backend"], real_timing=bool(row["real_timing"]), source=row["source"],
            updated_at=row["updated_at"], trial_id=row["trial_id"],
        )


class TuningDB:
    """A tuning database file. Library first; the ``tritune db`` commands are thin wrappers.

    ``TuningDB(path)`` creates the file (and its directory) when missing and migrates it to the
    current schema. ``readonly=True`` never creates or migrates (the runtime's mode).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        self.readonly = readonly
        _check_file(self.path)
        if readonly:
            if not self.path.exists():
                raise DatabaseError(f"database {self.path} does not exist")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        self.conn = conn
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            if readonly:
                self._check_version(int(self.conn.execute("PRAGMA user_version").fetchone()[0]))
            else:
                self._migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise DatabaseError(f"database {self.path} is unreadable ({exc}); move it aside or pass --db NEW_PATH") from None
        except DatabaseError:
            self.conn.close()
            raise
        self.db = sqlite_utils.Database(self.conn)

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> TuningDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"database {self.path} has schema version {version}, newer than this tritune's {SCHEMA_VERSION}: "
                "upgrade tritune, or pass --db NEW_PATH to use another file"
            )

    def _migrate(self) -> None:
        # WAL lets readers (the runtime, `tritune query`) run while a tuner writes.
        self.conn.execute("PRAGMA journal_mode = WAL")
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        self._check_version(version)
        if version == SCHEMA_VERSION:
            return
        with self._write():
            version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            self._check_version(version)
            if version == 0:
                foreign = [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                if foreign:
                    raise DatabaseError(
                        f"{self.path} is a SQLite database but not a tritune one (tables: {', '.join(foreign[:5])}); "
                        "pass --db NEW_PATH"
                    )
            for sql in MIGRATIONS[version:]:
                for statement in _statements(sql):
                    self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise DatabaseError(f"database {self.path} was opened read-only")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # --- writing ---------------------------------------------------------------------------
    def record_trial(self, trial: Trial) -> int | None:
        """Store one trial (and update ``best`` if it is a verified improvement).

        Returns the new row id, or None when a trial with the same study and number is already
        stored (resumed jobs and racing workers never store a trial twice).
        """
        return self.record_trials([trial])[0]

    def record_trials(self, trials: Iterable[Trial]) -> list[int | None]:
        ids: list[int | None] = []
        with self._write() as conn:
            for t in trials:
                ids.append(self._insert_trial(conn, t))
        return ids

    def _insert_trial(self, conn: sqlite3.Connection, t: Trial) -> int | None:
        conn.execute(
            "INSERT OR IGNORE INTO hardware(key, info) VALUES (?, ?)",
            (t.hardware.key, json.dumps(t.hardware.to_dict(), sort_keys=True)),
        )
        uid = f"{t.study}#{t.trial_number}" if t.study is not None and t.trial_number is not None else None
        cur = conn.execute(
            """INSERT OR IGNORE INTO trials(trial_uid, study, hardware, kernel, kernel_hash, bucket, spec, config,
                   config_key, status, time_ms, times_ms, compile_ms, cost_ms, error, backend, real_timing, versions,
                   created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (
                uid, t.study, t.hardware.key, t.kernel, t.kernel_hash, t.bucket,
                json.dumps(dict(t.spec), sort_keys=True), json.dumps(dict(t.config), sort_keys=True),
                config_key(t.config), t.status, t.time_ms, json.dumps(list(t.times_ms)), t.compile_ms, t.cost_ms,
                t.error, t.backend, int(t.real_timing), json.dumps(dict(t.versions), sort_keys=True), _now(),
            ),
        )
        if cur.rowcount == 0:
            return None
        row_id = int(cur.lastrowid or 0)
        if t.status == "ok" and t.time_ms is not None:
            self._upsert_best(
                conn, hardware=t.hardware.key, kernel=t.kernel, kernel_hash=t.kernel_hash, bucket=t.bucket,
                spec=dict(t.spec), config=dict(t.config), time_ms=t.time_ms, backend=t.backend,
                real_timing=t.real_timing, trial_id=row_id, source="local",
            )
        return row_id

    def _upsert_best(self, conn: sqlite3.Connection, *, hardware: str, kernel: str, kernel_hash: str, bucket: str,
                     spec: Mapping[str, Any], config: Mapping[str, Any], time_ms: float, backend: str,
                     real_timing: bool, trial_id: int | None, source: str) -> bool:
        """Insert or improve one best row; True when the table changed."""
        cur = conn.execute(
            """INSERT INTO best(hardware, kernel, kernel_hash, bucket, spec, config, time_ms, backend, real_timing,
                   trial_id, source, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(hardware, kernel, kernel_hash, bucket) DO UPDATE SET
                   spec=excluded.spec, config=excluded.config, time_ms=excluded.time_ms, backend=excluded.backend,
                   real_timing=excluded.real_timing, trial_id=excluded.trial_id, source=excluded.source,
                   updated_at=excluded.updated_at
               WHERE excluded.time_ms < best.time_ms""",
            (hardware, kernel, kernel_hash, bucket, json.dumps(dict(spec), sort_keys=True),
             json.dumps(dict(config), sort_keys=True), float(time_ms), backend, int(real_timing), trial_id, source,
             _now()),
        )
        return cur.rowcount > 0

    # --- reading ---------------------------------------------------------------------------
    def best(self, *, hardware: str | None = None, kernel: str | None = None,
             kernel_hash: str | None = None) -> list[BestConfig]:
        where, args = _where(hardware=hardware, kernel=kernel, kernel_hash=kernel_hash)
        rows = self.conn.execute(f"SELECT * FROM best{where} ORDER BY kernel, bucket", args).fetchall()
        return [BestConfig.from_row(r) for r in rows]

    def trials(self, *, study: str | None = None, hardware: str | None = None, kernel: str | None = None,
               bucket: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        where, args = _where(study=study, hardware=hardware, kernel=kernel, bucket=bucket, status=status)
        rows = self.conn.execute(f"SELECT * FROM trials{where} ORDER BY id", args).fetchall()
        return [dict(r) for r in rows]

    def trial_uids(self, study: str) -> set[str]:
        rows = self.conn.execute("SELECT trial_uid FROM trials WHERE study = ? AND trial_uid IS NOT NULL", (study,))
        return {r[0] for r in rows}

    def hardware(self) -> dict[str, Hardware]:
        return {r["key"]: Hardware.from_dict(json.loads(r["info"])) for r in self.conn.execute("SELECT * FROM hardware")}

    def records(self, *, kernel: str | None = None) -> list[TuningRecord]:
        """Every trial as a training record for the cost model and the advisor."""
        hw = self.hardware()
        out = []
        for r in self.trials(kernel=kernel):
            if r["status"] == "invalid":
                continue
            out.append(TuningRecord(
                hardware=hw[r["hardware"]], kernel=r["kernel"], problem=json.loads(r["spec"]),
                config=json.loads(r["config"]), time_ms=r["time_ms"] if r["status"] == "ok" else None,
                status=r["status"], group=f"{r['hardware']}|{r['kernel']}|{r['bucket']}",
            ))
        return out

    def stats(self) -> dict[str, Any]:
        q = self.conn.execute
        by_status = {r[0]: r[1] for r in q("SELECT status, count(*) FROM trials GROUP BY status")}
        per_key = [dict(r) for r in q(
            """SELECT hardware, kernel, count(DISTINCT bucket) AS buckets, count(*) AS trials,
                      sum(status = 'ok') AS ok FROM trials GROUP BY hardware, kernel ORDER BY hardware, kernel""")]
        return {
            "path": str(self.path),
            "schema_version": int(q("PRAGMA user_version").fetchone()[0]),
            "trials": sum(by_status.values()),
            "trials_by_status": by_status,
            "best_configs": int(q("SELECT count(*) FROM best").fetchone()[0]),
            "hardware": len(self.hardware()),
            "per_hardware_kernel": per_key,
        }

    # --- sharing ---------------------------------------------------------------------------
    def export_best(self, *, hardware: str | None = None, kernel: str | None = None) -> dict[str, Any]:
        """Tuned configs as JSON a team can share (``import_best`` reads it back)."""
        hw = self.hardware()
        rows = []
        for b in self.best(hardware=hardware, kernel=kernel):
            rows.append({
                "hardware": hw[b.hardware].to_dict() if b.hardware in hw else {"key": b.hardware},
                "kernel": b.kernel, "kernel_hash": b.kernel_hash, "bucket": b.bucket, "spec": b.spec,
                "config": b.config, "time_ms": b.time_ms, "backend": b.backend, "real_timing": b.real_timing,
                "updated_at": b.updated_at,
            })
        return {"format": EXPORT_FORMAT, "exported_at": _now(), "rows": rows}

    def import_best(self, data: Mapping[str, Any], *, source: str = "import") -> dict[str, int]:
        """Add shared tuned configs; an imported row replaces a stored one only if it is faster."""
        if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT or not isinstance(data.get("rows"), list):
            raise ValueError(f"not a tritune export: expected a JSON object with format {EXPORT_FORMAT!r} and rows")
        added = 0
        with self._write() as conn:
            for i, row in enumerate(data["rows"]):
                try:
                    hw = Hardware.from_dict(row["hardware"])
                    conn.execute("INSERT OR IGNORE INTO hardware(key, info) VALUES (?, ?)",
                                 (hw.key, json.dumps(hw.to_dict(), sort_keys=True)))
                    changed = self._upsert_best(
                        conn, hardware=hw.key, kernel=row["kernel"], kernel_hash=row["kernel_hash"],
                        bucket=row["bucket"], spec=row["spec"], config=row["config"], time_ms=float(row["time_ms"]),
                        backend=row["backend"], real_timing=bool(row["real_timing"]), trial_id=None, source=source,
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"row {i} of the export is malformed ({type(exc).__name__}: {exc}); nothing imported") from None
                added += int(changed)
        return {"rows": len(data["rows"]), "changed": added}

    def merge(self, other: str | os.PathLike[str]) -> dict[str, int]:
        """Copy another database's trials (once each) and best configs (faster wins) into this one."""
        src = TuningDB(other, readonly=True)
        try:
            hw = src.hardware()
            trials = src.trials()
            exported = src.export_best()
        finally:
            src.close()
        added = 0
        with self._write() as conn:
            known = {r[0] for r in conn.execute("SELECT trial_uid FROM trials WHERE trial_uid IS NOT NULL")}
            seen_plain = {tuple(r) for r in conn.execute(
                "SELECT hardware, kernel, bucket, config_key, created_at FROM trials WHERE trial_uid IS NULL")}
            for key, h in hw.items():
                conn.execute("INSERT OR IGNORE INTO hardware(key, info) VALUES (?, ?)",
                             (key, json.dumps(h.to_dict(), sort_keys=True)))
            for r in trials:
                if r["trial_uid"] is not None and r["trial_uid"] in known:
                    continue
                if r["trial_uid"] is None and (r["hardware"], r["kernel"], r["bucket"], r["config_key"], r["created_at"]) in seen_plain:
                    continue
                cols = [c for c in r if c != "id"]
                conn.execute(f"INSERT INTO trials({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             [r[c] for c in cols])
                added += 1
        imported = self.import_best(exported, source=f"merge:{other}")
        return {"trials_added": added, "best_changed": imported["changed"]}


def _check_file(path: Path) -> None:
    """Refuse a file that is not SQLite before sqlite3 gets a chance to misread it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    if path.is_dir():
        raise DatabaseError(f"database path {path} is a directory; pass --db FILE")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise DatabaseError(f"cannot read database {path}: {exc}") from None
    if head != _SQLITE_MAGIC:
        raise DatabaseError(f"{path} is not a SQLite database (corrupt or another file); move it aside or pass --db NEW_PATH")


def _where(**filters: Any) -> tuple[str, list[Any]]:
    parts = [(k, v) for k, v in filters.items() if v is not None]
    if not parts:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k, _ in parts), [v for _, v in parts]


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip() and not all(
        line.strip().startswith("--") or not line.strip() for line in s.strip().splitlines())]
