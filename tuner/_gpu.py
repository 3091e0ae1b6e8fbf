"""The GPU backend: compile on CPU cores in parallel while one worker measures on the GPU.

Pipeline for a batch of configs:
1. configs the space rejects come back INVALID at once (free);
2. compile workers (CPU only, no CUDA context) compile each config ahead of time for the GPU's
   architecture: a compile error or a shared-memory overflow is found there, in parallel, without
   touching the GPU, and the compiled kernel lands in Triton's on-disk cache;
3. the measure worker (the only process holding a CUDA context) takes configs as their compile
   finishes: first launch, verification against the reference on fresh random inputs, then
   ``triton.testing.do_bench`` (CUDA events, L2 flushed before every repetition, median).
A hang past the timeout, a segfault or an illegal address costs that config alone: the worker is
killed or exits and a fresh one (with a fresh CUDA context) takes the next config.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tritune.kernels import family_ref
from tritune.search_space import Hardware, Value

from ._backend import MeasureResult, Problem, Status
from ._pooled import PooledBackend, config_seed, invalid_results, outcome_result
from ._tasks import GpuSettings, aot_compile, gpu_measure
from ._workers import WorkerPool, wait_any


def arch_of(hardware: Hardware) -> int | None:
    """sm_XY as the integer XY for CUDA devices ("9.0" -> 90); None where AOT checks don't apply."""
    if hardware.backend != "cuda" or not hardware.compute_capability:
        return None
    try:
        major, minor = hardware.compute_capability.split(".")
        return int(major) * 10 + int(minor)
    except ValueError:
        return None


class GpuBackend(PooledBackend):
    """Measures on one CUDA device (``device_index``).

    ``compile_workers`` (default: CPU cores - 1, at most 8) compile ahead; ``aot_check`` False
    skips that stage (e.g. for a family without ``compile``). ``measure_task`` replaces the GPU
    measurement, for tests of the pipeline on machines without a GPU.
    """

    name = "gpu"
    real_timing = True

    def __init__(self, *, device_index: int = 0, compile_workers: int | None = None, aot_check: bool = True,
                 compile_timeout_s: float = 180.0, measure_timeout_s: float = 120.0,
                 settings: GpuSettings | None = None, seed: int = 0, start_method: str | None = None,
                 measure_task: Callable[..., MeasureResult] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if measure_task is None:
            _require_cuda(device_index)
        env = dict(os.environ if env is None else env)
        env.pop("TRITON_INTERPRET", None)  # GPU workers run compiled kernels
        size = compile_workers if compile_workers is not None else max(1, min(8, (os.cpu_count() or 2) - 1))
        self.compile_pool = WorkerPool(size, env=env, start_method=start_method, name="tritune-compile")
        self.measure_pool = WorkerPool(1, env=env, start_method=start_method, name="tritune-gpu")
        self.aot_check = aot_check
        self.compile_timeout_s = compile_timeout_s
        self.measure_timeout_s = measure_timeout_s
        self.settings = settings or GpuSettings(device_index=device_index)
        self.measure_task = measure_task or gpu_measure
        self.seed = seed
        self.batch_size = max(2, size)

    def start(self) -> GpuBackend:
        self.measure_pool.start()
        if self.aot_check:
            self.compile_pool.start()
        return self

    def measure_iter(self, problem: Problem,
                     configs: Sequence[Mapping[str, Value]]) -> Iterator[tuple[int, MeasureResult]]:
        self._check_open()
        self._check_problem(problem)
        invalid = invalid_results(problem, configs)
        yield from invalid.items()
        todo = [i for i in range(len(configs)) if i not in invalid]
        if not todo:
            return
        ref = family_ref(problem.kernel)
        arch = arch_of(problem.hardware)
        token = object()
        compile_info: dict[int, dict[str, Any]] = {}

        def submit_measure(i: int) -> None:
            args = (ref, problem.spec, problem.hardware, dict(configs[i]), config_seed(self.seed, configs[i]),
                    self.settings)
            self.measure_pool.submit((token, i), self.measure_task, args, timeout=self.measure_timeout_s)

        for i in todo:
            if self.aot_check and arch is not None:
                self.compile_pool.submit((token, i), aot_compile, (ref, problem.spec, problem.hardware,
                                                                   dict(configs[i]), arch),
                                         timeout=self.compile_timeout_s)
            else:
                submit_measure(i)
        remaining = len(todo)
        while remaining:
            compiled, measured = wait_any([self.compile_pool, self.measure_pool])
            for (tok, i), outcome in compiled:
                if tok is not token:
                    continue
                report = outcome.value if outcome.kind == "ok" else None
                if report is not None and report.get("status") is None:
                    compile_info[i] = report
                    submit_measure(i)
                    continue
                remaining -= 1
                if report is not None:  # the compiler rejected it: no GPU time spent
                    yield i, MeasureResult(Status(report["status"]), error=report["error"],
                                           compile_ms=report.get("compile_ms"), cost_ms=report.get("compile_ms") or 0.0)
                else:
                    result = outcome_result(outcome, real_timing=True)
                    yield i, MeasureResult(result.status, error=f"compile: {result.error}", cost_ms=result.cost_ms)
            for (tok, i), outcome in measured:
                if tok is not token:
                    continue
                remaining -= 1
                yield i, _with_compile_info(outcome_result(outcome, real_timing=True), compile_info.get(i))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.compile_pool.close()
            self.measure_pool.close()


def _with_compile_info(result: MeasureResult, report: Mapping[str, Any] | None) -> MeasureResult:
    if not report:
        return result
    extra = dict(result.extra)
    extra.pop("restart_worker", None)
    for key in ("registers", "shared_bytes", "stack_bytes", "uses_wgmma"):
        if report.get(key) is not None:
            extra[key] = report[key]
    extra["aot_compile_ms"] = report.get("compile_ms")
    return MeasureResult(result.status, time_ms=result.time_ms, times_ms=result.times_ms, error=result.error,
                         compile_ms=result.compile_ms, cost_ms=result.cost_ms + float(report.get("compile_ms") or 0.0),
                         real_timing=result.real_timing, extra=extra)


def _require_cuda(device_index: int) -> None:
    try:
        import torch
    except ImportError:
        raise RuntimeError("the gpu backend needs torch with CUDA") from None
    if not torch.cuda.is_available():
        raise RuntimeError("the gpu backend needs a CUDA device and none is available; use --backend interpreter")
    if device_index >= torch.cuda.device_count():
        raise RuntimeError(f"CUDA device {device_index} does not exist ({torch.cuda.device_count()} available)")
