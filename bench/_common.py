"""What the kernel benchmarks share: output arguments, the main loop, timing, formatting."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Collection
from datetime import datetime, timezone
from typing import Any


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warmup", type=int, default=25, help="do_bench warmup in ms (default 25)")
    p.add_argument("--rep", type=int, default=100, help="do_bench repetition time in ms (default 100)")
    p.add_argument("--json", dest="json_path", help="write the results as JSON to this file ('-' for stdout)")
    p.add_argument("--markdown", help="write the markdown table to this file (it is always printed)")


def bench_main(args: argparse.Namespace, run: Callable[[argparse.Namespace], dict[str, Any]],
               markdown: Callable[[dict[str, Any]], str]) -> int:
    """Run a benchmark, print its markdown table and write the requested files; 2 on a bad argument."""
    if args.dry:
        # Must precede the first import of the kernel module (Triton reads it at definition).
        os.environ.setdefault("TRITON_INTERPRET", "1")
    try:
        result = run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown(result)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if args.json_path:
        text = json.dumps(result, indent=2)
        if args.json_path == "-":
            print(text)
        else:
            with open(args.json_path, "w") as f:
                f.write(text + "\n")
    return 0


def time_ms(fn: Callable[[], Any], dry: bool, warmup: int, rep: int) -> float:
    """Median ms of ``fn`` by triton's do_bench; one wall-clock call in a dry run (meaningless)."""
    if dry:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def parse_config(text: str, config_type: Any, bool_keys: Collection[str] = ()) -> Any:
    """``--config key=value,...`` as ``config_type``; values are ints, or flags for ``bool_keys``."""
    values: dict[str, Any] = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"--config item {item!r} is not key=value")
        key, raw = (s.strip() for s in item.split("=", 1))
        values[key] = raw.lower() in ("1", "true", "yes") if key in bool_keys else int(raw)
    return config_type.from_dict(values)


def environment(dry: bool) -> dict[str, Any]:
    import torch
    import triton

    env = {"torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if not dry and torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["device"] = "cpu (Triton interpreter)"
    return env


def progress(items: list, desc: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc=desc, file=sys.stderr, leave=False)


def fmt(x: float | None) -> str:
    return "-" if x is None else (f"{x:.1f}" if x >= 1 else f"{x:.2g}")


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def graph_time_ms(fns: list[Callable[[], Any]], dry: bool, rep: int = 100, min_graph_ms: float = 1.0,
                  estimate_ms: float | None = None) -> float | None:
    """Median ms per call of ``fns`` replayed from one CUDA graph; None on CPU (no graphs there).

    The graph calls the functions round-robin, ``len(fns)`` x k times with k chosen so one replay
    lasts about ``min_graph_ms`` (from ``estimate_ms``, a do_bench time of one call): launch gaps
    vanish as they do in a serving engine's captured decode step. Give ``fns`` over several copies
    of the inputs when one copy fits in L2, or back-to-back calls would time the cache. The calls
    are warmed up (compiled) outside the capture; nothing is compiled during it.
    """
    if dry:
        return None
    from tritune.tuner._graph import replay_ms

    per_call = estimate_ms if estimate_ms and estimate_ms > 0 else 0.05
    rounds = max(1, min(200, int(min_graph_ms / (per_call * len(fns))) + 1))
    return replay_ms(fns, rounds, rep)
