"""The tuner: Optuna search strategies, measurement backends, and the ``tune`` job.

- ``tune(problems, backend, budget=...)``: search, measure in worker processes, store every trial
  in the tuning database, resume after a crash, share a study between workers (``storage``).
- Backends (``MeasureBackend``): ``GpuBackend`` (compile ahead on CPU cores, verify, time with
  CUDA events and L2 flushed), ``InterpreterBackend`` (TRITON_INTERPRET=1 on CPU, no real
  timings), ``ReplayBackend`` (recorded landscapes).
- Strategies (``Strategy``, ask/tell): registered by name in ``STRATEGIES``; ``bench_search``
  compares them on recorded landscapes.

Importing this package imports optuna but never torch, triton or a kernel module.
"""

from tritune.tuner._backend import MeasureBackend, MeasureResult, Problem, Status
from tritune.tuner._bench import (
    BUDGETS,
    BenchReport,
    Run,
    bench_search,
    random_expectation,
    run_strategy,
)
from tritune.tuner._gpu import GpuBackend
from tritune.tuner._interpreter import InterpreterBackend
from tritune.tuner._plot import plot_bench, plot_convergence
from tritune.tuner._problems import (
    DEFAULT_CPU_PRESET,
    DEFAULT_GPU_PRESET,
    PRESETS,
    Preset,
    kernel_problem,
    landscape_problems,
    model_config_specs,
    preset,
    preset_specs,
)
from tritune.tuner._replay import ReplayBackend, landscape_problem
from tritune.tuner._strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    get_strategy,
    make_strategy,
    strategy_names,
)
from tritune.tuner._strategy import Strategy, StrategyContext
from tritune.tuner._tune import EFFORTS, Budget, ProblemReport, TuneReport, effort_budget, tune
from tritune.tuner._workers import WorkerPool

__all__ = [
    "BUDGETS",
    "DEFAULT_CPU_PRESET",
    "DEFAULT_GPU_PRESET",
    "DEFAULT_STRATEGY",
    "EFFORTS",
    "PRESETS",
    "STRATEGIES",
    "BenchReport",
    "Budget",
    "GpuBackend",
    "InterpreterBackend",
    "MeasureBackend",
    "MeasureResult",
    "Preset",
    "Problem",
    "ProblemReport",
    "ReplayBackend",
    "Run",
    "Status",
    "Strategy",
    "StrategyContext",
    "TuneReport",
    "WorkerPool",
    "bench_search",
    "effort_budget",
    "get_strategy",
    "kernel_problem",
    "landscape_problem",
    "landscape_problems",
    "make_strategy",
    "model_config_specs",
    "plot_bench",
    "plot_convergence",
    "preset",
    "preset_specs",
    "random_expectation",
    "run_strategy",
    "strategy_names",
    "tune",
]
