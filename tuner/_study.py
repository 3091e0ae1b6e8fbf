"""Optuna glue shared by the Optuna strategies and by ``tune``.

One rule set for every sampler: the study's objective is ``ln(time_ms)`` (scale free, so TPE,
GP and CMA-ES all see the same landscape); a config the space rejects, or one that failed to
measure, is told as a *completed* trial with a positive ``valid`` constraint and a penalty value,
so samplers learn to avoid its region instead of re-proposing it (FAIL trials are ignored by
samplers). A config already measured is never measured again: the sampler is told the known
result under a new trial number and asked again.

Every trial carries the user attributes from which any process rebuilds the results from the
study alone (resume, other workers, ``optuna-dashboard``): ``config`` (the real parameter values;
trial params hold encoded ones), ``result`` (status, time_ms, error, cost_ms, evaluated: True when
it cost a real measurement) and, while being measured, ``inflight`` (key and owning worker).
Attributes are grouped because each write is a storage round trip (an fsync on journal files).
"""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from tritune.search_space import SearchSpace, Value, config_key
from tritune.tuner._backend import MeasureResult, Status

CONSTRAINT = "valid"
# ln(ms) given to failed configs before any config has been timed; later failures get the worst
# time seen so far plus ln 2, so the penalty stays near the data (GP fits it as a value).
_FIRST_PENALTY = math.log(1e4)
_ERROR_CHARS = 2000


