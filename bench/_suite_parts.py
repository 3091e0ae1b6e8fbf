"""The parts of the GPU suite (see gpu_suite.py). Each takes a SuiteContext, returns a dict.

A part's dict holds its figures, a ``table`` ({"header": [...], "rows": [...]}) for the markdown
file, ``notes``, and ``complete`` False when the budget cut it short. Every figure states how it
was counted (FLOPs, bytes), and every kernel output is checked before it is timed.
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from tritune.search_space import (
    FlashAttentionSpec,
    Hardware,
    PagedAttentionSpec,
    ProblemSpec,
    default_config,
    detect,
    space_for,
)

# --- shapes ------------------------------------------------------------------------------------
# Deliberately odd: lengths off every block size, GQA/MQA, every supported head-dim class.
CORRECTNESS_GPU: tuple[ProblemSpec, ...] = (
    FlashAttentionSpec(2, 8, 2, 1000, 1000, 128, "bf16", True),
    FlashAttentionSpec(1, 32, 8, 1024, 1024, 64, "fp16", False),
    FlashAttentionSpec(1, 4, 1, 17, 2049, 80, "bf16", True),
    FlashAttentionSpec(3, 16, 16, 513, 513, 256, "fp16", True),
    FlashAttentionSpec(1, 8, 8, 2049, 300, 96, "bf16", True),
    FlashAttentionSpec(2, 12, 4, 4097, 4097, 128, "bf16", True),
    PagedAttentionSpec(8, 32, 8, 128, 4097, 16, "bf16"),
    PagedAttentionSpec(3, 8, 1, 64, 33000, 32, "fp16"),
    PagedAttentionSpec(64, 32, 32, 128, 513, 8, "fp16"),
    PagedAttentionSpec(2, 16, 4, 256, 65537, 128, "bf16"),
)
CORRECTNESS_DRY: tuple[ProblemSpec, ...] = (
    FlashAttentionSpec(1, 2, 1, 17, 33, 64, "bf16", True),
    FlashAttentionSpec(1, 2, 2, 5, 9, 32, "fp16", False),
    PagedAttentionSpec(2, 4, 1, 64, 37, 16, "bf16"),
    PagedAttentionSpec(3, 2, 2, 64, 9, 8, "fp16"),
)


def _hardware(ctx: Any) -> Hardware:
    return detect() if ctx.device == "cuda" else Hardware.cpu_interpreter()


def _time_ms(fn: Callable[[], Any], ctx: Any, *, rep_ms: int = 100) -> float:
    """Median kernel time in ms: CUDA events through do_bench on a GPU, wall clock on CPU."""
    if ctx.device == "cuda":
        import triton

        return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))
    fn()
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


# --- env ---------------------------------------------------------------------------------------
def env(ctx: Any) -> dict[str, Any]:
    import torch
    import triton

    info: dict[str, Any] = {
        "card": ctx.card, "python": platform.python_version(), "torch": torch.__version__,
        "triton": triton.__version__, "cuda": torch.version.cuda, "platform": platform.platform(),
    }
    if ctx.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(sm_count=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", hardware=detect().to_dict())
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu",
                 "--format=csv"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"unavailable: {exc}"
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("optuna", "sqlite-utils", "transformers", "scikit-learn"):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            info[dist] = "missing"
    rows = [[k, v] for k, v in info.items() if not isinstance(v, dict)]
    return {**info, "table": {"header": ["item", "value"], "rows": rows}, "headline": f"{ctx.card}, torch {torch.__version__}, triton {triton.__version__}"}


# --- ceilings ----------------------------------------------------------------------------------
def ceilings(ctx: Any) -> dict[str, Any]:
    """Measured roofs: every throughput elsewhere in the suite is reported against these."""
    import torch

    n = 8192 if ctx.device == "cuda" else 256
    dtype = torch.bfloat16 if ctx.device == "cuda" else torch.float32
    a = torch.randn(n, n, device=ctx.device, dtype=dtype)
    b = torch.randn(n, n, device=ctx.device, dtype=dtype)
    mm_ms = _time_ms(lambda: a @ b, ctx)
    tflops = 2 * n**3 / (mm_ms * 1e-3) / 1e12
    elems = (1 << 28) if ctx.device == "cuda" else (1 << 20)  # 512 MiB of bf16 on the GPU
    src = torch.randn(elems, device=ctx.device, dtype=dtype)
    dst = torch.empty_like(src)
    copy_ms = _time_ms(lambda: dst.copy_(src), ctx)
    gbs = 2 * src.numel() * src.element_size() / (copy_ms * 1e-3) / 1e9  # read + write
    del a, b, src, dst
    return {
        "matmul_n": n, "matmul_dtype": str(dtype), "matmul_ms": mm_ms, "matmul_tflops": tflops,
        "copy_bytes": 2 * elems * (2 if ctx.device == "cuda" else 4), "copy_ms": copy_ms, "copy_gbs": gbs,
        "table": {"header": ["ceiling", "value", "how counted"], "rows": [
            [f"{'bf16' if ctx.device == 'cuda' else 'fp32'} matmul {n}^3", f"{tflops:.1f} TFLOP/s", "2*n^3 / median time"],
            ["device copy", f"{gbs:.0f} GB/s", "bytes read + bytes written / median time"],
        ]},
        "headline": f"matmul {tflops:.1f} TFLOP/s, copy {gbs:.0f} GB/s",
    }


# --- correctness -------------------------------------------------------------------------------
def correctness(ctx: Any, *, configs_per_shape: int = 4) -> dict[str, Any]:
    """Every shape of the grid with its default config and a seeded sample of valid configs."""
    from tritune.kernels import get_family

    hw = _hardware(ctx)
    specs = CORRECTNESS_DRY if ctx.dry else CORRECTNESS_GPU
    rows, failures, checked = [], [], 0
    for i, spec in enumerate(specs):
        if ctx.expired(reserve_s=30):
            return _correctness_result(rows, failures, checked, complete=False)
        family = get_family(spec.kernel)
        space = space_for(spec, hw)
        configs = [default_config(spec, hw).to_dict()]
        configs += [c for c in space.sample(random.Random(i), configs_per_shape) if c != configs[0]]
        for config in configs[: configs_per_shape if not ctx.dry else 2]:
            checked += 1
            try:
                v = family.verify(spec, space.config(config), ctx.device, seed=1000 + i)
                ok, err, allowed, message = v.ok, v.error, v.allowed, v.message
            except Exception as exc:  # a launch failure is a correctness failure, recorded
                ok, err, allowed, message = False, float("nan"), float("nan"), f"{type(exc).__name__}: {exc}"
            rows.append([spec.kernel, spec.describe(), json.dumps(config, sort_keys=True), ok, err, allowed])
            if not ok:
                failures.append({"spec": spec.to_dict(), "config": config, "message": message})
    return _correctness_result(rows, failures, checked, complete=True)


def _correctness_result(rows: list, failures: list, checked: int, *, complete: bool) -> dict[str, Any]:
    return {
        "complete": complete, "checked": checked, "failed": len(failures), "failures": failures,
        "table": {"header": ["kernel", "shape", "config", "ok", "max error", "allowed"], "rows": rows},
        "notes": ["allowed = 2x the error of the same math in PyTorch at the input precision + a small absolute term"],
        "headline": f"{checked - len(failures)}/{checked} passed",
    }


# --- parts that build on the kernel benchmarks and the tuner ----------------------------------
def bench(ctx: Any) -> dict[str, Any]:
    raise NotImplementedError("kernel benchmarks are wired in once bench/flash_bench.py and bench/paged_bench.py land")


def landscapes(ctx: Any) -> dict[str, Any]:
    raise NotImplementedError("landscape recording is wired in once the tuner's gpu backend lands")


def tuning(ctx: Any) -> dict[str, Any]:
    raise NotImplementedError("tuning comparison is wired in once the tuner lands")


def promote_builtin(out: Any) -> int:
    raise NotImplementedError("promotion is wired in with the landscapes part")
