"""Runtime dispatch: (hardware, kernel, spec) -> the config to launch.

Order of rules, first hit wins:
1. ``exact``: the user's database has a config for this spec's bucket on this hardware;
2. ``nearest``: the closest bucket with the same exact dimensions (logged once per bucket);
3. ``builtin-exact`` / ``builtin-nearest``: the same two rules on the package's built-in table;
3b. ``builtin-older-kernel``: a built-in row recorded on this hardware for an *older* source of
   the kernel (the table is filled from committed GPU runs, and kernel sources keep changing
   between runs). It is served only after re-validation against the current search space:
   parameters the old source did not have take the current default config's values, ones the
   current source dropped are ignored, and the result must pass every constraint of this
   hardware's space (else the row is skipped). Logged once per bucket. The user's own database
   never gets this rule: a stale tuned row there is retuned, not reinterpreted;
4. ``cross-hardware``: a config tuned on other hardware, only when the caller asked for it
   (``cross_hardware=True`` or ``TRITUNE_CROSS_HARDWARE=1``), logged once;
5. ``default``: the family's always-valid fallback config.
Every config not tuned for exactly this spec's bucket is re-validated against this hardware's
search space (shared memory and the like) before it is returned.

The database is read once per dispatcher, into dicts; a warm lookup is one dict access and never
touches SQLite.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tritune.db import DatabaseError, TuningDB, default_db_path
from tritune.kernels import kernel_hash
from tritune.search_space import (
    Bucket,
    Config,
    Hardware,
    ProblemSpec,
    default_config,
    detect,
    space_for,
)

log = logging.getLogger("tritune.runtime")

BUILTIN_TABLE = "builtin_tuned.json"
OLDER = "builtin-older-kernel"  # the rule (and table) of built-in rows recorded for an older kernel source


@dataclass(frozen=True)
class Selection:
    """The config chosen for a spec, and how it was found."""

    config: Config
    rule: str  # exact | nearest | builtin-exact | builtin-nearest | builtin-older-kernel | cross-hardware | default
    tuned_bucket: str | None  # the bucket the config was tuned for (None for the default)
    tuned_hardware: str | None  # the fingerprint it was tuned on
    source: str  # database path, "builtin", or "default"
    time_ms: float | None = None  # the tuned time, as measured on tuned_hardware


@dataclass(frozen=True)
class _Row:
    bucket: Bucket
    hardware: str
    config: Mapping[str, Any]
    time_ms: float


class Dispatcher:
    """Chooses configs for one device. Thread-safe; loads its tables on first lookup."""

    def __init__(self, hardware: Hardware, *, db_path: str | os.PathLike[str] | None = None,
                 use_builtin: bool = True, cross_hardware: bool | None = None) -> None:
        self.hardware = hardware
        self.db_path = Path(db_path) if db_path is not None else default_db_path()
        self.use_builtin = use_builtin
        if cross_hardware is None:
            cross_hardware = os.environ.get("TRITUNE_CROSS_HARDWARE", "0") not in ("", "0")
        self.cross_hardware = cross_hardware
        self._cache: dict[ProblemSpec, Selection] = {}
        self._by_key: dict[Hashable, Selection] = {}
        self._tables: dict[str, dict[str, list[_Row]]] | None = None  # source -> kernel -> rows
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()

    # --- hot path ----------------------------------------------------------------------------
    def lookup(self, spec: ProblemSpec) -> Selection:
        """The config for ``spec``; cached per spec, so a warm call is one dict lookup."""
        sel = self._cache.get(spec)
        if sel is None:
            with self._lock:
                sel = self._cache.get(spec)
                if sel is None:
                    sel = self._select(spec)
                    self._cache[spec] = sel
        return sel

    def lookup_by(self, key: Hashable, make_spec: Callable[[], ProblemSpec]) -> Selection:
        """Like ``lookup``, cached under a caller's cheap key (e.g. a tuple of tensor sizes).

        Building and validating a spec costs several microseconds; the ops call this with their raw
        sizes so that a warm call skips it. ``key`` must determine the spec completely.
        """
        sel = self._by_key.get(key)
        if sel is None:
            sel = self.lookup(make_spec())
            self._by_key[key] = sel
        return sel

    def drop(self, key: Hashable, spec: ProblemSpec, reason: str) -> Selection:
        """Stop using the config cached under ``key`` (it failed to launch here) and return the
        default for ``spec``, which this key gets from now on. Logged once per bucket: a tuned
        config that does not run on this card or Triton must never crash inference."""
        failed = self._by_key.get(key)
        fallback = Selection(default_config(spec, self.hardware), "default", None, None, "default")
        if failed is not None and failed.config == fallback.config:
            raise RuntimeError(f"{spec.kernel}: the default config failed to launch: {reason}")
        self._log_once(spec.kernel, spec.bucket().key + "#failed",
                       f"{spec.kernel}: tuned config {failed.config.to_dict() if failed else '?'} for "
                       f"{spec.bucket().key} failed to launch on {self.hardware.name} ({reason[:300]}); "
                       "using the default config for this bucket")
        with self._lock:
            self._by_key[key] = fallback
            self._cache[spec] = fallback
        return fallback

    def reload(self) -> None:
        """Forget cached selections and tables (call after tuning in the same process)."""
        with self._lock:
            self._cache.clear()
            self._by_key.clear()
            self._tables = None

    # --- selection -----------------------------------------------------------------------------
    def _select(self, spec: ProblemSpec) -> Selection:
        tables = self._load()
        bucket = spec.bucket()
        space = space_for(spec, self.hardware)
        for source, prefix in ((str(self.db_path), ""), ("builtin", "builtin-")):
            rows = [r for r in tables.get(source, {}).get(spec.kernel, []) if r.hardware == self.hardware.key]
            found = self._closest(rows, bucket, space, spec)
            if found is not None:
                row, distance = found
                rule = prefix + ("exact" if distance == 0 else "nearest")
                if distance:
                    self._log_once(spec.kernel, bucket.key,
                                   f"{spec.kernel}: no tuned config for {bucket.key}; using the nearest tuned bucket "
                                   f"{row.bucket.key} ({source})")
                return Selection(space.config(row.config), rule, row.bucket.key, row.hardware, source, row.time_ms)
        older = [dataclasses.replace(r, config=_current_params(r.config, space))
                 for r in tables.get(OLDER, {}).get(spec.kernel, []) if r.hardware == self.hardware.key]
        found = self._closest(older, bucket, space, spec)
        if found is not None:
            row = found[0]
            self._log_once(spec.kernel, bucket.key + "#older",
                           f"{spec.kernel}: using the built-in config recorded for {row.bucket.key} with an older "
                           f"source of the kernel, re-validated against the current space (rule {OLDER})")
            return Selection(space.config(row.config), OLDER, row.bucket.key, row.hardware, "builtin", row.time_ms)
        if self.cross_hardware:
            rows = [r for name, src in tables.items() if name != OLDER
                    for r in src.get(spec.kernel, []) if r.hardware != self.hardware.key]
            found = self._closest(rows, bucket, space, spec)
            if found is not None:
                row = found[0]
                self._log_once(spec.kernel, bucket.key + "#cross",
                               f"{spec.kernel}: using a config tuned on other hardware ({row.hardware}) for "
                               f"{bucket.key}, re-validated for {self.hardware.name}")
                return Selection(space.config(row.config), "cross-hardware", row.bucket.key, row.hardware,
                                 "cross-hardware", row.time_ms)
        return Selection(default_config(spec, self.hardware), "default", None, None, "default")

    def _closest(self, rows: list[_Row], bucket: Bucket, space: Any, spec: ProblemSpec) -> tuple[_Row, float] | None:
        ranked = []
        for row in rows:
            d = bucket.distance(row.bucket)
            if d is not None:
                ranked.append((d, row.time_ms, row))
        ranked.sort(key=lambda t: (t[0], t[1]))
        for d, _, row in ranked:
            reasons = space.validate(row.config)
            if not reasons:
                return row, d
            self._log_once(spec.kernel, row.bucket.key + "#invalid",
                           f"{spec.kernel}: tuned config {dict(row.config)} for {row.bucket.key} is not valid for "
                           f"{bucket.key} on {self.hardware.name} ({'; '.join(reasons)}); skipped")
        return None

    def _log_once(self, kernel: str, key: str, message: str) -> None:
        if (kernel, key) not in self._logged:
            self._logged.add((kernel, key))
            log.warning(message)

    # --- loading -----------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, list[_Row]]]:
        if self._tables is None:
            tables: dict[str, dict[str, list[_Row]]] = {str(self.db_path): self._load_db()}
            if self.use_builtin:
                builtin = load_builtin_table()
                tables["builtin"] = _rows_from_export(builtin)
                tables[OLDER] = _rows_from_export(builtin, older=True)
            self._tables = tables
        return self._tables

    def _load_db(self) -> dict[str, list[_Row]]:
        if not self.db_path.exists():
            return {}
        try:
            with TuningDB(self.db_path, readonly=True) as db:
                best = db.best() if self.cross_hardware else db.best(hardware=self.hardware.key)
        except DatabaseError as exc:
            # Inference must keep running on a broken cache file: say so once, use defaults.
            self._log_once("*", "db-error", f"ignoring the tuning database: {exc}")
            return {}
        out: dict[str, list[_Row]] = {}
        hashes: dict[str, str] = {}
        for b in best:
            if b.kernel not in hashes:
                try:
                    hashes[b.kernel] = kernel_hash(b.kernel)
                except ValueError:
                    continue  # a kernel this version does not have
            if b.kernel_hash != hashes[b.kernel]:
                continue  # tuned for another version of the kernel source
            out.setdefault(b.kernel, []).append(_Row(Bucket.parse(b.bucket), b.hardware, b.config, b.time_ms))
        return out


def load_builtin_table() -> dict[str, Any]:
    """The package's read-only table of configs tuned by the project's GPU runs."""
    try:
        text = resources.files("tritune").joinpath("data", BUILTIN_TABLE).read_text()
    except (FileNotFoundError, OSError):
        return {"rows": []}
    return json.loads(text)


def _rows_from_export(data: Mapping[str, Any], *, older: bool = False) -> dict[str, list[_Row]]:
    """Rows of an export recorded with the current kernel source (``older``: with another one)."""
    out: dict[str, list[_Row]] = {}
    for r in data.get("rows", []):
        try:
            current = kernel_hash(r["kernel"])
        except ValueError:
            continue
        if (r.get("kernel_hash") != current) != older:
            continue
        try:
            bucket = Bucket.parse(r["bucket"])
        except (ValueError, KeyError):
            continue  # a bucket this version cannot read (an older spec layout)
        hw = Hardware.from_dict(r["hardware"]).key
        out.setdefault(r["kernel"], []).append(_Row(bucket, hw, r["config"], float(r["time_ms"])))
    return out


def _current_params(config: Mapping[str, Any], space: Any) -> dict[str, Any]:
    """An older source's config in the current space's parameters: new ones from the current
    default config, dropped ones left out. Validity is checked by the caller."""
    default = space.default()
    return {name: config[name] if name in config else default[name] for name in space.names}


_DISPATCHERS: dict[Any, Dispatcher] = {}
_SETTINGS: dict[str, Any] = {}
_GLOBAL_LOCK = threading.Lock()


def dispatcher(device: Any = None) -> Dispatcher:
    """The process-wide dispatcher of ``device`` (a torch device, or None for the default)."""
    key = (getattr(device, "type", None), getattr(device, "index", None)) if device is not None else None
    disp = _DISPATCHERS.get(key)
    if disp is None:
        with _GLOBAL_LOCK:
            disp = _DISPATCHERS.get(key)
            if disp is None:
                hw = detect(device if device is not None and getattr(device, "type", None) == "cuda" else None)
                disp = Dispatcher(hw, **_SETTINGS)
                _DISPATCHERS[key] = disp
    return disp


def configure(*, db_path: str | os.PathLike[str] | None = None, use_builtin: bool = True,
              cross_hardware: bool | None = None) -> None:
    """Set where the runtime reads tuned configs from; drops every cached selection."""
    with _GLOBAL_LOCK:
        _SETTINGS.clear()
        _SETTINGS.update(db_path=db_path, use_builtin=use_builtin, cross_hardware=cross_hardware)
        _DISPATCHERS.clear()


def reload() -> None:
    """Re-read the tuning database on the next lookup (e.g. after ``tritune.tuner.tune``)."""
    with _GLOBAL_LOCK:
        for d in _DISPATCHERS.values():
            d.reload()


def select(spec: ProblemSpec, device: Any = None) -> Selection:
    """Shortcut: ``dispatcher(device).lookup(spec)``."""
    return dispatcher(device).lookup(spec)
