"""``tune``: search each problem's space within a budget, storing every trial as it finishes.

For each problem: open (or resume) its study, finish the trials a killed run left behind, seed it
(advisor proposals and the family's default config, ranked by the cost model when given), add
earlier measurements of the same problem as warm-start trials, then ask/measure/tell until the
budget is spent. Each result goes to the tuning database first (trial uid ``study#number``, so
a trial is stored once), then to the study, so a SIGKILL at any moment loses at most the
measurements in flight and never causes a finished one to be measured again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tritune.db import Trial, TuningDB
from tritune.search_space import Value, config_key
from tritune.tuner._adapter import StrategySampler
from tritune.tuner._backend import MeasureBackend, MeasureResult, Problem, Status
from tritune.tuner._optuna_strategy import OptunaStrategy
from tritune.tuner._progress import ProblemProgress
from tritune.tuner._storage import (
    make_storage,
    open_study,
    recover_stale_trials,
    study_name,
    worker_id,
)
from tritune.tuner._strategies import DEFAULT_STRATEGY, get_strategy
from tritune.tuner._strategy import StrategyContext
from tritune.tuner._study import (
    Pending,
    SpaceCodec,
    StudyDriver,
    config_from_trial,
    evaluated,
    result_from_trial,
)


@dataclass(frozen=True)
class Budget:
    """Per problem: ``trials`` real measurements in the whole study (every worker together; a
    global cap), and/or ``seconds`` of wall time for this process. None means no limit.

    ``patience``: stop once that many measurements in a row (by this process) did not improve the
    best time by at least ``min_gain`` (a share: 0.01 = 1%): "until the search stops improving".
    ``total_seconds``: one wall-clock cap for the whole ``tune`` call, shared by its problems (each
    starts with an equal share of what is left); it is checked before every measurement, so a
    measurement in flight may finish past it by at most the backend's per-config timeout.
    """

    trials: int | None = 20
    seconds: float | None = None
    patience: int | None = None
    min_gain: float = 0.01
    total_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.trials is None and self.seconds is None and self.patience is None and self.total_seconds is None:
            raise ValueError("a budget needs trials, seconds, patience or total_seconds (at least one)")
        if self.trials is not None and self.trials < 1:
            raise ValueError(f"budget trials={self.trials} must be at least 1")
        for name in ("seconds", "total_seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"budget {name}={value} must be positive")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"budget patience={self.patience} must be at least 1")
        if not 0.0 <= self.min_gain < 1.0:
            raise ValueError(f"budget min_gain={self.min_gain} must be within [0, 1)")


# --effort: how long the default search runs, as a share of the default trial budget.
EFFORTS = ("quick", "default", "full")


def effort_budget(effort: str, default_trials: int, *, seconds: float | None = None) -> Budget:
    """The budget of an effort level, given the trial budget "default" means here.

    - quick: a quarter of the default budget (at least 4): the learned parts' best few, refined
      briefly;
    - default: ``default_trials``;
    - full: no trial cap; stops after ``max(20, default_trials)`` measurements in a row without a
      1% gain (or when the space is exhausted, or at ``seconds``).
    ``seconds`` (``--time-budget``) is a hard cap on the whole job at every level.
    """
    if effort not in EFFORTS:
        raise ValueError(f"effort={effort!r} is not one of {', '.join(EFFORTS)}")
    if default_trials < 1:
        raise ValueError(f"default_trials={default_trials} must be at least 1")
    if effort == "quick":
        return Budget(trials=max(4, round(default_trials / 4)), total_seconds=seconds)
    if effort == "full":
        return Budget(trials=None, patience=max(20, default_trials), total_seconds=seconds)
    return Budget(trials=default_trials, total_seconds=seconds)


@dataclass
class ProblemReport:
    """What tuning one problem did. Times are ms; ``real_timing`` False means interpreter wall time."""

    problem: Problem
    study: str
    strategy: str
    evaluations: int = 0  # real measurements in the study (all workers, all runs)
    measured_here: int = 0  # measurements made by this call
    statuses: dict[str, int] = field(default_factory=dict)  # by this call, INVALID included
    best_config: dict[str, Value] | None = None
    best_ms: float | None = None
    default_config: dict[str, Value] | None = None
    default_ms: float | None = None
    curve: list[tuple[int, float | None]] = field(default_factory=list)  # (evaluation, best so far)
    wall_s: float = 0.0
    stopped: str = ""
    recovered: dict[str, int] = field(default_factory=dict)
    warm_started: int = 0
    real_timing: bool = True
    strategy_detail: str = ""  # what the strategy ran with (e.g. the pipeline's learned parts)
    time_to_best_s: float | None = None  # wall time of this call until its best measurement arrived
    optimum_ms: float | None = None  # the space's measured optimum, where it was measured exhaustively

    @property
    def fraction_of_optimum(self) -> float | None:
        """optimum time / best time found, where the optimum is known (replayed landscapes)."""
        if self.optimum_ms and self.best_ms:
            return self.optimum_ms / self.best_ms
        return None

    @property
    def failures(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in (Status.OK.value, Status.INVALID.value))

    @property
    def speedup_vs_default(self) -> float | None:
        if self.best_ms and self.default_ms:
            return self.default_ms / self.best_ms
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem.name, "kernel": self.problem.kernel, "bucket": self.problem.bucket,
            "hardware": self.problem.hardware.key, "study": self.study, "strategy": self.strategy,
            "evaluations": self.evaluations, "measured_here": self.measured_here, "statuses": self.statuses,
            "best_config": self.best_config, "best_ms": self.best_ms, "default_config": self.default_config,
            "default_ms": self.default_ms, "speedup_vs_default": self.speedup_vs_default,
            "real_timing": self.real_timing, "wall_s": round(self.wall_s, 2), "stopped": self.stopped,
            "strategy_detail": self.strategy_detail,
            "time_to_best_s": None if self.time_to_best_s is None else round(self.time_to_best_s, 2),
            "optimum_ms": self.optimum_ms, "fraction_of_optimum": self.fraction_of_optimum,
            "recovered_trials": self.recovered, "warm_started": self.warm_started,
            "curve": [{"evaluation": n, "best_ms": b} for n, b in self.curve],
        }


@dataclass
class TuneReport:
    backend: str
    real_timing: bool
    db_path: str
    storage: str
    problems: list[ProblemReport] = field(default_factory=list)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "real_timing": self.real_timing, "db": self.db_path, "storage": self.storage,
                "wall_s": round(self.wall_s, 2),
                "timing_note": None if self.real_timing else
                "CPU interpreter wall times: they rank configs on this machine only and are not GPU timings",
                "problems": [p.to_json() for p in self.problems]}


def tune(problems: Sequence[Problem], backend: MeasureBackend, *, budget: Budget = Budget(),
         strategy: str = "default", seed: int = 0, db: TuningDB | str | None = None, storage: str | None = None,
         advisor: Any = None, cost_model: Any = None, n_advisor_seeds: int = 8, warm_start: bool = True,
         options: Mapping[str, Any] | None = None, progress: bool = True, stale_after_s: float = 3600.0,
         study_prefix: str = "tritune",
         on_result: Callable[[Problem, Mapping[str, Value], MeasureResult], None] | None = None,
         stop_when: Callable[[ProblemReport], bool] | None = None) -> TuneReport:
    """Tune every problem with ``backend``; returns what was found. See the module docstring.

    ``advisor`` (an ``llm_advisor.Advisor``) proposes seeds; ``cost_model`` (a
    ``cost_model.CostModel``) ranks them and is handed to strategies that use one (through
    ``StrategyContext.options['cost_model']``). ``storage`` is an Optuna storage URL shared by
    several workers (default: a journal file next to the database). Studies are named from
    ``study_prefix`` and the problem, so the same call resumes them; a new prefix starts over.
    The runtime sits above the tuner: call ``tritune.runtime.reload()`` afterwards for this
    process's ops to pick the new configs up (``tritune tune`` does). ``stop_when(report)`` is asked
    after every measurement; True ends that problem (e.g. a target time reached: the GPU suite).
    """
    strategy_name = DEFAULT_STRATEGY if strategy == "default" else strategy
    get_strategy(strategy_name)  # unknown names fail before anything runs
    own_db = not isinstance(db, TuningDB)
    tdb = TuningDB(db) if own_db else db
    started = time.monotonic()
    report = TuneReport(backend=backend.name, real_timing=backend.real_timing, db_path=str(tdb.path),
                        storage=storage or f"{tdb.path}.optuna.journal")
    try:
        optuna_storage = make_storage(storage, tdb.path)
        for i, problem in enumerate(problems):
            # Workers sharing a study must not all propose the same sequence: mix in the worker.
            job_seed = seed if storage is None else _worker_seed(seed)
            job = _ProblemJob(problem, backend, tdb, optuna_storage, strategy=strategy_name, seed=job_seed,
                              study_prefix=study_prefix,
                              budget=_share(budget, started, len(problems) - i), advisor=advisor,
                              cost_model=cost_model, n_advisor_seeds=n_advisor_seeds,
                              warm_start=warm_start, options=options or {}, progress=progress,
                              stale_after_s=stale_after_s, on_result=on_result, stop_when=stop_when)
            report.problems.append(job.run())
    finally:
        if own_db:
            tdb.close()
    report.wall_s = time.monotonic() - started
    return report


def _share(budget: Budget, started: float, left: int) -> Budget:
    """This problem's budget: its equal share of what is left of ``total_seconds``."""
    if budget.total_seconds is None:
        return budget
    import dataclasses

    share = max(1e-3, (budget.total_seconds - (time.monotonic() - started)) / max(1, left))
    return dataclasses.replace(budget, seconds=share if budget.seconds is None else min(budget.seconds, share))


