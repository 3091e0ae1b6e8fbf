"""Shared plumbing of the backends that measure in worker processes (interpreter, gpu).

Both are the same two-stage pipeline: an optional pool of compile workers compiles each config
ahead of time for a GPU target (CPU only; compile errors and shared-memory overflows are found
there, in parallel, and never reach the measuring stage), and a pool of measure workers verifies
and times the configs as their compile finishes. Results are yielded as they complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tritune.search_space import Hardware, Value, config_key
from tritune.tuner._backend import MeasureBackend, MeasureResult, Problem, Status
from tritune.tuner._tasks import aot_compile, classify
from tritune.tuner._workers import Outcome, WorkerPool, wait_any

# Imported by every worker before it takes tasks (seconds on a busy machine), so that import time
# never counts against a config's timeout.
PRELOAD = ("torch", "triton", "tritune.kernels", "tritune.tuner._tasks")


def config_seed(base: int, config: Mapping[str, Value]) -> int:
    """Input seed for verifying one config: fresh per config, reproducible per (run seed, config)."""
    digest = hashlib.sha256(f"{base}|{config_key(config)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def outcome_result(outcome: Outcome, *, real_timing: bool) -> MeasureResult:
    """A worker's outcome as a MeasureResult (crashes and timeouts included)."""
    if outcome.kind == "ok":
        value = outcome.value
        if isinstance(value, MeasureResult):
            if value.extra.get("restart_worker"):
                extra = {k: v for k, v in value.extra.items() if k != "restart_worker"}
                return MeasureResult(value.status, value.time_ms, value.times_ms, value.error, value.compile_ms,
                                     value.cost_ms, value.real_timing, extra)
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


def arch_of(hardware: Hardware) -> int | None:
    """sm_XY as the integer XY for CUDA devices ("9.0" -> 90); None where AOT checks don't apply."""
    if hardware.backend != "cuda" or not hardware.compute_capability:
        return None
    try:
        major, minor = hardware.compute_capability.split(".")
        return int(major) * 10 + int(minor)
    except ValueError:
        return None


class PipelinedBackend(MeasureBackend):
    """Compile workers (optional) feeding measure workers; see the module docstring.

    Subclasses set the pools up and implement ``_arch(problem)`` (the compile target, or None to
    skip the compile stage for that problem).
    """

    real_timing: bool
    measure_pool: WorkerPool
    compile_pool: WorkerPool | None
    measure_task: Callable[..., MeasureResult]
    measure_settings: Any
    measure_timeout_s: float
    compile_timeout_s: float = 180.0
    seed: int = 0
    _closed = False

    def _arch(self, problem: Problem) -> int | None:
        return None

    def start(self) -> PipelinedBackend:
        """Start the workers now (they import torch), so the first measurement doesn't wait."""
        self.measure_pool.start()
        if self.compile_pool is not None:
            self.compile_pool.start()
        return self

    def measure(self, problem: Problem, configs: Sequence[Mapping[str, Value]]) -> list[MeasureResult]:
        results: dict[int, MeasureResult] = dict(self.measure_iter(problem, configs))
        return [results[i] for i in range(len(configs))]

    def measure_iter(self, problem: Problem,
                     configs: Sequence[Mapping[str, Value]]) -> Iterator[tuple[int, MeasureResult]]:
        if self._closed:
            raise RuntimeError(f"the {self.name} backend was closed")
        if problem.spec is None:
            raise ValueError(f"the {self.name} backend measures kernel families; problem {problem.name} has no spec "
                             "(recorded landscapes use the replay backend)")
        todo = []
        for i, config in enumerate(configs):
            reasons = problem.space.validate(config)
            if reasons:  # never sent to a worker, costs nothing
                yield i, MeasureResult(Status.INVALID, error="; ".join(reasons), real_timing=self.real_timing)
            else:
                todo.append(i)
        if not todo:
            return
        from tritune.kernels import family_ref  # torch: only once something is measured

        ref = family_ref(problem.kernel)
        arch = self._arch(problem) if self.compile_pool is not None else None
        token = object()  # results of an abandoned earlier call are dropped, not mistaken for ours
        reports: dict[int, dict[str, Any]] = {}

        def submit_measure(i: int) -> None:
            args = (ref, problem.spec, problem.hardware, dict(configs[i]), config_seed(self.seed, configs[i]),
                    self.measure_settings)
            self.measure_pool.submit((token, i), self.measure_task, args, timeout=self.measure_timeout_s)

        for i in todo:
            if arch is not None and self.compile_pool is not None:
                self.compile_pool.submit((token, i), aot_compile,
                                         (ref, problem.spec, problem.hardware, dict(configs[i]), arch),
                                         timeout=self.compile_timeout_s)
            else:
                submit_measure(i)
        pools = [self.measure_pool] + ([self.compile_pool] if self.compile_pool is not None else [])
        remaining = len(todo)
        while remaining:
            finished = wait_any(pools)
            for (tok, i), outcome in finished[0]:
                if tok is token:
                    remaining -= 1
                    yield i, _with_report(outcome_result(outcome, real_timing=self.real_timing), reports.get(i))
            for (tok, i), outcome in (finished[1] if len(finished) > 1 else []):
                if tok is not token:
                    continue
                report = outcome.value if outcome.kind == "ok" else None
                if report is not None and report.get("status") is None:
                    reports[i] = report
                    submit_measure(i)
                    continue
                remaining -= 1
                if report is not None:  # the compiler rejected it: nothing else was spent on it
                    yield i, MeasureResult(Status(report["status"]), error=report["error"],
                                           compile_ms=report.get("compile_ms"), cost_ms=report.get("compile_ms") or 0.0,
                                           real_timing=self.real_timing)
                else:
                    r = outcome_result(outcome, real_timing=self.real_timing)
                    yield i, MeasureResult(r.status, error=f"compile: {r.error}", cost_ms=r.cost_ms,
                                           real_timing=self.real_timing)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.measure_pool.close()
            if self.compile_pool is not None:
                self.compile_pool.close()


def _with_report(result: MeasureResult, report: Mapping[str, Any] | None) -> MeasureResult:
    """Add the compile stage's figures (registers, shared memory, its time) to a measurement."""
    if not report:
        return result
    extra = dict(result.extra)
    for key in ("registers", "shared_bytes", "stack_bytes", "uses_wgmma", "jit_warm_ms", "jit_warm_error"):
        if report.get(key) is not None:
            extra[key] = report[key]
    extra["aot_compile_ms"] = report.get("compile_ms")
    # compile_ms: the measuring worker's own compile (first launch) when it had one, else the AOT one.
    compile_ms = result.compile_ms if result.compile_ms is not None else report.get("compile_ms")
    compile_stage_ms = float(report.get("compile_ms") or 0.0) + float(report.get("jit_warm_ms") or 0.0)
    return MeasureResult(result.status, time_ms=result.time_ms, times_ms=result.times_ms, error=result.error,
                         compile_ms=compile_ms, cost_ms=result.cost_ms + compile_stage_ms,
                         real_timing=result.real_timing, extra=extra)
