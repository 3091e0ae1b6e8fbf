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


def bench_parser(prog: str, doc: str, *, dry_what: str, dtype_what: str) -> argparse.ArgumentParser:
    """A kernel benchmark's parser with the options every one has first: ``--dry`` and ``--dtype``.

    ``dry_what`` names what a dry run shrinks ("shapes", "batches"), ``dtype_what`` which tensors
    ``--dtype`` sets; the benchmark adds its own options, then ``add_run_arguments``.
    """
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true",
                   help=f"tiny {dry_what} on CPU under TRITON_INTERPRET=1 (pipeline check; times are meaningless)")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"), help=f"{dtype_what} dtype (default bf16)")
    return p


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


def bench_device(dry: bool) -> Any:
    """The device a benchmark runs on: CPU in a dry run, else CUDA (ValueError when there is none)."""
    import torch

    if not dry and not torch.cuda.is_available():
        raise ValueError("no CUDA device: run on a GPU, or pass --dry for the CPU pipeline check")
    return torch.device("cpu" if dry else "cuda")


def parse_heads(text: str, what: str = "--heads") -> tuple[int, int]:
    """``Hq/Hkv`` as two ints; ``what`` names the argument in the error ("--heads item" for a list)."""
    try:
        hq, hkv = (int(t) for t in text.split("/"))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not Hq/Hkv (e.g. 32/8)") from None
    if hkv < 1 or hq % hkv:
        raise ValueError(f"--heads {text}: Hq must be a multiple of Hkv")
    return hq, hkv


def time_ms(fn: Callable[[], Any], dry: bool, warmup: int, rep: int) -> float:
    """Median ms of ``fn`` by triton's do_bench; one wall-clock call in a dry run (meaningless)."""
    if dry:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def measure_copy_gbps(device: Any, args: argparse.Namespace, cpu_bytes: int) -> float:
    """GB/s of a large copy on ``device``, bytes read + written (the ceiling decode aims at).

    1 GiB on CUDA; ``cpu_bytes`` on CPU, where a dry run only needs a number.
    """
    import torch

    size = (1 << 30) if device.type == "cuda" else cpu_bytes
    src = torch.empty(size, dtype=torch.uint8, device=device).random_(0, 256)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), args.dry, args.warmup, args.rep)
    return 2 * size / (ms * 1e-3) / 1e9


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


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


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
    from tritune.tuner._graph import replay_ms, rounds_for

    per_call = estimate_ms if estimate_ms and estimate_ms > 0 else 0.05
    return replay_ms(fns, rounds_for(per_call, len(fns), min_graph_ms), rep)