class SpaceCodec:
    """Maps a SearchSpace onto Optuna distributions and back.

    ``ordinal`` True turns numeric parameters with three or more values into an index over the
    sorted domain (``IntDistribution``), so samplers can exploit that neighbouring values behave
    alike; otherwise every parameter is categorical (what TPE does best on tile-size spaces,
    measured with bench-search).
    """

    def __init__(self, space: SearchSpace, *, ordinal: bool = False) -> None:
        self.space = space
        self.ordinal = ordinal
        self._domains: dict[str, tuple[Value, ...]] = {}
        self.distributions: dict[str, BaseDistribution] = {}
        for p in space.params:
            if ordinal and p.is_numeric and len(p.values) >= 3:
                values = tuple(sorted(p.values))
                self._domains[p.name] = values
                self.distributions[p.name] = IntDistribution(0, len(values) - 1)
            else:
                self.distributions[p.name] = CategoricalDistribution(p.values)

    def decode(self, params: Mapping[str, Any]) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for name in self.space.names:
            v = params[name]
            out[name] = self._domains[name][int(v)] if name in self._domains else v
        return out

    def encode(self, config: Mapping[str, Value]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.space.names:
            v = config[name]
            out[name] = self._domains[name].index(v) if name in self._domains else v
        return out


def objective(result: MeasureResult) -> float | None:
    return math.log(result.time_ms) if result.ok and result.time_ms and result.time_ms > 0 else None


def result_attr(result: MeasureResult, *, evaluated: bool, **flags: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"status": result.status.value, "evaluated": evaluated,
                           "real_timing": result.real_timing, "cost_ms": round(float(result.cost_ms), 3)}
    if result.time_ms is not None:
        out["time_ms"] = float(result.time_ms)
    if result.error:
        out["error"] = result.error[:_ERROR_CHARS]
    out.update({k: v for k, v in flags.items() if v})
    return out


def result_from_trial(trial: FrozenTrial) -> MeasureResult | None:
    """The measurement a finished trial recorded (None for a trial without our attributes)."""
    r = trial.user_attrs.get("result")
    if not isinstance(r, Mapping):
        return None
    return MeasureResult(status=Status(r["status"]), time_ms=r.get("time_ms"), error=r.get("error"),
                         cost_ms=float(r.get("cost_ms") or 0.0), real_timing=bool(r.get("real_timing", True)))


def evaluated(trial: FrozenTrial) -> bool:
    """Whether a finished trial cost a real measurement (counts against the budget)."""
    r = trial.user_attrs.get("result")
    return isinstance(r, Mapping) and bool(r.get("evaluated"))


def config_from_trial(trial: FrozenTrial) -> dict[str, Value] | None:
    config = trial.user_attrs.get("config")
    if config is None and isinstance(trial.user_attrs.get("inflight"), Mapping):
        config = trial.user_attrs["inflight"].get("config")
    return dict(config) if config is not None else None


# A RUNNING trial without ``inflight`` is one being checked (ms between ask and the attribute),
# or one whose worker died in that window; past this age it is the latter.
UNCLAIMED_S = 20.0


def unclaimed_and_old(trial: FrozenTrial) -> bool:
    if trial.state is not TrialState.RUNNING or inflight(trial) is not None or trial.datetime_start is None:
        return False
    return (datetime.datetime.now() - trial.datetime_start).total_seconds() > UNCLAIMED_S


def inflight(trial: FrozenTrial) -> Mapping[str, Any] | None:
    """For a RUNNING trial being measured: its key, config and owning worker."""
    value = trial.user_attrs.get("inflight")
    return value if isinstance(value, Mapping) else None


@dataclass
class Pending:
    """A config asked from the study and not yet told."""

    trial: optuna.Trial
    config: dict[str, Value]
    key: str

    @property
    def number(self) -> int:
        return self.trial.number


class StudyDriver:
    """Asks a study for configs that are valid and new; tells it measurements.

    ``ask`` handles the free cases itself: a config the space rejects is told as infeasible
    (INVALID) and a config already measured (by this process, an earlier run or another worker)
    is told its known result; neither reaches the caller. After ``max_skips`` such proposals in a
    row the driver enqueues a random unmeasured valid config, so a sampler that has converged onto
    measured configs cannot stall the search. ``ask`` returns None when every valid config of the
    space has been measured. ``startup`` random valid configs are measured first (counted in real
    evaluations of the whole study, so several workers share one random start).
    """

    def __init__(self, study: optuna.Study, space: SearchSpace, *, codec: SpaceCodec | None = None,
                 seed: int = 0, max_skips: int = 64, worker: str = "", tell_duplicates: bool = True,
                 startup: int = 0) -> None:
        self.study = study
        self.space = space
        self.codec = codec or SpaceCodec(space)
        self.max_skips = max_skips
        self.worker = worker
        self.tell_duplicates = tell_duplicates
        self.startup = startup
        self._rng = random.Random(seed)
        self._measured: dict[str, MeasureResult] = {}  # key -> first result told for it
        self._seen_trials: set[int] = set()
        self._worst_value: float | None = None

    # --- bookkeeping -------------------------------------------------------------------------
    def refresh(self) -> list[tuple[dict[str, Value], MeasureResult, FrozenTrial]]:
        """Read trials finished since the last call (by anyone); returns the new measurements."""
        new = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number in self._seen_trials:
                continue
            self._seen_trials.add(t.number)
            result = result_from_trial(t)
            config = config_from_trial(t)
            if result is None or config is None:
                continue
            self._note(config, result)
            if evaluated(t) or t.user_attrs["result"].get("warm_start"):
                new.append((config, result, t))
        return new

    def _note(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        if result.status is not Status.INVALID:
            self._measured.setdefault(config_key(config), result)
        value = objective(result)
        if value is not None and (self._worst_value is None or value > self._worst_value):
            self._worst_value = value

    def known(self, config: Mapping[str, Value]) -> MeasureResult | None:
        return self._measured.get(config_key(config))

    @property
    def measured_count(self) -> int:
        return len(self._measured)

    def _trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def in_flight_keys(self) -> set[str]:
        return {f["key"] for t in self._trials(TrialState.RUNNING) if (f := inflight(t)) is not None}

    def counts(self) -> tuple[int, int]:
        """(finished real measurements, measurements in flight) over every worker of the study."""
        done = flight = 0
        for t in self._trials(TrialState.COMPLETE, TrialState.RUNNING):
            if t.state is TrialState.COMPLETE:
                done += evaluated(t)
            elif inflight(t) is not None:
                flight += 1
        return done, flight

    def over_cap(self, pending: Pending, cap: int) -> bool:
        """Whether measuring ``pending`` could exceed ``cap`` evaluations in the whole study.

        Trials still running with a lower number come first (even those not yet known to need a
        measurement), so two workers racing for the last slot agree on who gets it.
        """
        done = ahead = 0
        for t in self._trials(TrialState.COMPLETE, TrialState.RUNNING):
            if t.state is TrialState.COMPLETE:
                done += evaluated(t)
            elif t.number < pending.number and not unclaimed_and_old(t):
                ahead += 1
        return done + ahead + 1 > cap

    def _waiting(self) -> bool:
        return bool(self._trials(TrialState.WAITING))

    # --- asking ------------------------------------------------------------------------------
    def ask(self) -> Pending | None:
        self.refresh()
        busy = self.in_flight_keys()
        if self.startup > 0 and sum(self.counts()) < self.startup and not self._waiting():
            config = self._random_unmeasured(busy)
            if config is not None:
                self.study.enqueue_trial(self.codec.encode(config), user_attrs={"startup": True})
        skips = 0
        while True:
            if skips >= self.max_skips:
                config = self._random_unmeasured(busy)
                if config is None:
                    return None
                self.study.enqueue_trial(self.codec.encode(config), user_attrs={"fallback": True})
                skips = 0
            trial = self.study.ask(self.codec.distributions)
            if getattr(self.study.sampler, "exhausted", False):  # a StrategySampler with nothing left
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            config = self.codec.decode(trial.params)
            key = config_key(config)
            reasons = self.space.validate(config)
            if reasons:
                self.finish(trial, config, MeasureResult(Status.INVALID, error="; ".join(reasons)), evaluated=False)
                skips += 1
                continue
            known = self._measured.get(key)
            if known is not None or key in busy:
                # Tell what is known (or, for a config another worker is measuring right now, a
                # neutral failure) so the sampler's history stays complete; nothing is measured.
                if known is not None and self.tell_duplicates:
                    self.finish(trial, config, known, evaluated=False, duplicate=True)
                else:
                    trial.set_user_attr("config", dict(config))
                    self.study.tell(trial, state=TrialState.FAIL)
                skips += 1
                continue
            trial.set_user_attr("inflight", {"key": key, "worker": self.worker, "config": dict(config)})
            pending = Pending(trial, config, key)
            self.refresh()  # a worker may have finished this config since the reads above
            if key in self._measured or self._claimed_elsewhere(trial.number, key):
                # Two workers can pick the same config between reading the in-flight set and
                # claiming it. Each writes its claim, then reads the others': of two racing
                # claims at least one sees the other, so backing off on any sight of another
                # claim means no config is ever measured twice (rarely, both back off).
                self.abandon(pending, "measured or claimed by another worker meanwhile")
                busy.add(key)
                skips += 1
                continue
            return pending

    def _claimed_elsewhere(self, number: int, key: str) -> bool:
        # One read of running *and* finished trials: with two reads (finished, then running) a
        # claim whose trial finished in between was in neither, and two workers measured the same
        # config (the learned pipeline's workers propose identical configs at the same moment).
        return any(t.number != number and (f := inflight(t)) is not None and f["key"] == key
                   for t in self._trials(TrialState.RUNNING, TrialState.COMPLETE))

    def _random_unmeasured(self, busy: set[str]) -> dict[str, Value] | None:
        # Rejection sampling first (cheap on large spaces), enumeration when that keeps missing.
        for values in self.space.sample(self._rng, 64, max_tries=4096):
            key = config_key(values)
            if key not in self._measured and key not in busy:
                return values
        rest = [v for v in self.space if config_key(v) not in self._measured and config_key(v) not in busy]
        return self._rng.choice(rest) if rest else None

    # --- telling -----------------------------------------------------------------------------
    def tell(self, pending: Pending, result: MeasureResult) -> None:
        self.finish(pending.trial, pending.config, result, evaluated=result.status.costs_evaluation)

    def finish(self, trial: optuna.Trial, config: Mapping[str, Value], result: MeasureResult, *,
               evaluated: bool, duplicate: bool = False) -> None:
        """Tell ``trial`` its result: attributes, feasibility constraint, objective value."""
        trial.set_user_attr("config", dict(config))
        trial.set_user_attr("result", result_attr(result, evaluated=evaluated, duplicate=duplicate))
        value = objective(result)
        _set_constraint(trial, 0.0 if value is not None else _violation(result))
        self.study.tell(trial, value if value is not None else self.penalty())
        self._seen_trials.add(trial.number)
        self._note(config, result)

    def abandon(self, pending: Pending, reason: str) -> None:
        """Give a trial back unmeasured (FAIL: samplers ignore it; it never counts)."""
        pending.trial.set_user_attr("abandoned", reason)
        self.study.tell(pending.trial, state=TrialState.FAIL)

    def penalty(self) -> float:
        return _FIRST_PENALTY if self._worst_value is None else self._worst_value + math.log(2.0)

    # --- seeding -----------------------------------------------------------------------------
    def enqueue(self, configs: Iterable[Mapping[str, Value]]) -> int:
        """Queue configs to try first (skipping ones already in the study); returns how many."""
        n = 0
        for config in configs:
            if self.space.is_valid(config) and config_key(config) not in self._measured:
                self.study.enqueue_trial(self.codec.encode(config), skip_if_exists=True)
                n += 1
        return n

    def warm_start(self, measurements: Sequence[tuple[Mapping[str, Value], MeasureResult]]) -> int:
        """Add measurements made elsewhere (earlier studies of the same problem) as finished trials.

        They teach the sampler and are never re-measured, but do not count as evaluations of this
        study (``evaluated`` False, ``warm_start`` True).
        """
        self.refresh()
        trials = []
        for config, result in measurements:
            if config_key(config) in self._measured or self.space.validate(config):
                continue
            value = objective(result)
            violation = 0.0 if value is not None else _violation(result)
            attrs = {"config": dict(config), "result": result_attr(result, evaluated=False, warm_start=True)}
            trials.append(optuna.trial.create_trial(
                params=self.codec.encode(config), distributions=self.codec.distributions,
                value=value if value is not None else self.penalty(), user_attrs=attrs,
                **_constraint_kwargs(violation)))
            self._note(config, result)
        if trials:
            self.study.add_trials(trials)
        self.refresh()
        return len(trials)


def _violation(result: MeasureResult) -> float:
    # Infeasible configs rejected up front and configs that failed on the device are both
    # "don't go there"; failures rank slightly worse since they also cost a measurement.
    return 1.0 if result.status is Status.INVALID else 2.0


def _set_constraint(trial: optuna.Trial, violation: float) -> None:
    if hasattr(trial, "set_constraint"):  # optuna >= 5
        trial.set_constraint(CONSTRAINT, violation)
    else:  # optuna 4: the samplers' constraints_func reads it (sampler_kwargs_for_constraints)
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints", [violation])


def _constraint_kwargs(violation: float) -> dict[str, Any]:
    import inspect

    if "constraints" in inspect.signature(optuna.trial.create_trial).parameters:
        return {"constraints": {CONSTRAINT: violation}}
    return {"system_attrs": {"constraints": [violation]}}


def sampler_kwargs_for_constraints() -> dict[str, Any]:
    """Nothing on optuna >= 5 (samplers read ``set_constraint``); a reader on optuna 4."""
    if hasattr(optuna.trial.Trial, "set_constraint"):
        return {}
    return {"constraints_func": lambda t: t.system_attrs.get("constraints", [0.0])}
