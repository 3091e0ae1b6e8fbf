"""Shared plumbing of the backends that measure in worker processes (interpreter, gpu)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from tritune.search_space import Value, config_key

from ._backend import MeasureBackend, MeasureResult, Problem, Status
from ._tasks import classify
from ._workers import Outcome


def config_seed(base: int, config: Mapping[str, Value]) -> int:
    """Input seed for verifying one config: fresh per config, reproducible per (run seed, config)."""
    digest = hashlib.sha256(f"{base}|{config_key(config)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def outcome_result(outcome: Outcome, *, real_timing: bool) -> MeasureResult:
    """A worker's outcome as a MeasureResult (crashes and timeouts included)."""
    if outcome.kind == "ok":
        value = outcome.value
        if isinstance(value, MeasureResult):
            return value
        return MeasureResult(Status.RUNTIME_ERROR, error=f"worker returned {type(value).__name__}, not a MeasureResult",
                             cost_ms=outcome.seconds * 1e3, real_timing=real_timing)
    if outcome.kind == "timeout":
        return MeasureResult(Status.TIMEOUT, error=outcome.error, cost_ms=outcome.seconds * 1e3, real_timing=real_timing)
    if outcome.kind == "crashed":
        return MeasureResult(Status.CRASHED, error=outcome.error, cost_ms=outcome.seconds * 1e3, real_timing=real_timing)
    status = classify(type_name=outcome.exception_type or "", message=outcome.error or "")
    return MeasureResult(status, error=outcome.error, cost_ms=outcome.seconds * 1e3, real_timing=real_timing,
                         extra={"traceback": outcome.trace} if outcome.trace else {})


def invalid_results(problem: Problem, configs: Sequence[Mapping[str, Value]]) -> dict[int, MeasureResult]:
    """Configs the space rejects: INVALID at no cost, never sent to a worker."""
    out = {}
    for i, config in enumerate(configs):
        reasons = problem.space.validate(config)
        if reasons:
            out[i] = MeasureResult(Status.INVALID, error="; ".join(reasons))
    return out


class PooledBackend(MeasureBackend):
    """``measure`` in terms of ``measure_iter``; ``close`` idempotent; ``_check_open`` guard."""

    _closed = False

    def measure(self, problem: Problem, configs: Sequence[Mapping[str, Value]]) -> list[MeasureResult]:
        results: dict[int, MeasureResult] = dict(self.measure_iter(problem, configs))
        return [results[i] for i in range(len(configs))]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the {self.name} backend was closed")

    def _check_problem(self, problem: Problem) -> None:
        if problem.spec is None:
            raise ValueError(f"the {self.name} backend measures kernel families; problem {problem.name} has no spec "
                             "(recorded landscapes use the replay backend)")
