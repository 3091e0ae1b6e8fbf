"""Effort levels, the hard time cap, and what the summary says (strategy, time to best, of optimum)."""

from __future__ import annotations

import json

import pytest
from tritune.cli import main
from tritune.tuner import Budget, ReplayBackend, effort_budget, landscape_problem, tune
from tuner_helpers import CONV


def test_effort_levels():
    assert effort_budget("quick", 50) == Budget(trials=12)
    assert effort_budget("quick", 10) == Budget(trials=4)
    assert effort_budget("default", 10, seconds=30) == Budget(trials=10, total_seconds=30)
    full = effort_budget("full", 10)
    assert full.trials is None and full.patience == 20
    with pytest.raises(ValueError, match="effort='fast'"):
        effort_budget("fast", 10)
    with pytest.raises(ValueError, match="patience"):
        Budget(trials=None, patience=0)


def test_full_effort_stops_when_the_search_stops_improving(small_landscape, tmp_db):
    with ReplayBackend([small_landscape]) as backend:
        report = tune([landscape_problem(small_landscape)], backend, budget=Budget(trials=None, patience=4),
                      strategy="random", db=str(tmp_db), progress=False)
    p = report.problems[0]
    assert p.stopped.startswith("no 1% gain in 4") or p.stopped == "space exhausted"
    curve = [b for _, b in p.curve]
    if p.stopped.startswith("no"):
        assert len(set(curve[-4:])) == 1 and len(curve) < len(small_landscape)


def test_time_cap_is_shared_by_the_problems(small_landscape, tmp_db):
    with ReplayBackend([small_landscape], simulate_cost=1.0) as backend:  # ~0.11 s per evaluation
        report = tune([landscape_problem(small_landscape)], backend, budget=Budget(trials=None, total_seconds=0.5),
                      strategy="random", db=str(tmp_db), progress=False)
    p = report.problems[0]
    assert p.stopped == "time budget" and 0 < p.measured_here < len(small_landscape)
    assert report.wall_s < 0.5 + 0.5  # checked before every measurement: at most one in flight past it


def test_replay_summary_names_the_strategy_and_the_fraction_of_optimum(small_landscape, tmp_db):
    with ReplayBackend([small_landscape]) as backend:
        report = tune([landscape_problem(small_landscape)], backend, budget=Budget(trials=6), db=str(tmp_db),
                      progress=False)
    p = report.problems[0]
    assert p.strategy == "pipeline" and p.strategy_detail.startswith("cost model")
    assert p.optimum_ms == small_landscape.optimum_ms
    assert p.fraction_of_optimum == pytest.approx(small_landscape.optimum_ms / p.best_ms)
    assert p.time_to_best_s is not None and 0 <= p.time_to_best_s <= p.wall_s
    data = p.to_json()
    assert {"strategy_detail", "time_to_best_s", "fraction_of_optimum"} <= set(data)


def test_cli_effort_quick_and_the_printed_summary(capsys, tmp_db):
    argv = ["tune", "--landscape", str(CONV / "A4000.json.gz"), "--effort", "quick", "--db", str(tmp_db),
            "--no-progress"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["problems"][0]
    assert data["evaluations"] == 12 and data["strategy"] == "pipeline"  # a quarter of the replay default of 50
    assert main([*argv, "--study-prefix", "again"]) == 0
    out = capsys.readouterr().out
    assert "strategy pipeline (cost model + advisor as a ranking member)" in out
    assert "of optimum" in out and "to best" in out


def test_cli_time_budget_alone_runs_until_it_is_spent(capsys, tmp_db):
    argv = ["tune", "--landscape", str(CONV / "A4000.json.gz"), "--time-budget", "3", "--strategy", "random",
            "--db", str(tmp_db), "--no-progress", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)["problems"][0]
    assert data["stopped"] == "time budget" and data["evaluations"] >= 1  # no trial cap ended it


def test_bench_search_ablation_table(capsys):
    argv = ["bench-search", "--landscape", str(CONV / "A4000.json.gz"), "--strategy", "random", "--ablation",
            "--budget", "2", "3", "--repeats", "1", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "default-no-advisor" in out and "advisor's share of the gain" in out and "default = pipeline" in out
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["default_strategy"] == "pipeline" and [a["budget"] for a in data["ablation"]] == [2, 3]
