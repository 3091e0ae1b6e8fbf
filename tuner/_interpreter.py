"""The interpreter backend: real kernels under TRITON_INTERPRET=1 on CPU, in worker processes.

Correctness is checked exactly as on a GPU (the family's ``verify`` on fresh random inputs); the
time is CPU wall time of the interpreter, flagged ``real_timing=False``: it ranks configs for this
machine's interpreter only and is never comparable with a GPU time. Optionally each config is
also compiled for a GPU target (``aot_arch``), which catches what the interpreter does not
enforce (``tl.dot`` shape rules, shared memory over the limit).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

from tritune.kernels import family_ref
from tritune.search_space import Value

from ._backend import MeasureResult, Problem
from ._pooled import PooledBackend, config_seed, invalid_results, outcome_result
from ._tasks import InterpreterSettings, interpreter_measure
from ._workers import WorkerPool


class InterpreterBackend(PooledBackend):
    """Measures in ``workers`` child processes with ``TRITON_INTERPRET=1``.

    ``timeout_s`` bounds one config (verify + timing); a config past it, or one whose worker
    dies, costs one evaluation and the worker is replaced.
    """

    name = "interpreter"
    real_timing = False

    def __init__(self, *, workers: int = 1, timeout_s: float = 300.0, repeats: int = 3, aot_arch: int | None = None,
                 seed: int = 0, start_method: str | None = None) -> None:
        env = dict(os.environ)
        env["TRITON_INTERPRET"] = "1"
        self.pool = WorkerPool(workers, env=env, start_method=start_method, name="tritune-interpreter")
        self.batch_size = workers
        self.timeout_s = timeout_s
        self.settings = InterpreterSettings(repeats=repeats, aot_arch=aot_arch)
        self.seed = seed

    def start(self) -> InterpreterBackend:
        """Start the workers now (they import torch), so the first measurement doesn't wait."""
        self.pool.start()
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
        args = [(ref, problem.spec, problem.hardware, dict(configs[i]), config_seed(self.seed, configs[i]),
                 self.settings) for i in todo]
        for j, outcome in self.pool.run(interpreter_measure, args, timeout=self.timeout_s):
            yield todo[j], outcome_result(outcome, real_timing=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pool.close()
