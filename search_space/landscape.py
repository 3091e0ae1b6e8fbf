"""Recorded tuning landscapes: every measured config of one kernel on one GPU.

Two sources share this reader: Kernel Tuner cache files (``../shared/datasets/kernel_tuner_cache``,
format in its README) and the landscapes tritune's GPU suite records, which are written in the
same format plus a ``tritune`` block (kernel family, spec, hardware fingerprint). The replay
backend, the cost model and the advisor all read landscapes through ``Landscape``.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._space import Constraint, Param, SearchSpace, Value, config_key
from .hardware import Hardware, device_spec
from .records import TuningRecord

FAILED = "failed"
OK = "ok"


@dataclass(frozen=True)
class Entry:
    """One recorded config: its time (None when it failed) and what evaluating it cost."""

    values: Mapping[str, Value]
    time_ms: float | None
    status: str  # "ok" or "failed"
    error: str | None
    cost_ms: float  # compile + verify + benchmark + framework time spent finding this out


class Landscape:
    """A recorded landscape, with a search space built from its parameter domains.

    Configs absent from the recording are invalid (the space's only constraint); configs that
    failed on the GPU are valid but cost an evaluation and yield no time.
    """

    def __init__(self, data: Mapping[str, Any], *, name: str) -> None:
        self.name = name
        self.raw_meta = {k: v for k, v in data.items() if k != "cache"}
        self.kernel_name: str = data.get("kernel_name") or name
        self.problem_size = data.get("problem_size")
        self.keys: tuple[str, ...] = tuple(data["tune_params_keys"])
        self.domains: dict[str, tuple[Value, ...]] = {k: tuple(data["tune_params"][k]) for k in self.keys}
        meta = data.get("tritune") or {}
        self.kernel: str = meta.get("kernel", self.kernel_name)
        self.spec: dict[str, Any] | None = meta.get("spec")
        self.hardware: Hardware = _hardware_of(data, meta, name)
        self.entries: dict[str, Entry] = {}
        for raw in data["cache"].values():
            values = {k: raw[k] for k in self.keys}
            t = raw.get("time")
            ok = isinstance(t, int | float) and math.isfinite(t)
            cost = sum(float(raw.get(k) or 0.0) for k in ("compile_time", "verification_time", "benchmark_time", "framework_time"))
            self.entries[config_key(values)] = Entry(
                values=values,
                time_ms=float(t) if ok else None,
                status=OK if ok else FAILED,
                error=None if ok else str(t),
                cost_ms=cost,
            )
        times = [e.time_ms for e in self.entries.values() if e.time_ms is not None]
        if not times:
            raise ValueError(f"landscape {name!r} has no successful measurement")
        self.optimum_ms: float = min(times)
        self.space = SearchSpace(
            name=f"{self.kernel_name}@{self.device_label}",
            params=tuple(Param(k, self.domains[k]) for k in self.keys),
            constraints=(Constraint("recorded", self._recorded),),
            context={"kernel": self.kernel, "problem_size": self.problem_size, "spec": self.spec},
            listed=self._listed,
        )
        self._in_order: list[Mapping[str, Value]] | None = None

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Landscape:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"landscape file {p} does not exist")
        opener = gzip.open if p.suffix == ".gz" else open
        try:
            with opener(p, "rt") as f:
                data = _parse(f.read())
        except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"landscape file {p} is not (gzipped) JSON: {exc}") from None
        for required in ("tune_params_keys", "tune_params", "cache"):
            if required not in data:
                raise NotALandscape(f"landscape file {p} lacks {required!r}; is it a Kernel Tuner cache file?")
        name = p.name.removesuffix(".gz").removesuffix(".json")
        return cls(data, name=f"{p.parent.name}/{name}" if p.parent.name else name)

    # --- queries ---------------------------------------------------------------------------
    @property
    def device_label(self) -> str:
        return self.hardware.name

    def _listed(self) -> list[Mapping[str, Value]]:
        """The recorded configs in the Cartesian order (what walking the product would yield)."""
        if self._in_order is None:
            index = [{v: i for i, v in enumerate(self.domains[k])} for k in self.keys]
            # A value outside its declared domain (a hand-edited file) sorts last instead of raising.
            self._in_order = sorted((e.values for e in self.entries.values()),
                                    key=lambda c: [ix.get(c[k], len(ix)) for ix, k in zip(index, self.keys, strict=True)])
        return self._in_order

    def _recorded(self, values: Mapping[str, Value]) -> str | None:
        return None if config_key(values) in self.entries else "not in the recording (invalid on the GPU)"

    def lookup(self, values: Mapping[str, Value]) -> Entry | None:
        """The recorded entry, or None when the config is invalid (absent from the recording)."""
        return self.entries.get(config_key(values))

    def fraction_of_optimum(self, time_ms: float | None) -> float:
        return 0.0 if time_ms is None else self.optimum_ms / time_ms

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def group(self) -> str:
        """Identifies this problem instance (one GPU, one kernel, one problem)."""
        problem = json.dumps(self.spec if self.spec is not None else self.problem_size, sort_keys=True)
        return f"{self.hardware.key}|{self.kernel}|{problem}"

    def records(self) -> list[TuningRecord]:
        problem: dict[str, Any] = dict(self.spec) if self.spec else {"problem_size": self.problem_size}
        return [
            TuningRecord(
                hardware=self.hardware,
                kernel=self.kernel,
                problem=problem,
                config=dict(e.values),
                time_ms=e.time_ms,
                status=e.status,
                group=self.group,
            )
            for e in self.entries.values()
        ]


def _parse(text: str) -> Any:
    """JSON, or a Kernel Tuner cache that is still open.

    Kernel Tuner appends one ``"key": {...},`` line per measured config and closes the file only
    when its run ends, so a run that stopped early (or is still going) leaves ``...},`` at the
    end; Kernel Tuner itself reads such files by closing them. A last line cut mid-entry is
    dropped. Anything else is an error (the first one raised).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as first:
        if '"cache"' not in text:
            raise
        body = text.rstrip()
        for attempt in (body, body.rsplit("\n", 1)[0]):  # as written, then without a torn last line
            try:
                return json.loads(attempt.rstrip().rstrip(",") + "}}")
            except json.JSONDecodeError:
                continue
        raise first from None


