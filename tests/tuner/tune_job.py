"""A tuning job in its own process, for the kill/resume and many-worker tests.

Replays a recorded landscape through ``tune`` with a measuring delay, and appends every config it
measures to ``--log`` (one line per measure call, written before the result is returned), so a
test can tell exactly which configs a run measured.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping, Sequence

from tritune.search_space import Landscape, config_key
from tritune.tuner import Budget, MeasureResult, Problem, ReplayBackend, landscape_problem, tune


class LoggingReplay(ReplayBackend):
    def __init__(self, landscape: Landscape, log: str, delay: float) -> None:
        super().__init__([landscape])
        self.log, self.delay = log, delay

    def measure(self, problem: Problem, configs: Sequence[Mapping]) -> list[MeasureResult]:
        results = super().measure(problem, configs)
        for config, result in zip(configs, results, strict=True):
            if result.status.costs_evaluation:
                time.sleep(self.delay)
                with open(self.log, "a") as f:
                    f.write(f"{os.getpid()} {config_key(config)}\n")
        return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--landscape", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--storage", default=None)
    ap.add_argument("--strategy", default="default")
    ap.add_argument("--prefix", default="tritune")
    args = ap.parse_args()
    landscape = Landscape.load(args.landscape)
    backend = LoggingReplay(landscape, args.log, args.delay)
    report = tune([landscape_problem(landscape)], backend, budget=Budget(trials=args.budget), db=args.db,
                  storage=args.storage, strategy=args.strategy, progress=False, study_prefix=args.prefix)
    p = report.problems[0]
    print(f"evaluations={p.evaluations} measured_here={p.measured_here} stopped={p.stopped!r}")


if __name__ == "__main__":
    main()