def _worker_seed(seed: int) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}|{worker_id()}".encode()).digest()[:4], "little") & 0x7FFFFFFF


class _ProblemJob:
    """The ask/measure/record/tell loop of one problem."""

    def __init__(self, problem: Problem, backend: MeasureBackend, db: TuningDB, storage: Any, *, strategy: str,
                 seed: int, study_prefix: str, budget: Budget, advisor: Any, cost_model: Any, n_advisor_seeds: int, warm_start: bool,
                 options: Mapping[str, Any], progress: bool, stale_after_s: float,
                 on_result: Callable[..., None] | None, stop_when: Callable[[ProblemReport], bool] | None = None) -> None:
        self.problem, self.backend, self.db, self.budget = problem, backend, db, budget
        self.on_result = on_result
        self.stop_when = stop_when
        self.name = study_name(problem, strategy=strategy, backend=backend.name, prefix=study_prefix)
        self.report = ProblemReport(problem, self.name, strategy, real_timing=backend.real_timing)
        self.default = _default_config(problem)
        self.report.default_config = self.default
        seeds = self._seeds(advisor, cost_model, n_advisor_seeds)
        cls = get_strategy(strategy)
        context = StrategyContext(
            hardware=problem.hardware, kernel=problem.kernel, problem=_problem_dict(problem),
            train_records=tuple(self._train_records()) if cls.learns else (), seeds=tuple(seeds),
            options={**options, "cost_model": cost_model, "advisor": advisor},
        )
        self.strategy = cls(problem.space, context, seed=seed)
        codec = self.strategy.codec if isinstance(self.strategy, OptunaStrategy) else SpaceCodec(problem.space)
        sampler = (self.strategy.make_sampler() if isinstance(self.strategy, OptunaStrategy)
                   else StrategySampler(self.strategy, codec, seed=seed))
        self.study = open_study(storage, self.name, sampler, problem)
        self.driver = (self.strategy.make_driver(self.study, worker=worker_id())
                       if isinstance(self.strategy, OptunaStrategy)
                       else StudyDriver(self.study, problem.space, codec=codec, seed=seed, worker=worker_id()))
        self.stale_after_s = stale_after_s
        self.report.recovered = recover_stale_trials(self.driver, db, self.name, stale_after_s=stale_after_s)
        self.driver.refresh()
        self.driver.enqueue(self.strategy.initial_configs() if isinstance(self.strategy, OptunaStrategy) else seeds)
        if warm_start:
            self.report.warm_started = self.driver.warm_start(self._earlier_measurements())
        self.concurrent = bool(getattr(self.strategy, "concurrent", False))
        describe = getattr(self.strategy, "describe", None)
        self.report.strategy_detail = describe() if callable(describe) else ""
        landscape = getattr(backend, "landscape", None)
        if callable(landscape):  # a replayed recording: its optimum is known
            try:
                self.report.optimum_ms = landscape(problem).optimum_ms
            except ValueError:
                pass
        self._started = time.monotonic()
        self._since_gain = 0
        self.progress = ProblemProgress(problem.name, budget.trials, enabled=progress,
                                        real_timing=backend.real_timing)

    # --- setup -------------------------------------------------------------------------------
    def _seeds(self, advisor: Any, cost_model: Any, k: int) -> list[dict[str, Value]]:
        p = self.problem
        seeds: list[dict[str, Value]] = []
        if advisor is not None and k > 0:
            for proposal in advisor.propose(p.hardware, p.kernel, _problem_dict(p), p.space, k):
                seeds.append(dict(proposal.config))
        if self.default is not None:
            seeds.append(dict(self.default))
        seeds = [s for s in {config_key(s): s for s in seeds}.values() if p.space.is_valid(s)]
        if cost_model is not None and len(seeds) > 1:
            scores = cost_model.predict(p.hardware, p.kernel, _problem_dict(p), p.space, seeds)
            seeds = [s for _, s in sorted(zip(list(scores), seeds, strict=True), key=lambda t: t[0])]
        return seeds

    def _train_records(self) -> list[Any]:
        group = f"{self.problem.hardware.key}|{self.problem.kernel}|{self.problem.bucket}"
        return [r for r in self.db.records(kernel=self.problem.kernel) if r.group != group]

    def _earlier_measurements(self) -> list[tuple[dict[str, Value], MeasureResult]]:
        """This problem's trials from other studies (another strategy, an older run), same backend."""
        p = self.problem
        out = []
        for row in self.db.trials(hardware=p.hardware.key, kernel=p.kernel, bucket=p.bucket):
            if row["study"] == self.name or row["kernel_hash"] != p.kernel_hash or row["backend"] != self.backend.name:
                continue
            result = MeasureResult(Status(row["status"]), time_ms=row["time_ms"], error=row["error"],
                                   cost_ms=row["cost_ms"] or 0.0, real_timing=bool(row["real_timing"]))
            out.append((json.loads(row["config"]), result))
        return out

    # --- loop --------------------------------------------------------------------------------
    def run(self) -> ProblemReport:
        start = self._started = time.monotonic()
        cap = self.budget.trials
        self._sync_report()
        self.progress.start(self.report.evaluations, self.report.best_ms)
        lost = 0
        try:
            while True:
                elapsed = time.monotonic() - start
                if self.budget.seconds is not None and elapsed >= self.budget.seconds:
                    self.report.stopped = "time budget"
                    break
                if self.stop_when is not None and self.stop_when(self.report):
                    self.report.stopped = "stop condition"
                    break
                if self.budget.patience is not None and self._since_gain >= self.budget.patience:
                    self.report.stopped = f"no {self.budget.min_gain:.0%} gain in {self.budget.patience} trials"
                    break
                done, flight = self.driver.counts()
                if cap is not None and done + flight >= cap:
                    self.report.stopped = "trial budget" if flight == 0 else "trial budget (other workers finishing)"
                    break
                room = (cap - done - flight) if cap is not None else self.backend.batch_size
                batch = self._ask(min(room, self.backend.batch_size if self.concurrent else 1), cap)
                if batch is None:  # lost a race for the last slots: wait for the trials ahead
                    lost += 1
                    if lost % 25 == 0:  # ~5 s: trials ahead may belong to a dead worker
                        recover_stale_trials(self.driver, self.db, self.name, stale_after_s=self.stale_after_s)
                    continue
                lost = 0
                if not batch:
                    self.report.stopped = "space exhausted"
                    break
                self._measure(batch)
        finally:
            self.report.wall_s = time.monotonic() - start
            self._sync_report()
            self.progress.close()
        return self.report

    def _ask(self, n: int, cap: int | None) -> list[Pending] | None:
        batch: list[Pending] = []
        for _ in range(max(1, n)):
            pending = self.driver.ask()
            if pending is None:
                break
            if cap is not None and self.driver.over_cap(pending, cap):
                self.driver.abandon(pending, "global trial cap reached by other workers")
                if not batch:
                    time.sleep(0.2)
                    return None
                break
            batch.append(pending)
        return batch

    def _measure(self, batch: list[Pending]) -> None:
        p = self.problem
        for i, result in self.backend.measure_iter(p, [b.config for b in batch]):
            pending = batch[i]
            self.db.record_trial(Trial(
                hardware=p.hardware, kernel=p.kernel, kernel_hash=p.kernel_hash, bucket=p.bucket,
                spec=_problem_dict(p), config=pending.config, status=result.status.value, backend=self.backend.name,
                real_timing=result.real_timing, time_ms=result.time_ms if result.ok else None,
                times_ms=tuple(result.times_ms), compile_ms=result.compile_ms, cost_ms=result.cost_ms,
                error=result.error, study=self.name, trial_number=pending.number,
            ))
            self.driver.tell(pending, result)
            status = result.status.value
            self.report.statuses[status] = self.report.statuses.get(status, 0) + 1
            if result.status.costs_evaluation:
                self.report.measured_here += 1
                self._since_gain += 1
            if result.ok and (self.report.best_ms is None or result.time_ms < self.report.best_ms):  # type: ignore[operator]
                if self.report.best_ms is None or result.time_ms < self.report.best_ms * (1 - self.budget.min_gain):  # type: ignore[operator]
                    self._since_gain = 0
                self.report.best_ms, self.report.best_config = result.time_ms, dict(pending.config)
                self.report.time_to_best_s = time.monotonic() - self._started
            if self.default is not None and config_key(pending.config) == config_key(self.default) and result.ok:
                self.report.default_ms = result.time_ms
            self.progress.update(result, self.report.best_ms, self.report.failures)
            if self.on_result is not None:
                self.on_result(p, pending.config, result)

    def _sync_report(self) -> None:
        """Totals over the whole study (earlier runs and other workers included)."""
        best: tuple[float, dict[str, Value]] | None = None
        curve: list[tuple[int, float | None]] = []
        n = 0
        trials = sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number)
        for t in trials:
            if not evaluated(t):
                continue
            result, config = result_from_trial(t), config_from_trial(t)
            if result is None or config is None:
                continue
            n += 1
            if result.ok and (best is None or result.time_ms < best[0]):  # type: ignore[operator]
                best = (float(result.time_ms), config)  # type: ignore[arg-type]
            curve.append((n, best[0] if best else None))
            if self.default is not None and config_key(config) == config_key(self.default) and result.ok:
                self.report.default_ms = result.time_ms
        self.report.evaluations = n
        self.report.curve = curve
        if best is not None:
            self.report.best_ms, self.report.best_config = best


def _default_config(problem: Problem) -> dict[str, Value] | None:
    if problem.spec is None:
        return None
    try:
        default = problem.space.default()
    except ValueError:
        return None
    return dict(default) if problem.space.is_valid(default) else None


def _problem_dict(problem: Problem) -> dict[str, Any]:
    if problem.spec is not None and hasattr(problem.spec, "to_dict"):
        return problem.spec.to_dict()
    ctx = problem.space.context
    if ctx.get("spec"):
        return dict(ctx["spec"])
    return {"problem_size": ctx.get("problem_size"), "landscape": problem.label}