def _hardware_of(data: Mapping[str, Any], meta: Mapping[str, Any], name: str) -> Hardware:
    if "hardware" in meta:
        return Hardware.from_dict(meta["hardware"])
    # Kernel Tuner files name the device (empty in some AMD files); fall back to the file name.
    label = data.get("device_name") or name.rsplit("/", 1)[-1]
    spec = device_spec(label)
    if spec is None:
        return Hardware(name=label, backend="recorded", compute_capability="", sm_count=0, smem_per_block=0, triton_version="n/a")
    return Hardware.from_spec(spec.name, triton_version="n/a")


class NotALandscape(ValueError):
    """A JSON file that is not a Kernel Tuner cache file (e.g. a GPU run's bench results)."""


def load_landscapes(paths: Iterable[str | Path]) -> list[Landscape]:
    """Load many files; directories are searched recursively for ``*.json.gz`` and ``*.json``.

    Inside a directory, JSON files that are not landscapes (a GPU run folder also holds its
    benchmark results) are skipped; a file named explicitly must be a landscape.
    """
    out: list[Landscape] = []
    for path in paths:
        p = Path(path)
        if not p.is_dir():
            out.append(Landscape.load(p))
            continue
        found = []
        for f in sorted(f for f in p.rglob("*.json*") if f.name.endswith((".json.gz", ".json"))):
            try:
                found.append(Landscape.load(f))
            except NotALandscape:
                continue
        if not found:
            raise ValueError(f"directory {p} holds no *.json.gz or *.json landscape files")
        out.extend(found)
    return out


def write_landscape(
    path: str | Path,
    *,
    kernel: str,
    kernel_name: str,
    spec: Mapping[str, Any] | None,
    hardware: Hardware,
    params: Mapping[str, tuple[Value, ...]],
    results: Iterable[tuple[Mapping[str, Value], float | None, str | None, Mapping[str, float]]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a landscape in the Kernel Tuner cache format (plus the ``tritune`` block).

    ``results`` yields (config values, time in ms or None, error text or None, cost fields such as
    ``compile_time`` in ms). Kernel Tuner tools read the file as it is.
    """
    keys = list(params)
    cache: dict[str, Any] = {}
    for values, time_ms, error, costs in results:
        entry: dict[str, Any] = {k: values[k] for k in keys}
        entry["time"] = time_ms if time_ms is not None else (error or "RuntimeFailedConfig")
        entry.update({k: float(v) for k, v in costs.items()})
        cache[",".join(str(values[k]) for k in keys)] = entry
    data = {
        "device_name": hardware.name,
        "kernel_name": kernel_name,
        "problem_size": list((spec or {}).values()),
        "tune_params_keys": keys,
        "tune_params": {k: list(v) for k, v in params.items()},
        "objective": "time",
        "tritune": {"kernel": kernel, "spec": dict(spec) if spec else None, "hardware": hardware.to_dict(), **(extra or {})},
        "cache": cache,
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "wt") as f:
        json.dump(data, f)
    return p
