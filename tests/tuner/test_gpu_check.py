"""The GPU acceptance check's bookkeeping, run on a recorded landscape (no GPU needed)."""

from __future__ import annotations

import json

from tritune.tuner import ReplayBackend, landscape_problem
from tritune.tuner.gpu_check import run_check, time_to


def test_check_reports_fraction_and_time_to_target(small_landscape, tmp_path):
    result = run_check(landscape_problem(small_landscape), lambda _s: ReplayBackend([small_landscape]), tmp_path,
                       work=tmp_path / "work", seconds=5, exhaustive_seconds=30, device="replay")
    assert result["exhaustive_complete"] and result["optimum_ms"] == small_landscape.optimum_ms
    assert result["exhaustive"]["fraction_of_optimum"] == 1.0
    default = result["default"]
    assert 0 < default["fraction_of_optimum"] <= 1
    if default["fraction_of_optimum"] >= 0.98:
        assert result["passed"] and default["seconds_to_target"] <= 5
    saved = json.loads((tmp_path / "tune_check.json").read_text())
    assert saved["valid_configs"] == len(small_landscape)
    assert "| default |" in (tmp_path / "tune_check.md").read_text()


def test_time_to_target():
    phase = {"timeline": [{"s": 1.0, "best_ms": 2.0}, {"s": 5.0, "best_ms": 1.01}, {"s": 9.0, "best_ms": 1.0}]}
    assert time_to(phase, 1.0) == 5.0
    assert time_to(phase, 0.5) is None


def test_exhaustive_phase_resumes_across_calls(small_landscape, tmp_path):
    slow = lambda _s: ReplayBackend([small_landscape], simulate_cost=0.1)  # 11 ms per config  # noqa: E731
    problem = landscape_problem(small_landscape)
    first = run_check(problem, slow, tmp_path, work=tmp_path / "w", seconds=0.05, exhaustive_seconds=0.05)
    assert not first["exhaustive_complete"]
    done = first["exhaustive"]["evaluations"]
    second = run_check(problem, slow, tmp_path, work=tmp_path / "w", seconds=0.05, exhaustive_seconds=60)
    assert second["exhaustive_complete"] and second["exhaustive"]["evaluations"] == len(small_landscape) > done
    keys = ("wall_s", "evaluations", "best_ms", "timeline")
    assert [second["default"][k] for k in keys] == [first["default"][k] for k in keys], "the timed phase runs once"
