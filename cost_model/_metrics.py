"""Ranking metrics of a cost model within one problem (TenSet's definitions).

``times`` are true times with failed configs as ``inf`` (slower than everything, never best);
``scores`` are the model's predictions (lower = predicted faster).

- pairwise accuracy: over every pair of configs whose true times differ, the share the model
  orders the same way; a pair the model scores equal counts one half. Pairs of two failed
  configs are ties and do not count.
- peak@k: optimum time / best true time among the model's top-k predictions (1.0 = the top k
  hold the optimum; 0 when all k failed).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import kendalltau


def _finite(times: np.ndarray) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    ok = np.isfinite(t)
    if not ok.any():
        raise ValueError("no successful time among the configs: ranking metrics need at least one")
    # Failed configs tie with each other, after every successful one.
    return np.where(ok, t, t[ok].max() * 2 + 1)


def _tie_pairs(x: np.ndarray) -> float:
    _, counts = np.unique(x, return_counts=True)
    return float((counts * (counts - 1) / 2).sum())


def pairwise_accuracy(times: np.ndarray, scores: np.ndarray) -> float:
    """Share of correctly ordered pairs (exact, O(n log n) through Kendall's tau-b).

    With n0 pairs, n1 tied in truth and n2 tied in the scores, tau-b gives C - D, and the
    accuracy with score ties as one half is 1/2 + (C - D) / (2 (n0 - n1)).
    """
    t = _finite(times)
    s = np.asarray(scores, dtype=np.float64)
    if t.shape != s.shape:
        raise ValueError(f"times {t.shape} and scores {s.shape} differ in shape")
    n = len(t)
    n0 = n * (n - 1) / 2
    n1, n2 = _tie_pairs(t), _tie_pairs(s)
    if n0 - n1 <= 0:
        return math.nan
    if n0 - n2 <= 0:  # every score equal: a coin flip on every pair
        return 0.5
    tau = kendalltau(t, s, variant="b").statistic
    c_minus_d = float(tau) * math.sqrt((n0 - n1) * (n0 - n2))
    return 0.5 + c_minus_d / (2 * (n0 - n1))


def peak_at_k(times: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Optimum / best true time among the ``k`` best-scored configs (ties broken by position)."""
    t = np.asarray(times, dtype=np.float64)
    ok = np.isfinite(t)
    if not ok.any():
        raise ValueError("no successful time among the configs")
    top = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    best = t[top][np.isfinite(t[top])]
    return float(t[ok].min() / best.min()) if len(best) else 0.0


def ranking_report(times: np.ndarray, scores: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    out = {"pairwise_accuracy": pairwise_accuracy(times, scores)}
    for k in ks:
        out[f"peak@{k}"] = peak_at_k(times, scores, k)
    return out
