"""CUDA-graph replay timing, shared by the tuner's GPU backend and the kernel benchmarks.

A serving engine launches its decode step from a captured CUDA graph, so a decode kernel's time
there has no launch gaps; ``replay_ms`` measures that time. Each caller decides what to capture
(the tuner: one config over input copies that exceed L2; the benchmarks: a backend's calls) and
how many rounds, so their own sizing rules stay where they are explained. CUDA only: it imports
torch lazily and must not be called on CPU.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

MAX_SAMPLES = 1000  # replays timed at the most, however long ``rep_ms`` is
MAX_ROUNDS = 200


def rounds_for(per_call_ms: float, n_fns: int, replay_ms_target: float = 1.0) -> int:
    """Rounds of ``n_fns`` calls of about ``per_call_ms`` each that make one replay last about
    ``replay_ms_target`` (1 to ``MAX_ROUNDS``): long enough that event timing resolves it."""
    return max(1, min(MAX_ROUNDS, int(replay_ms_target / max(1e-3, per_call_ms * n_fns)) + 1))


def replay_ms(fns: Sequence[Callable[[], Any]], rounds: int, rep_ms: float) -> float:
    """Median ms per call of ``fns`` captured round-robin ``rounds`` times in one CUDA graph.

    Every function is called once on a side stream before the capture (so nothing is compiled or
    allocated during it), the graph is replayed once to upload it, then each replay is timed with
    CUDA events for about ``rep_ms`` (at least 5 and at most ``MAX_SAMPLES`` replays) and divided
    by the ``rounds * len(fns)`` calls it holds.
    """
    if not fns or rounds < 1:
        raise ValueError(f"replay_ms needs at least one function and rounds >= 1, got {len(fns)} and {rounds}")
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in fns:
            fn()
    torch.cuda.synchronize()
    calls = rounds * len(fns)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(rounds):
            for fn in fns:
                fn()
    graph.replay()  # the first replay uploads the graph
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples: list[float] = []
    deadline = time.perf_counter() + rep_ms / 1e3
    while len(samples) < 5 or (time.perf_counter() < deadline and len(samples) < MAX_SAMPLES):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / calls)
    del graph
    return float(statistics.median(samples))
