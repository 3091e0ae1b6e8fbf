"""Ahead-of-time compile tier: compile a kernel for a GPU target on a machine without a GPU.

Triton lowers a ``@triton.jit`` function to PTX and a cubin for any CUDA compute capability
without a driver; ``cuobjdump`` (shipped inside the triton wheel) reads registers, stack and
static shared memory off the cubin. This catches what the interpreter does not enforce (``tl.dot``
shape rules, shared memory over the per-block limit) and gives the cost model compiler features.

Reports are cached in-process and on disk by (source hash, signature, constexprs, options,
target, Triton version), since one compile takes about a second.

A second Triton: the GPU image compiles with an older Triton (3.6) than this machine's, and a
knob can compile on one and crash on the other (warp specialization does). ``python=`` sends a
compile to a side virtualenv that has only that Triton installed (``scripts/make_triton_venv.sh``
makes it; ``side_python`` finds it); it borrows this interpreter's site-packages for torch and
tritune itself, behind its own Triton.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_MEMO: dict[str, CompileReport] = {}
REPORT_SCHEMA = 3  # bump when CompileReport gains fields, so cached reports are recomputed


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
    maxnreg: int = 0  # the register cap it was compiled under (0: none)
    shared_bytes: int = 0  # dynamic shared memory the launch requests (kernel metadata)
    static_shared_bytes: int = 0
    registers: int | None = None  # per thread
    stack_bytes: int | None = None  # > 0 means register spills to local memory
    local_bytes: int | None = None
    uses_wgmma: bool = False
    fits: bool = True
    compile_s: float = 0.0
    error: str | None = None
    # What the knobs past stock Triton are for, read off the compiler's output:
    triton_version: str = ""
    total_warps: int | None = None  # warps launched; above num_warps when warp-specialized
    ws_partitions: int = 0  # worker partitions of ttg.warp_specialize regions in the TTGIR
    setmaxnreg: int = 0  # setmaxnreg instructions in the PTX (register hand-off between partitions)
    max_setmaxnreg: int = 0  # the largest register count one of them sets
    ex2: int = 0  # ex2.approx instructions in the PTX (special-function-unit exponentials)
    fma: int = 0  # fp32 fma instructions in the PTX

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
    maxnreg: int | None = None,
    python: str | os.PathLike[str] | None = None,
) -> CompileReport:
    """Compile ``fn`` for ``sm_{arch}`` and report its resources; never raises for a bad config.

    ``signature`` maps every argument name to a Triton type (``"*fp16"``, ``"i32"``,
    ``"constexpr"``...); ``constexprs`` gives the constexpr values. ``aligned`` names the
    pointer and integer arguments a real launch would specialize as divisible by 16 (aligned
    pointers, strides that are multiples of 16): without that hint the compiler cannot vectorize
    or pipeline the loads, and its shared-memory and register figures differ from the GPU's.
    ``maxnreg`` caps registers per thread (Triton's launch option). ``python``: the interpreter
    of a side virtualenv with another Triton (see ``side_python``) to compile with instead.
    """
    version = _side(python).version if python is not None else _triton_version()
    key_src = json.dumps(
        [getattr(fn, "__name__", str(fn)), source_hash or _fn_hash(fn), dict(signature),
         {k: _jsonable(v) for k, v in constexprs.items()}, arch, num_warps, num_stages, version,
         sorted(aligned), REPORT_SCHEMA] + ([maxnreg] if maxnreg else []),
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    if use_cache and key in _MEMO:
        return _MEMO[key]
    cached = _disk_get(key) if use_cache else None
    if cached is not None:
        _MEMO[key] = cached
        return cached
    if python is not None:
        report = _side(python).compile(fn, signature, constexprs, arch=arch, num_warps=num_warps,
                                       num_stages=num_stages, aligned=aligned, maxnreg=maxnreg)
    else:
        report = _compile(fn, signature, constexprs, arch=arch, num_warps=num_warps, num_stages=num_stages,
                          aligned=aligned, maxnreg=maxnreg)
    _MEMO[key] = report
    if use_cache:
        _disk_put(key, report)
    return report


def _compile(fn: Any, signature: Mapping[str, str], constexprs: Mapping[str, Any], *, arch: int,
             num_warps: int, num_stages: int, aligned: Sequence[str] = (), maxnreg: int | None = None) -> CompileReport:
    import triton
    from triton.backends.compiler import GPUTarget

    if _interpreted(fn):
        return _compile_in_worker(fn, signature, constexprs, arch=arch, num_warps=num_warps,
                                  num_stages=num_stages, aligned=aligned, maxnreg=maxnreg)
    start = time.perf_counter()
    base = {"arch": arch, "num_warps": num_warps, "num_stages": num_stages, "maxnreg": int(maxnreg or 0),
            "triton_version": triton.__version__}
    options: dict[str, Any] = {"num_warps": num_warps, "num_stages": num_stages}
    if maxnreg:
        options["maxnreg"] = int(maxnreg)
    try:
        attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
        src = triton.compiler.ASTSource(fn=fn, signature=dict(signature), constexprs=dict(constexprs), attrs=attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    except Exception as exc:  # any compiler failure is a property of the config, not a crash
        message = _first_line(exc)
        return CompileReport(ok=False, fits=False, compile_s=time.perf_counter() - start, error=message, **base)
    elapsed = time.perf_counter() - start
    shared = int(kernel.metadata.shared)
    usage = resource_usage(kernel.asm["cubin"])
    static = usage.get("shared", 0)
    ptx = kernel.asm.get("ptx", "")
    ttgir = kernel.asm.get("ttgir", "")
    limit = SMEM_LIMIT.get(arch, 101376)
    regs_set = [int(n) for n in _SETMAXNREG.findall(ptx)]
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
        total_warps=int(getattr(kernel.metadata, "num_warps", num_warps)),
        ws_partitions=len(_PARTITION.findall(ttgir)),
        setmaxnreg=len(regs_set),
        max_setmaxnreg=max(regs_set, default=0),
        ex2=len(_EX2.findall(ptx)),
        fma=len(_FMA.findall(ptx)),
        **base,
    )


# PTX / TTGIR patterns the report counts (checked on triton 3.6 and 3.9 output).
_SETMAXNREG = re.compile(r"setmaxnreg\.(?:inc|dec)\.sync\.aligned\.u32\s+(\d+)")
_PARTITION = re.compile(r"^\s*partition\d+\(", re.M)
_EX2 = re.compile(r"\bex2\.approx")
_FMA = re.compile(r"\bfma\.rn(?:\.ftz)?\.f32\b")


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


# --- compiling with another Triton (a side virtualenv) ----------------------------------------
SIDE_ENV = "TRITUNE_SIDE_TRITON"  # path of a side virtualenv's python, overrides the default
SIDE_VENV = ".venv-triton36"  # default location, at the repository root (scripts/make_triton_venv.sh)


def side_python() -> Path | None:
    """The side virtualenv's interpreter (Triton 3.6, the GPU image's), or None if absent.

    ``$TRITUNE_SIDE_TRITON`` names it explicitly (an empty value turns it off); otherwise
    ``.venv-triton36/bin/python`` at the repository root, where the script and CI put it.
    """
    explicit = os.environ.get(SIDE_ENV)
    if explicit is not None:
        return Path(explicit) if explicit and Path(explicit).exists() else None
    default = Path(__file__).resolve().parents[1] / SIDE_VENV / "bin" / "python"
    return default if default.exists() else None


# The side interpreter first puts this interpreter's site directories behind its own (their
# .pth files run too, so an editable tritune install resolves), then serves compile requests.
_BOOT = ("import os, site; [site.addsitedir(p) for p in os.environ['TRITUNE_HOST_SITE'].split(os.pathsep) if p]; "
         "from tritune.kernels._compile import _serve; _serve()")


class _SideCompiler:
    """One long-lived side interpreter answering JSON-line compile requests on stdin/stdout."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.version = self._request({"op": "version"})["version"]

    def _start(self) -> subprocess.Popen[str]:
        host = [*site.getsitepackages(), site.getusersitepackages(), *(p for p in sys.path if p.endswith("site-packages"))]
        env = {**os.environ, "TRITON_INTERPRET": "0", "TRITUNE_HOST_SITE": os.pathsep.join(dict.fromkeys(host))}
        return subprocess.Popen([str(self.python), "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            for _attempt in (0, 1):  # a dead side process is restarted once
                if self.proc is None or self.proc.poll() is not None:
                    self.proc = self._start()
                assert self.proc.stdin is not None and self.proc.stdout is not None
                try:
                    self.proc.stdin.write(json.dumps(message) + "\n")
                    self.proc.stdin.flush()
                    line = self.proc.stdout.readline()
                except (BrokenPipeError, OSError):
                    line = ""
                if line:
                    return json.loads(line)
                self.proc.kill()
                self.proc = None
            raise RuntimeError(f"the side Triton interpreter {self.python} died; run it by hand to see why")

    def compile(self, fn: Any, signature: Mapping[str, str], constexprs: Mapping[str, Any], **options: Any) -> CompileReport:
        target = fn.fn if _interpreted(fn) else fn
        message = {"op": "compile", "module": target.__module__, "name": target.__name__,
                   "signature": dict(signature), "constexprs": {k: _jsonable(v) for k, v in constexprs.items()},
                   "options": {**options, "aligned": list(options.get("aligned", ()))}}
        try:
            return CompileReport(**self._request(message)["report"])
        except RuntimeError as exc:
            base = {k: options[k] for k in ("arch", "num_warps", "num_stages")}
            return CompileReport(ok=False, fits=False, error=str(exc), triton_version=self.version, **base)


_SIDES: dict[str, _SideCompiler] = {}


def _side(python: str | os.PathLike[str]) -> _SideCompiler:
    key = str(python)
    if key not in _SIDES:
        _SIDES[key] = _SideCompiler(Path(python))
    return _SIDES[key]


def _serve() -> None:
    """The side interpreter's loop: one JSON request per stdin line, one JSON answer per line.

    Anything else written to stdout (a library's print) would corrupt the answers, so answers
    go to a private copy of the stdout descriptor and stdout itself is pointed at stderr.
    """
    import importlib

    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    os.environ["TRITON_INTERPRET"] = "0"
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "version":
            answer: dict[str, Any] = {"version": _triton_version()}
        else:
            fn = getattr(importlib.import_module(request["module"]), request["name"])
            report = _compile(fn, request["signature"], request["constexprs"], **request["options"])
            answer = {"report": report.to_dict()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


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
