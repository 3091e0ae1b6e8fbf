"""The package's built-in tuned table, filled from the project's committed GPU runs.

``promote_runs(["data/gpu_runs"])`` reads every recorded landscape under the given folders (the
GPU suite's ``landscapes/*.json.gz``) and keeps, per (hardware, kernel, kernel source hash, shape
bucket), the fastest verified config (a landscape records a time only for configs whose output
matched the reference). CPU-interpreter recordings are never promoted: their times are not GPU
times. The table is rebuilt from the runs alone (``merge`` keeps the rows already in it), with
rows sorted and no timestamps, so rerunning the command on the same runs changes nothing.

Rows keep the kernel source hash they were measured with; the runtime serves rows of an older
source only under its ``builtin-older-kernel`` rule, after re-validating them (see
``tritune.runtime``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

FORMAT = "tritune-best/1"


@dataclass
class PromoteReport:
    """What ``promote_runs`` did: the table written, its rows, and the files it skipped (why)."""

    table: Path
    rows: int = 0
    landscapes: int = 0
    changed: int = 0  # rows added or changed against the table as it was
    skipped: list[tuple[str, str]] = field(default_factory=list)


def default_table_path() -> Path:
    """The package's ``data/builtin_tuned.json`` (in a source checkout: ``tritune_root/data``)."""
    from tritune.runtime import BUILTIN_TABLE

    return Path(str(resources.files("tritune").joinpath("data", BUILTIN_TABLE)))


def promote_runs(paths: Sequence[str | Path], table_path: str | Path | None = None, *,
                 merge: bool = False) -> PromoteReport:
    """Best verified GPU config of every landscape under ``paths`` -> the built-in table."""
    from tritune.search_space import Landscape, spec_from_dict

    table = Path(table_path) if table_path is not None else default_table_path()
    report = PromoteReport(table)
    before = {_key(r): r for r in json.loads(table.read_text()).get("rows", [])} if table.exists() else {}
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = dict(before) if merge else {}
    for f in _landscape_files(paths):
        try:
            ls = Landscape.load(f)
        except (ValueError, KeyError, OSError) as exc:
            report.skipped.append((str(f), f"not a landscape ({exc})"))
            continue
        meta = ls.raw_meta.get("tritune") or {}
        if not meta.get("real_timing") or ls.hardware.is_interpreter:
            report.skipped.append((str(f), "not GPU timings"))
            continue
        if not ls.spec or not meta.get("kernel_hash"):
            report.skipped.append((str(f), "no tritune problem spec or kernel hash (not a tritune GPU run)"))
            continue
        timed = [e for e in ls if e.time_ms is not None]
        if not timed:
            report.skipped.append((str(f), "no verified config"))
            continue
        report.landscapes += 1
        spec = spec_from_dict(ls.kernel, ls.spec)
        best = min(timed, key=lambda e: e.time_ms)  # type: ignore[arg-type,return-value]
        row = {"hardware": ls.hardware.to_dict(), "kernel": ls.kernel, "kernel_hash": meta["kernel_hash"],
               "bucket": spec.bucket().key, "spec": spec.to_dict(), "config": dict(best.values),
               "time_ms": best.time_ms, "backend": "gpu", "real_timing": True,
               "source": f"{_relative(f)} ({meta.get('date', '?')}, {len(ls)}/{meta.get('valid_configs', len(ls))} "
                         "configs measured)"}
        key = _key(row)
        if key not in rows or rows[key]["time_ms"] > row["time_ms"]:
            rows[key] = row
    ordered = sorted(rows.values(), key=lambda r: (r["kernel"], r["bucket"], json.dumps(r["hardware"], sort_keys=True),
                                                   r["kernel_hash"]))
    table.parent.mkdir(parents=True, exist_ok=True)
    tmp = table.with_name(f".{table.name}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "exported_at": None, "rows": ordered}, indent=1) + "\n")
    tmp.replace(table)
    report.rows = len(ordered)
    report.changed = sum(before.get(k) != r for k, r in rows.items())
    return report


def _landscape_files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ValueError(f"GPU run path {p} does not exist; pass run folders such as data/gpu_runs/*")
        out.extend([p] if p.is_file() else sorted(p.rglob("*.json.gz")))
    return sorted(dict.fromkeys(out))


def _key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (json.dumps(row["hardware"], sort_keys=True), row["kernel"], row["kernel_hash"], row["bucket"])


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name
