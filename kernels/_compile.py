"""Ahead-of-time compile tier: compile a kernel for a GPU target on a machine without a GPU.

Triton lowers a ``@triton.jit`` function to PTX and a cubin for any CUDA compute capability
without a driver; ``cuobjdump`` (shipped inside the triton wheel) reads registers, stack and
static shared memory off the cubin. This catches what the interpreter does not enforce (``tl.dot``
shape rules, shared memory over the per-block limit) and gives the cost model compiler features.

Reports are cached in-process and on disk by (source hash, signature, constexprs, options,
target), since one compile takes about a second.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_MEMO: dict[str, CompileReport] = {}


@dataclass(frozen=True)
class CompileReport:
    """What the compiler says about one config on one target.

    ``ok`` False means the compile itself failed (``error`` says why); a compile that succeeds
    but needs more shared memory than the target has is ``ok`` with ``fits`` False.
    """

    ok: bool
    arch: int
    num_warps: int
    num_stages: int
    shared_bytes: int = 0  # dynamic shared memory the launch requests (kernel metadata)
    static_shared_bytes: int = 0
    registers: int | None = None  # per thread
    stack_bytes: int | None = None  # > 0 means register spills to local memory
    local_bytes: int | None = None
    uses_wgmma: bool = False
    fits: bool = True
    compile_s: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Opt-in shared memory per block by compute capability (bytes); used to judge ``fits``.
SMEM_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}


def compile_for_target(
    fn: Any,
    signature: Mapping[str, str],
    constexprs: Mapping[str, Any],
    *,
    arch: int = 90,
    num_warps: int = 4,
    num_stages: int = 2,
    source_hash: str = "",
    use_cache: bool = True,
    aligned: Sequence[str] = (),
) -> CompileReport:
    """Compile ``fn`` for ``sm_{arch}`` and report its resources; never raises for a bad config.

    ``signature`` maps every argument name to a Triton type (``"*fp16"``, ``"i32"``,
    ``"constexpr"``...); ``constexprs`` gives the constexpr values. ``aligned`` names the
    pointer and integer arguments a real launch would specialize as divisible by 16 (aligned
    pointers, strides that are multiples of 16): without that hint the compiler cannot vectorize
    or pipeline the loads, and its shared-memory and register figures differ from the GPU's.
    """
    key_src = json.dumps(
        [getattr(fn, "__name__", str(fn)), source_hash or _fn_hash(fn), dict(signature),
         {k: _jsonable(v) for k, v in constexprs.items()}, arch, num_warps, num_stages, _triton_version(),
         sorted(aligned)],
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    if use_cache and key in _MEMO:
        return _MEMO[key]
    cached = _disk_get(key) if use_cache else None
    if cached is not None:
        _MEMO[key] = cached
        return cached
    report = _compile(fn, signature, constexprs, arch=arch, num_warps=num_warps, num_stages=num_stages,
                      aligned=aligned)
    _MEMO[key] = report
    if use_cache:
        _disk_put(key, report)
    return report


def _compile(fn: Any, signature: Mapping[str, str], constexprs: Mapping[str, Any], *, arch: int,
             num_warps: int, num_stages: int, aligned: Sequence[str] = ()) -> CompileReport:
    import triton
    from triton.backends.compiler import GPUTarget

    if _interpreted(fn):
        return _compile_in_worker(fn, signature, constexprs, arch=arch, num_warps=num_warps,
                                  num_stages=num_stages, aligned=aligned)
    start = time.perf_counter()
    base = {"arch": arch, "num_warps": num_warps, "num_stages": num_stages}
    try:
        attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
        src = triton.compiler.ASTSource(fn=fn, signature=dict(signature), constexprs=dict(constexprs), attrs=attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as exc:  # any compiler failure is a property of the config, not a crash
        message = _first_line(exc)
        return CompileReport(ok=False, fits=False, compile_s=time.perf_counter() - start, error=message, **base)
    elapsed = time.perf_counter() - start
    shared = int(kernel.metadata.shared)
    usage = resource_usage(kernel.asm["cubin"])
    static = usage.get("shared", 0)
    ptx = kernel.asm.get("ptx", "")
    limit = SMEM_LIMIT.get(arch, 101376)
    return CompileReport(
        ok=True,
        shared_bytes=shared,
        static_shared_bytes=static,
        registers=usage.get("registers"),
        stack_bytes=usage.get("stack"),
        local_bytes=usage.get("local"),
        uses_wgmma="wgmma" in ptx,
        fits=shared + static <= limit,
        compile_s=elapsed,
        **base,
    )


# --- compiling from a process that runs kernels in the interpreter ----------------------------
# Under TRITON_INTERPRET=1, @triton.jit returns InterpretedFunctions (the kernel and every
# triton.language helper it calls), which cannot be compiled. Such compiles go to one spawned
# worker process with the interpreter off, which imports the kernel's module afresh; it is
# started on first need (a few seconds: torch and triton imports) and reused.
_WORKER: ProcessPoolExecutor | None = None


def _interpreted(fn: Any) -> bool:
    from triton.runtime.jit import JITFunction

    return not isinstance(fn, JITFunction) and hasattr(fn, "fn")


def _compile_in_worker(fn: Any, signature: Mapping[str, str], constexprs: Mapping[str, Any], **options: Any) -> CompileReport:
    global _WORKER
    target = (fn.fn.__module__, fn.fn.__name__)
    base = {k: options[k] for k in ("arch", "num_warps", "num_stages")}
    if _WORKER is None:
        _WORKER = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init)
    try:
        future = _WORKER.submit(_compile_named, target, dict(signature), dict(constexprs), options)
        return future.result(timeout=900)
    except Exception as exc:  # a dead or hung worker: report it, start a fresh one next time
        _WORKER.shutdown(wait=False, cancel_futures=True)
        _WORKER = None
        return CompileReport(ok=False, fits=False, error=f"compile worker failed: {_first_line(exc)}", **base)


def _worker_init() -> None:
    os.environ["TRITON_INTERPRET"] = "0"


def _compile_named(target: tuple[str, str], signature: dict[str, str], constexprs: dict[str, Any],
                   options: dict[str, Any]) -> CompileReport:
    import importlib

    fn = getattr(importlib.import_module(target[0]), target[1])
    return _compile(fn, signature, constexprs, **options)


def cuobjdump_path() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, stack, static shared and local memory of the first function in ``cubin``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        out = subprocess.run([str(cuobjdump_path()), "--dump-resource-usage", path],
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        os.unlink(path)
    m = _USAGE.search(out)
    if not m:
        return {}
    reg, stack, shared, local = (int(g) for g in m.groups())
    return {"registers": reg, "stack": stack, "shared": shared, "local": local}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # Triton's compile errors put the useful line last (after the source excerpt).
    useful = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else text)
    return f"{type(exc).__name__}: {useful.strip()[:400]}"


def _fn_hash(fn: Any) -> str:
    src = getattr(fn, "src", None) or getattr(getattr(fn, "fn", None), "__code__", None)
    return hashlib.sha256(str(src).encode()).hexdigest()[:16]


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, int | float | str | bool) or v is None else str(v)


def _triton_version() -> str:
    import triton

    return triton.__version__


def _cache_dir() -> Path:
    base = os.environ.get("TRITUNE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tritune")
    return Path(base) / "compile"


def _disk_get(key: str) -> CompileReport | None:
    path = _cache_dir() / f"{key}.json"
    try:
        return CompileReport(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _disk_put(key: str, report: CompileReport) -> None:
    try:
        d = _cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(report.to_dict()))
        tmp.replace(d / f"{key}.json")
    except OSError:
        pass  # a read-only cache directory only costs recompiles
