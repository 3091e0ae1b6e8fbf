"""Strategies: valid proposals, no repeats, reproducible, and the Optuna rules (constraints,
seeds, warm start) on recorded landscapes."""

from __future__ import annotations

import pytest
from tritune.search_space import config_key
from tritune.tuner import (
    STRATEGIES,
    Budget,
    ReplayBackend,
    StrategyContext,
    landscape_problem,
    make_strategy,
    tune,
)

OPTUNA = ("tpe", "random", "cmaes", "gp")


def _drive(landscape, name, n, *, seed=0, seeds=(), options=None):
    """Ask/tell ``n`` times against the landscape; returns the configs asked, in order."""
    problem = landscape_problem(landscape)
    context = StrategyContext(hardware=landscape.hardware, kernel=landscape.kernel, seeds=seeds,
                              options=options or {})
    strategy = make_strategy(name, landscape.space, context, seed=seed)
    backend = ReplayBackend([landscape])
    asked = []
    for _ in range(n):
        config = strategy.ask()
        if config is None:
            break
        asked.append(config)
        strategy.tell(config, backend.measure(problem, [config])[0])
    return asked, strategy


@pytest.mark.parametrize("name", [n for n in STRATEGIES if n != "cmaes"] + ["cmaes"])
def test_proposals_are_valid_new_and_reproducible(small_landscape, name):
    if name == "cmaes":
        pytest.importorskip("cmaes")
    if name == "gp":
        pytest.importorskip("scipy")
    n = 6 if name == "gp" else 10  # GP refits per proposal: slow on two cores
    first, _ = _drive(small_landscape, name, n, seed=3)
    again, _ = _drive(small_landscape, name, n, seed=3)
    assert len(first) == n
    assert all(small_landscape.space.is_valid(c) for c in first), "strategies never hand out invalid configs"
    assert len({config_key(c) for c in first}) == n, "a measured config is never proposed again"
    assert first == again, "same seed, same results: same proposals"


def test_exhaustive_covers_the_valid_space_then_stops(small_landscape):
    asked, strategy = _drive(small_landscape, "exhaustive", 1000)
    assert sorted(map(config_key, asked)) == sorted(config_key(e.values) for e in small_landscape)
    assert strategy.ask() is None


@pytest.mark.parametrize("name", ["tpe", "random", "exhaustive"])
def test_seeds_come_first(small_landscape, name):
    seeds = [{"a": 4, "b": 32, "c": "y"}, {"a": 1, "b": 64, "c": "x"}]
    asked, _ = _drive(small_landscape, name, 3, seeds=seeds)
    assert asked[:2] == seeds


def test_invalid_proposals_are_constraint_violations_not_failures(small_landscape):
    _, strategy = _drive(small_landscape, "tpe", 15)
    trials = strategy.driver.study.get_trials()
    invalid = [t for t in trials if t.user_attrs.get("result", {}).get("status") == "invalid"]
    failed = [t for t in trials if t.user_attrs.get("result", {}).get("status") == "failed"]
    assert invalid, "the small landscape's TPE run proposes some invalid configs"
    for t in invalid + failed:
        assert t.state.name == "COMPLETE" and t.constraints["valid"] > 0 and t.value is not None
    assert all(t.constraints["valid"] == 0 for t in trials if t.user_attrs.get("result", {}).get("status") == "ok")


def test_tune_through_the_strategy_adapter_is_exhaustive(small_landscape, tmp_db):
    report = tune([landscape_problem(small_landscape)], ReplayBackend([small_landscape]), budget=Budget(trials=100),
                  strategy="exhaustive", db=tmp_db, progress=False)
    p = report.problems[0]
    assert p.stopped == "space exhausted" and p.evaluations == len(small_landscape)
    assert p.best_ms == pytest.approx(small_landscape.optimum_ms)


def test_warm_start_reuses_other_studies_measurements(small_landscape, tmp_db):
    problem, backend = landscape_problem(small_landscape), ReplayBackend([small_landscape])
    first = tune([problem], backend, budget=Budget(trials=8), strategy="random", db=tmp_db, progress=False)
    measured = []
    second = tune([problem], backend, budget=Budget(trials=8), strategy="tpe", db=tmp_db, progress=False,
                  on_result=lambda _p, config, _r: measured.append(config_key(config)))
    assert second.problems[0].warm_started == first.problems[0].evaluations == 8
    from tritune.db import TuningDB

    with TuningDB(tmp_db) as db:
        earlier = {r["config_key"] for r in db.trials(study=first.problems[0].study)}
    assert measured and not earlier & set(measured), "warm-start configs are never measured again"
