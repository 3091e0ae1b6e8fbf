"""Ranking metrics against brute force, with ties and failed configs."""

import itertools
import math

import numpy as np
import pytest
from tritune.cost_model import pairwise_accuracy, peak_at_k, ranking_report


def brute_pairwise(times, scores):
    good = total = 0.0
    for i, j in itertools.combinations(range(len(times)), 2):
        ti, tj = times[i], times[j]
        if ti == tj or (math.isinf(ti) and math.isinf(tj)):
            continue
        total += 1
        si, sj = scores[i], scores[j]
        if si == sj:
            good += 0.5
        elif (ti < tj) == (si < sj):
            good += 1
    return good / total


@pytest.mark.parametrize("seed", range(5))
def test_pairwise_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 60
    times = rng.integers(1, 20, n).astype(float)  # many ties in truth
    times[rng.choice(n, 7, replace=False)] = np.inf  # failed configs
    scores = np.round(times + rng.normal(0, 6, n))  # noisy, with ties in the scores
    scores[np.isinf(scores)] = 100
    assert pairwise_accuracy(times, scores) == pytest.approx(brute_pairwise(times, scores), abs=1e-12)


def test_pairwise_extremes():
    t = np.array([1.0, 2.0, 3.0, np.inf])
    assert pairwise_accuracy(t, np.array([0, 1, 2, 3])) == 1.0
    assert pairwise_accuracy(t, np.array([3, 2, 1, 0])) == 0.0
    assert pairwise_accuracy(t, np.zeros(4)) == 0.5


def test_peak_at_k():
    t = np.array([2.0, 1.0, np.inf, 4.0])
    assert peak_at_k(t, np.array([0, 1, 2, 3]), 1) == 0.5  # top-1 is the 2.0 config
    assert peak_at_k(t, np.array([0, 1, 2, 3]), 2) == 1.0
    assert peak_at_k(t, np.array([1, 2, 0, 3]), 1) == 0.0  # a failed config is never best
    report = ranking_report(t, np.array([3, 0, 1, 2]))
    assert report["peak@1"] == 1.0 and set(report) == {"pairwise_accuracy", "peak@1", "peak@5"}


def test_metrics_need_a_success():
    with pytest.raises(ValueError, match="no successful"):
        pairwise_accuracy(np.array([np.inf, np.inf]), np.array([0.0, 1.0]))
