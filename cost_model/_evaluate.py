"""Leave-one-GPU-out evaluation on recorded landscapes.

For every landscape file: train a fresh model on the *other* files of the same kernel (never
the held-out one), rank every recorded config of the held-out file, and score the ranking with
the metrics in ``_metrics``. ``shots`` > 0 first tells the model the times of that many random
configs of the held-out file (as a tuner would after measuring them) and scores the ranking of
the remaining configs only. The naive-transfer baseline of the shared landscapes' README (mean
log-rank of a config on the other files) is computed on the same configs for comparison.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from tritune.search_space import Landscape, config_key

from ._base import CostModel
from ._metrics import ranking_report

METRICS = ("pairwise_accuracy", "peak@1", "peak@5")


def naive_transfer_scores(target: Landscape, others: Sequence[Landscape], keys: Sequence[str]) -> np.ndarray:
    """Mean log-rank over ``others`` of each config (a config missing from one counts as its worst)."""
    cols = []
    for other in others:
        t = np.array([np.inf if e.time_ms is None else e.time_ms for e in other.entries.values()])
        ranks = dict(zip(other.entries, np.log(rankdata(t)), strict=True))
        worst = float(np.log(len(t))) if len(t) else 0.0
        cols.append([ranks.get(k, worst) for k in keys])
    return np.mean(np.array(cols), axis=0) if cols else np.zeros(len(keys))


def evaluate_logo(landscapes: Sequence[Landscape], make_model: Callable[[], CostModel], *, shots: int = 0,
                  seed: int = 0, on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Leave-one-GPU-out results: one row per held-out file, plus per-kernel and overall means."""
    if shots < 0:
        raise ValueError(f"shots={shots} must be >= 0")
    rows = []
    for target in landscapes:
        others = [o for o in landscapes if o is not target and o.kernel_name == target.kernel_name]
        if not others:
            raise ValueError(f"{target.name}: no other landscape of kernel {target.kernel_name!r} to train on; "
                             "pass at least two files per kernel")
        start = time.perf_counter()
        model = make_model().fit([r for o in others for r in o.records()])
        fit_s = time.perf_counter() - start
        entries = list(target.entries.values())
        problem = dict(target.spec) if target.spec else {"problem_size": target.problem_size}
        if shots:
            rng = np.random.default_rng(seed)
            picked = set(rng.choice(len(entries), min(shots, len(entries) - 2), replace=False).tolist())
            told = [entries[i] for i in sorted(picked)]
            model.update(target.hardware, target.kernel, problem, target.space,
                         [e.values for e in told], [e.time_ms for e in told])
            entries = [e for i, e in enumerate(entries) if i not in picked]
        times = np.array([np.inf if e.time_ms is None else e.time_ms for e in entries])
        if not np.isfinite(times).any():
            raise ValueError(f"{target.name}: no successful config left to rank (shots={shots})")
        start = time.perf_counter()
        scores = model.predict(target.hardware, target.kernel, problem, target.space, [e.values for e in entries])
        predict_s = time.perf_counter() - start
        naive = naive_transfer_scores(target, others, [config_key(e.values) for e in entries])
        row: dict[str, Any] = {"file": target.name, "kernel": target.kernel, "hardware": target.hardware.name,
                               "train_files": [o.name for o in others], "configs": len(entries), "shots": shots}
        row.update(ranking_report(times, scores))
        row["naive_transfer"] = ranking_report(times, naive)
        row["fit_s"] = round(fit_s, 2)
        row["predict_s"] = round(predict_s, 3)
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return {"definition": _DEFINITION, "shots": shots, "results": rows, "mean": _means(rows),
            "mean_by_kernel": {k: _means([r for r in rows if r["kernel"] == k]) for k in dict.fromkeys(r["kernel"] for r in rows)}}


def _means(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {m: statistics.fmean(r[m] for r in rows) for m in METRICS}
    out["naive_transfer"] = {m: statistics.fmean(r["naive_transfer"][m] for r in rows) for m in METRICS}
    out["files"] = len(rows)
    return out


_DEFINITION = (
    "leave-one-GPU-out: train on the other files of the same kernel, rank every recorded config of the held-out "
    "file (minus the 'shots' configs told to the model first); pairwise_accuracy = share of config pairs with "
    "different true times ordered correctly (failed configs slowest, model ties count 1/2); peak@k = optimum time / "
    "best true time among the model's top k (failed configs never best); naive_transfer = mean log-rank on the "
    "training files"
)
