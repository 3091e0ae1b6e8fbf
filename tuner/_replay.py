"""The replay backend: measurements answered from a recorded landscape.

Kernel Tuner cache files and tritune's own GPU landscapes both work. A config absent from the
recording is INVALID at no cost; one the recording marks failed is FAILED and costs an
evaluation; an OK config returns the recorded time and what measuring it cost (``cost_ms``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence

from tritune.search_space import Landscape, Value
from tritune.tuner._backend import MeasureBackend, MeasureResult, Problem, Status


def landscape_problem(landscape: Landscape) -> Problem:
    """The tuning problem a landscape file records (its space, GPU and problem size)."""
    problem = landscape.spec if landscape.spec is not None else {"problem_size": landscape.problem_size}
    bucket = f"{landscape.kernel}|{json.dumps(problem, sort_keys=True, separators=(',', ':'))}"
    return Problem(kernel=landscape.kernel, space=landscape.space, hardware=landscape.hardware, bucket=bucket,
                   spec=None, kernel_hash="recorded", label=landscape.name)


class ReplayBackend(MeasureBackend):
    """Answers from recorded landscapes, matched to problems by (hardware, bucket).

    ``simulate_cost`` > 0 sleeps ``cost_ms * simulate_cost`` per evaluation, so tests and demos
    can exercise wall-clock budgets, kills and concurrent workers at a chosen speed.
    """

    name = "replay"
    real_timing = True

    def __init__(self, landscapes: Iterable[Landscape], *, simulate_cost: float = 0.0) -> None:
        self._by_key: dict[tuple[str, str], Landscape] = {}
        for landscape in landscapes:
            p = landscape_problem(landscape)
            key = (p.hardware.key, p.bucket)
            if key in self._by_key:
                raise ValueError(f"two landscapes record the same problem: {self._by_key[key].name} and {landscape.name}")
            self._by_key[key] = landscape
        self.simulate_cost = simulate_cost
        self._closed = False

    def landscape(self, problem: Problem) -> Landscape:
        try:
            return self._by_key[(problem.hardware.key, problem.bucket)]
        except KeyError:
            raise ValueError(f"no recorded landscape for problem {problem.name} on {problem.hardware.name}") from None

    def measure(self, problem: Problem, configs: Sequence[Mapping[str, Value]]) -> list[MeasureResult]:
        if self._closed:
            raise RuntimeError("the replay backend was closed")
        landscape = self.landscape(problem)
        out = []
        for config in configs:
            reasons = problem.space.validate(config)
            entry = None if reasons else landscape.lookup(config)
            if entry is None:
                out.append(MeasureResult(Status.INVALID, error="; ".join(reasons) or "not in the recording"))
                continue
            if self.simulate_cost > 0:
                time.sleep(entry.cost_ms / 1000.0 * self.simulate_cost)
            if entry.time_ms is None:
                out.append(MeasureResult(Status.FAILED, error=entry.error or "failed", cost_ms=entry.cost_ms))
            else:
                out.append(MeasureResult(Status.OK, time_ms=entry.time_ms, times_ms=(entry.time_ms,),
                                         cost_ms=entry.cost_ms, real_timing=True))
        return out

    def close(self) -> None:
        self._closed = True
