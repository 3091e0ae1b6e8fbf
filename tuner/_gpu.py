"""The GPU backend: compile on CPU cores in parallel while one worker measures on the GPU.

Pipeline for a batch of configs (see ``_pooled``):
1. configs the space rejects come back INVALID at once (free);
2. compile workers (CPU only, no CUDA context) compile each config ahead of time for the GPU's
   architecture: a compile error or a shared-memory overflow is found there, in parallel, without
   touching the GPU;
3. the measure worker (the only process holding a CUDA context) takes configs as their compile
   finishes: first launch (JIT), verification against the reference on fresh random inputs, then
   ``triton.testing.do_bench`` (CUDA events, L2 flushed before every repetition, median), and
   for decode problems (``graph``) CUDA-graph replays over input copies that exceed L2, the time
   a serving engine's captured step sees; both are kept (``extra``: time_plain_ms, time_graph_ms).
A hang past the timeout, a segfault or an illegal address costs that config alone: the worker is
killed or exits, and a fresh one (with a fresh CUDA context) takes the next config.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from tritune.tuner._backend import MeasureResult, Problem
from tritune.tuner._pooled import PRELOAD, PipelinedBackend, arch_of
from tritune.tuner._tasks import GpuSettings, gpu_measure
from tritune.tuner._workers import WorkerPool


class GpuBackend(PipelinedBackend):
    """Measures on one CUDA device (``device_index``).

    ``compile_workers`` (default: CPU cores - 1, at most 8; 0 disables the compile stage, e.g. for
    a family without ``compile``) compile ahead: an AOT compile that checks registers and shared
    memory, then the JIT compile of the exact launch into Triton's cache, so the measuring worker
    only loads the binary (``TRITUNE_WARM_JIT=0`` skips the second step, and the compile workers'
    CUDA contexts with it). ``measure_task`` replaces the GPU measurement, for
    tests of the pipeline on machines without a GPU; ``env`` is the workers' environment (default:
    this process's without TRITON_INTERPRET).
    """

    name = "gpu"
    real_timing = True

    def __init__(self, *, device_index: int = 0, compile_workers: int | None = None,
                 compile_timeout_s: float = 180.0, measure_timeout_s: float = 120.0,
                 settings: GpuSettings | None = None, seed: int = 0,
                 measure_task: Callable[..., MeasureResult] | None = None,
                 env: Mapping[str, str] | None = None, graph: bool | None = None) -> None:
        if measure_task is None:
            _require_cuda(device_index)
        if env is None:  # GPU workers run compiled kernels, whatever this process was started with
            env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        size = compile_workers if compile_workers is not None else max(1, min(8, (os.cpu_count() or 2) - 1))
        self.compile_pool = WorkerPool(size, env=env, name="tritune-compile", preload=PRELOAD) if size else None
        self.measure_pool = WorkerPool(1, env=env, name="tritune-gpu", preload=PRELOAD)
        self.compile_timeout_s = compile_timeout_s
        self.measure_timeout_s = measure_timeout_s
        # graph: time CUDA-graph replays (None: for decode families only, see GpuSettings).
        self.measure_settings = settings or GpuSettings(device_index=device_index, graph=graph)
        self.measure_task = measure_task or gpu_measure
        self.seed = seed
        # Enough configs in flight to keep the compile workers ahead of the GPU, but few enough that
        # a model-based strategy still learns between batches.
        self.batch_size = max(2, min(8, size + 1))

    def _arch(self, problem: Problem) -> int | None:
        return arch_of(problem.hardware)


def _require_cuda(device_index: int) -> None:
    try:
        import torch
    except ImportError:
        raise RuntimeError("the gpu backend needs torch with CUDA") from None
    if not torch.cuda.is_available():
        raise RuntimeError("the gpu backend needs a CUDA device and none is available; use --backend interpreter")
    if device_index >= torch.cuda.device_count():
        raise RuntimeError(f"CUDA device {device_index} does not exist ({torch.cuda.device_count()} available)")
