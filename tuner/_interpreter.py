"""The interpreter backend: real kernels under TRITON_INTERPRET=1 on CPU, in worker processes.

Correctness is checked exactly as on a GPU (the family's ``verify`` on fresh random inputs); the
time is CPU wall time of the interpreter, flagged ``real_timing=False``: it ranks configs for this
machine's interpreter only and is never comparable with a GPU time. With ``aot_arch`` each config
is first compiled for that GPU target in a separate (non-interpreter) worker, which catches what
the interpreter does not enforce (``tl.dot`` shape rules, shared memory over the limit).
"""

from __future__ import annotations

import os

from tritune.tuner._backend import Problem
from tritune.tuner._pooled import PRELOAD, PipelinedBackend
from tritune.tuner._tasks import InterpreterSettings, interpreter_measure
from tritune.tuner._workers import WorkerPool


class InterpreterBackend(PipelinedBackend):
    """Measures in ``workers`` child processes with ``TRITON_INTERPRET=1``.

    ``timeout_s`` bounds one config (verify + timing); a config past it, or one whose worker
    dies, costs one evaluation and the worker is replaced.
    """

    name = "interpreter"
    real_timing = False

    def __init__(self, *, workers: int = 1, timeout_s: float = 300.0, repeats: int = 3, aot_arch: int | None = None,
                 seed: int = 0) -> None:
        env = dict(os.environ)
        env["TRITON_INTERPRET"] = "1"
        self.measure_pool = WorkerPool(workers, env=env, name="tritune-interpreter", preload=PRELOAD)
        self.compile_pool = None
        if aot_arch is not None:
            compile_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
            self.compile_pool = WorkerPool(1, env=compile_env, name="tritune-compile", preload=PRELOAD)
        self.aot_arch = aot_arch
        self.measure_task = interpreter_measure
        self.measure_settings = InterpreterSettings(repeats=repeats)
        self.measure_timeout_s = timeout_s
        self.batch_size = workers
        self.seed = seed

    def _arch(self, problem: Problem) -> int | None:
        return self.aot_arch
