"""What worker processes run: compile checks, verification and timing of one config.

These functions execute inside ``_workers`` children and return a ``MeasureResult`` (never raise
for a bad config; an exception that escapes is classified by the backend). They import torch and
the kernel family lazily, after the worker has applied its environment.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tritune.search_space import Hardware, ProblemSpec, Value
from tritune.tuner._backend import MeasureResult, Status
from tritune.tuner._graph import replay_ms, rounds_for

FamilyRef = tuple[str, str, str]  # (name, module, attr) as kernels.family_ref returns


def load_family(ref: FamilyRef) -> Any:
    from tritune.kernels import get_family, register_family

    name, module, attr = ref
    try:
        register_family(name, module, attr)
    except ValueError:
        pass  # already registered under the built-in name
    return get_family(name)


def typed_config(family: Any, spec: ProblemSpec, hardware: Hardware, values: Mapping[str, Value]) -> Any:
    return family.space(spec, hardware).config_type.from_dict(values)


def classify(exc: BaseException | None = None, *, type_name: str = "", message: str = "") -> Status:
    """Status of an exception raised while compiling or running a config.

    Triton raises ``OutOfResources`` for shared memory/registers over the limit and
    ``CompilationError`` (and subclasses) for code that does not compile; CUDA faults surface as
    RuntimeErrors from torch or triton's driver.
    """
    if exc is not None:
        type_name = type(exc).__module__ + "." + type(exc).__qualname__
        message = str(exc)
    short = type_name.rsplit(".", 1)[-1]
    text = message.lower()
    if short == "OutOfResources" or "out of resource" in text:
        return Status.OUT_OF_RESOURCES
    if "CompilationError" in short or short in ("CompileTimeAssertionFailure", "UnsupportedLanguageConstruct"):
        return Status.COMPILE_ERROR
    # Under TRITON_INTERPRET=1 what the compiler would reject (static_assert, shape and type
    # rules such as a non-power-of-2 arange) surfaces as an InterpreterError wrapping it.
    if short == "InterpreterError" and message.startswith(("AssertionError", "ValueError", "TypeError",
                                                           "CompilationError")):
        return Status.COMPILE_ERROR
    if short == "TimeoutError":
        return Status.TIMEOUT
    return Status.RUNTIME_ERROR


def _short(exc: BaseException, limit: int = 600) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compile_status(report: Any) -> tuple[Status, str] | None:
    """None when an AOT CompileReport is fine, else the failure it means.

    A kernel compiled under a register cap (``report.maxnreg``) that spills is out of resources:
    the cap is what such a config tunes, and whether a cap spills only the compiler knows (the
    search space rejects only the certain cases; see search_space/flash_attention.py).
    """
    if not report.ok:
        return Status.COMPILE_ERROR, f"compile failed: {report.error}"
    if not report.fits:
        return Status.OUT_OF_RESOURCES, (f"needs {report.shared_bytes} B of shared memory, over the target's "
                                         f"limit (sm_{report.arch})")
    if report.maxnreg and (report.stack_bytes or 0) > 0:
        return Status.OUT_OF_RESOURCES, (f"maxnreg={report.maxnreg} spills {report.stack_bytes} B per thread to "
                                         f"local memory (sm_{report.arch}); the tile needs more registers than the cap")
    return None


def aot_compile(ref: FamilyRef, spec: ProblemSpec, hardware: Hardware, values: Mapping[str, Value],
                arch: int) -> dict[str, Any]:
    """Compile for ``sm_{arch}`` without a GPU; the report as a dict (status None when fine)."""
    t0 = time.perf_counter()
    family = load_family(ref)
    config = typed_config(family, spec, hardware, values)
    try:
        report = family.compile(spec, config, arch=arch)
    except Exception as exc:  # noqa: BLE001 - a compiler crash is this config's compile error
        status = Status.OUT_OF_RESOURCES if classify(exc) is Status.OUT_OF_RESOURCES else Status.COMPILE_ERROR
        return {"status": status.value, "error": f"compile failed: {_short(exc)}",
                "compile_ms": (time.perf_counter() - t0) * 1e3}
    bad = compile_status(report)
    out = report.to_dict() if hasattr(report, "to_dict") else {}
    out["compile_ms"] = float(getattr(report, "compile_s", 0.0) or (time.perf_counter() - t0)) * 1e3
    out["status"] = bad[0].value if bad else None
    out["error"] = bad[1] if bad else None
    if bad is None and _sees_gpu():
        out.update(_warm_jit(family, spec, config))
    return out


def _sees_gpu() -> bool:
    """Whether this compile worker should warm the JIT: it sees a GPU, and nobody turned it off.

    Each warming worker holds a CUDA context (a few hundred MB of device memory);
    ``TRITUNE_WARM_JIT=0`` keeps the compile workers off the GPU on small cards.
    """
    import os

    import torch
    from tritune.search_space import interpreting

    if os.environ.get("TRITUNE_WARM_JIT", "1") == "0" or interpreting():
        return False
    return torch.cuda.is_available()


def _warm_jit(family: Any, spec: ProblemSpec, config: Any) -> dict[str, Any]:
    """Best effort: fill Triton's cache for the measuring process (see ``KernelFamily.warm``).

    The AOT report above already decided the config's fate; a failure here only means the
    measuring process compiles the config itself, as it would without this step.
    """
    t0 = time.perf_counter()
    try:
        family.warm(spec, config)
    except Exception as exc:  # noqa: BLE001
        return {"jit_warm_error": _short(exc, 300)}
    return {"jit_warm_ms": (time.perf_counter() - t0) * 1e3}


@dataclass(frozen=True)
class InterpreterSettings:
    repeats: int = 3


def interpreter_measure(ref: FamilyRef, spec: ProblemSpec, hardware: Hardware, values: Mapping[str, Value],
                        seed: int, settings: InterpreterSettings) -> MeasureResult:
    """Verify one config under TRITON_INTERPRET=1 and time it (CPU wall time, not a GPU time)."""
    t_start = time.perf_counter()
    family = load_family(ref)
    config = typed_config(family, spec, hardware, values)
    compile_ms = None
    extra: dict[str, Any] = {}
    try:
        verification = family.verify(spec, config, "cpu", seed)
    except Exception as exc:  # noqa: BLE001
        return MeasureResult(classify(exc), error=_short(exc), compile_ms=compile_ms, cost_ms=_ms_since(t_start),
                             real_timing=False)
    if not verification.ok:
        return MeasureResult(Status.WRONG_RESULT, error=verification.message or "output differs from the reference",
                             compile_ms=compile_ms, cost_ms=_ms_since(t_start), real_timing=False,
                             extra={"max_error": verification.error, "allowed": verification.allowed})
    try:
        inputs = family.make_inputs(spec, "cpu", seed + 1)
        times = []
        for _ in range(max(1, settings.repeats)):
            t0 = time.perf_counter()
            family.launch(inputs, config)
            times.append((time.perf_counter() - t0) * 1e3)
    except Exception as exc:  # noqa: BLE001
        return MeasureResult(classify(exc), error=_short(exc), compile_ms=compile_ms, cost_ms=_ms_since(t_start),
                             real_timing=False)
    return MeasureResult(Status.OK, time_ms=statistics.median(times), times_ms=tuple(times), compile_ms=compile_ms,
                         cost_ms=_ms_since(t_start), real_timing=False,
                         extra={**extra, "max_error": verification.error, "allowed": verification.allowed})


@dataclass(frozen=True)
class GpuSettings:
    """How ``gpu_measure`` times a config.

    ``graph``: also time the launch replayed from a CUDA graph (what a serving engine's
    captured decode step sees: no launch gaps) and report that as the config's time, with the
    plain ``do_bench`` time beside it in ``extra``. None (default) turns it on for decode
    families (work counted in bytes, e.g. paged attention) and off for the rest.
    """

    device_index: int = 0
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    max_times: int = 64  # repetitions kept in the result (the median uses them all)
    graph: bool | None = None


def gpu_measure(ref: FamilyRef, spec: ProblemSpec, hardware: Hardware, values: Mapping[str, Value], seed: int,
                settings: GpuSettings) -> MeasureResult:
    """Compile (first launch), verify against the reference, then time with L2 flushed.

    Timing is ``triton.testing.do_bench``: CUDA events around each launch, the L2 cache cleared
    before every repetition, median reported. A CUDA error poisons the context, so the result
    asks for the worker to be replaced (``extra['restart_worker']``).
    """
    import torch
    import triton.testing

    t_start = time.perf_counter()
    device = torch.device("cuda", settings.device_index)
    torch.cuda.set_device(device)
    family = load_family(ref)
    config = typed_config(family, spec, hardware, values)
    stage = "compile"
    compile_ms = None
    try:
        inputs = family.make_inputs(spec, device, seed + 1)
        t0 = time.perf_counter()
        family.launch(inputs, config)  # JIT compile + first run
        torch.cuda.synchronize(device)
        compile_ms = (time.perf_counter() - t0) * 1e3
        stage = "verify"
        verification = family.verify(spec, config, device, seed)
        if not verification.ok:
            return MeasureResult(Status.WRONG_RESULT, error=verification.message or "output differs from the reference",
                                 compile_ms=compile_ms, cost_ms=_ms_since(t_start),
                                 extra={"max_error": verification.error, "allowed": verification.allowed})
        stage = "benchmark"
        times = triton.testing.do_bench(lambda: family.launch(inputs, config), warmup=settings.warmup_ms,
                                        rep=settings.rep_ms, return_mode="all")
        torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001
        status = classify(exc)
        if stage != "compile" and status is Status.COMPILE_ERROR:
            status = Status.RUNTIME_ERROR
        # Any runtime failure may have left the CUDA context unusable (an illegal address always
        # does); a fresh worker costs a second, a poisoned one would fail every later config.
        restart = status is Status.RUNTIME_ERROR
        return MeasureResult(status, error=f"{stage}: {_short(exc)}", compile_ms=compile_ms, cost_ms=_ms_since(t_start),
                             extra={"restart_worker": True, "cuda_fault": _cuda_fault(exc)} if restart else {})
    times = [float(t) for t in times]
    kept = tuple(sorted(times)[:: max(1, len(times) // settings.max_times)])
    plain_ms = statistics.median(times)
    extra: dict[str, Any] = {"max_error": verification.error, "allowed": verification.allowed,
                             "repetitions": len(times), "time_plain_ms": plain_ms}
    use_graph = settings.graph if settings.graph is not None else "bytes" in family.work(spec) and "flops" not in family.work(spec)
    time_ms = plain_ms
    if use_graph:
        try:
            graph_ms = _graph_ms(family, spec, config, inputs, seed, settings.rep_ms, plain_ms)
        except Exception as exc:  # noqa: BLE001 - a config that cannot be captured keeps its plain time
            extra["graph_error"] = _short(exc, 300)
        else:
            extra["time_graph_ms"] = graph_ms
            extra["timing"] = "cuda_graph"
            time_ms = graph_ms
    return MeasureResult(Status.OK, time_ms=time_ms, times_ms=kept, compile_ms=compile_ms,
                         cost_ms=_ms_since(t_start), real_timing=True, extra=extra)


L2_EXCEED_BYTES = 256 << 20  # input copies rotate until they exceed every current GPU's L2 (H100: 50 MB)


def _graph_ms(family: Any, spec: ProblemSpec, config: Any, inputs: Mapping[str, Any], seed: int, rep_ms: float,
              estimate_ms: float) -> float:
    """Median ms per launch replayed from one CUDA graph, over input copies that exceed L2.

    Back-to-back replays of one small decode problem (16 MB at batch 1) would time the L2
    cache, so the graph rotates over enough fresh copies of the inputs to exceed it, as a
    serving step's layers do. Every launch was compiled before the capture (the measure above).
    """
    import torch

    size = sum(t.numel() * t.element_size() for t in inputs.values() if isinstance(t, torch.Tensor))
    copies = [inputs] + [family.make_inputs(spec, inputs["q"].device, seed + 2 + i)
                         for i in range(min(15, max(0, -(-L2_EXCEED_BYTES // max(1, size)) - 1)))]
    rounds = rounds_for(estimate_ms, len(copies))  # ~1 ms per replay
    return replay_ms([functools.partial(family.launch, x, config) for x in copies], rounds, rep_ms)


def _cuda_fault(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("cuda error", "illegal", "misaligned", "unspecified launch failure",
                                   "device-side assert", "cudaerror", "hip error"))


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
