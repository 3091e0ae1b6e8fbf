"""Features of (config, problem, hardware) for the cost model.

Three sources, one fixed column layout per kernel (a ``Featurizer``):

- the config's raw parameter values (numbers as they are, booleans 0/1, strings as their index
  in the domain seen in training);
- the problem (numeric fields of the spec, or a landscape's ``problem_size``) and the derived
  features a per-kernel hook computes from (problem, config, hardware): tile sizes, estimated
  shared memory, programs per SM and waves, arithmetic intensity, an occupancy estimate. Kernels
  without a hook of their own get the Kernel Tuner convention hook (``block_size_*`` and
  ``tile_size_*`` parameters over ``problem_size``);
- hardware features from the fingerprint and the device table (``DEVICE_SPECS``).

Optionally (``compile=True``), the compiler's figures for the config on the target's compute
capability (registers per thread, spills, shared memory) from the kernel family's AOT compile,
cached per config, and the occupancy that follows from them.

Bump ``FEATURE_VERSION`` whenever a column's meaning changes: saved models record it and a
model whose version differs is refused at load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritune.search_space import DTYPE_BYTES, Hardware, TuningRecord, Value

FEATURE_VERSION = 1

NAN = float("nan")

# A per-kernel hook: (problem, configs, hardware) -> {feature name: one value per config}. It
# must return the same names for every batch of a kernel (unknown values as NaN) and never
# raise for configs of the kernel's space.
KernelHook = Callable[[Mapping[str, Any], "ConfigBatch", "HardwareInfo"], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class HardwareInfo:
    """The figures the features need, from the fingerprint and (when known) the device table.

    Unknown figures are NaN (the CPU interpreter, a GPU missing from the table): tree models
    route missing values on their own, and the derived features fall back to NaN with them.
    """

    name: str
    vendor_amd: float
    sm_count: float
    smem_per_block: float
    smem_per_sm: float
    regs_per_sm: float
    max_threads_per_sm: float
    l2_bytes: float
    mem_bw_gbs: float
    fp16_tflops: float
    fp32_tflops: float
    warp_size: float
    compute_capability: float  # 8.6 for sm_86; NaN where it has no meaning (AMD, CPU)
    is_interpreter: bool = False

    @property
    def cuda_arch(self) -> int:
        """86 for sm_86; 90 for the interpreter (it stands in for sm_90); 0 when not CUDA."""
        if self.is_interpreter:
            return 90
        return int(round(self.compute_capability * 10)) if self.compute_capability == self.compute_capability else 0

    @classmethod
    def of(cls, hardware: Hardware) -> HardwareInfo:
        spec = hardware.spec
        sm = float(hardware.sm_count) if hardware.sm_count and not hardware.is_interpreter else NAN
        smem_block = float(hardware.smem_per_block) if hardware.smem_per_block else NAN
        cc = NAN
        if hardware.backend == "cuda":
            try:
                cc = float(hardware.compute_capability)
            except ValueError:
                cc = NAN
        if spec is None:
            vendor = hardware.vendor
            return cls(hardware.name, {"amd": 1.0, None: NAN}.get(vendor, 0.0),
                       sm, smem_block, NAN, NAN, NAN, NAN, NAN, NAN, NAN,
                       64.0 if hardware.backend == "hip" else 32.0 if vendor == "nvidia" else NAN, cc,
                       is_interpreter=hardware.is_interpreter)
        return cls(
            name=hardware.name,
            vendor_amd=1.0 if spec.vendor == "amd" else 0.0,
            sm_count=sm if sm == sm else float(spec.sm_count),
            smem_per_block=smem_block if smem_block == smem_block else float(spec.smem_per_block),
            smem_per_sm=float(spec.smem_per_sm),
            regs_per_sm=float(spec.regs_per_sm),
            max_threads_per_sm=float(spec.max_threads_per_sm),
            l2_bytes=float(spec.l2_bytes),
            mem_bw_gbs=float(spec.mem_bw_gbs),
            fp16_tflops=float(spec.fp16_tflops),
            fp32_tflops=float(spec.fp32_tflops),
            warp_size=float(spec.warp_size),
            compute_capability=cc if cc == cc or spec.vendor == "amd" else _cc(spec.compute_capability),
        )

    def features(self) -> dict[str, float]:
        """Hardware columns, named as ``HARDWARE_NAMES`` (log scale for the sizes and rates: ratios are what matter)."""
        return {
            "hw_vendor_amd": self.vendor_amd,
            "hw_log_sm_count": _log(self.sm_count),
            "hw_log_smem_per_sm": _log(self.smem_per_sm),
            "hw_log_smem_per_block": _log(self.smem_per_block),
            "hw_log_regs_per_sm": _log(self.regs_per_sm),
            "hw_log_max_threads_per_sm": _log(self.max_threads_per_sm),
            "hw_log_l2_bytes": _log(self.l2_bytes),
            "hw_log_mem_bw": _log(self.mem_bw_gbs),
            "hw_log_fp16_tflops": _log(self.fp16_tflops),
            "hw_log_fp32_tflops": _log(self.fp32_tflops),
            "hw_log_warp_size": _log(self.warp_size),
        }


HARDWARE_NAMES = ("hw_vendor_amd", "hw_log_sm_count", "hw_log_smem_per_sm", "hw_log_smem_per_block",
                  "hw_log_regs_per_sm", "hw_log_max_threads_per_sm", "hw_log_l2_bytes", "hw_log_mem_bw",
                  "hw_log_fp16_tflops", "hw_log_fp32_tflops", "hw_log_warp_size")


def _cc(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return NAN


def _log(x: float) -> float:
    return math.log(x) if x == x and x > 0 else NAN


class ConfigBatch:
    """The configs being featurized: by row (``rows``) and by parameter column (``column``).

    Hooks read columns as float arrays (booleans 0/1, non-numbers NaN), so generic features are
    computed for thousands of configs at numpy speed; hooks that need the search space's
    per-config estimates iterate ``rows``.
    """

    def __init__(self, rows: Sequence[Mapping[str, Value]]) -> None:
        self.rows = rows
        self._columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, name: str) -> bool:
        return bool(self.rows) and name in self.rows[0]

    def column(self, name: str, default: float = NAN) -> np.ndarray:
        if name not in self._columns:
            if not self.has(name):
                self._columns[name] = np.full(len(self.rows), default)
            else:
                values = [r.get(name, default) for r in self.rows]
                try:
                    self._columns[name] = np.array(values, dtype=np.float64)
                except (TypeError, ValueError):  # strings among the values
                    self._columns[name] = np.array([_num(v) for v in values], dtype=np.float64)
        return self._columns[name]


def occupancy(hw: HardwareInfo, threads: Any, smem_bytes: Any = 0.0, registers: Any = NAN,
              max_blocks_per_sm: float = 32.0) -> tuple[np.ndarray, np.ndarray]:
    """(resident programs per SM, share of the SM's thread slots they fill), estimated.

    Element-wise over arrays. Limited by threads, shared memory and (when known) registers;
    NaN when the hardware figures are unknown; (0, 0) for a program that does not fit at all.
    """
    threads = np.asarray(threads, dtype=np.float64)
    if not (hw.max_threads_per_sm == hw.max_threads_per_sm):
        nan = np.full(threads.shape, NAN)
        return nan, nan.copy()
    warp = hw.warp_size if hw.warp_size == hw.warp_size else 32.0
    slots = np.maximum(np.ceil(threads / warp), 1.0) * warp
    blocks = np.minimum(max_blocks_per_sm, np.floor(hw.max_threads_per_sm / slots))
    smem = np.asarray(smem_bytes, dtype=np.float64)
    if hw.smem_per_sm == hw.smem_per_sm:
        by_smem = np.where(smem > 0, np.floor(hw.smem_per_sm / np.where(smem > 0, smem, 1.0)), np.inf)
        blocks = np.minimum(blocks, by_smem)
    regs = np.asarray(registers, dtype=np.float64)
    if hw.regs_per_sm == hw.regs_per_sm:
        known = np.isfinite(regs) & (regs > 0)
        by_regs = np.where(known, np.floor(hw.regs_per_sm / (np.where(known, regs, 1.0) * slots)), np.inf)
        blocks = np.minimum(blocks, by_regs)
    blocks = np.maximum(blocks, 0.0)
    return blocks, blocks * slots / hw.max_threads_per_sm


# --- the Kernel Tuner convention (generic spaces) -----------------------------------------
def kernel_tuner_features(problem: Mapping[str, Any], batch: ConfigBatch, hw: HardwareInfo) -> dict[str, np.ndarray]:
    """Derived features of a Kernel Tuner style kernel.

    Kernel Tuner names thread-block dimensions ``block_size_{x,y,z}`` and, by convention, work
    per thread ``tile_size_{x,y,z}``; the grid covers ``problem_size`` with one block per
    ``block_size * tile_size`` elements in each dimension. Spaces without those names get only
    NaN here (their raw values still reach the model).
    """
    n = len(batch)
    if not any(batch.has(f"block_size_{d}") for d in "xyz"):
        return {k: np.full(n, NAN) for k in KT_NAMES}
    size = _extents(problem.get("problem_size"))
    block = [batch.column(f"block_size_{d}", 1.0) for d in "xyz"]
    tile = [batch.column(f"tile_size_{d}", 1.0) for d in "xyz"]
    threads = block[0] * block[1] * block[2]
    grid = np.ones(n)
    for d, extent in enumerate(size):
        grid = grid * np.ceil(extent / np.maximum(1.0, block[d] * tile[d]))
    warp = hw.warp_size if hw.warp_size == hw.warp_size else 32.0
    resident, occ = occupancy(hw, threads)
    with np.errstate(divide="ignore", invalid="ignore"):
        waves = np.where(resident > 0, grid / (hw.sm_count * resident), NAN)
    return {
        "kt_threads": threads,
        "kt_work_per_thread": tile[0] * tile[1] * tile[2],
        "kt_block_tile_x": block[0] * tile[0],
        "kt_block_tile_y": block[1] * tile[1],
        "kt_log_grid": np.log2(np.maximum(grid, 1.0)),
        "kt_warp_efficiency": threads / (np.maximum(np.ceil(threads / warp), 1.0) * warp),
        "kt_x_per_warp": block[0] / warp,
        "kt_occupancy": occ,
        "kt_waves": waves,
        "kt_wave_tail": waves - np.floor(waves),
    }


def _extents(problem_size: Any) -> list[float]:
    """Up to three grid extents from a Kernel Tuner ``problem_size``: a number (pnpoly's
    20000000) or a list of them; anything that is not a positive number adds no dimension."""
    raw = problem_size if isinstance(problem_size, list | tuple) else [problem_size]
    return [v for v in (_num(x) for x in raw[:3]) if v == v and v > 0]


KT_NAMES = ("kt_threads", "kt_work_per_thread", "kt_block_tile_x", "kt_block_tile_y", "kt_log_grid",
            "kt_warp_efficiency", "kt_x_per_warp", "kt_occupancy", "kt_waves", "kt_wave_tail")


def _num(v: Any) -> float:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    try:
        return float(v)
    except (TypeError, ValueError):
        return NAN


# --- hook registry ---------------------------------------------------------------------------
def _builtin_hooks() -> dict[str, KernelHook]:
    from ._attention import flash_attention_features, paged_attention_features, varlen_attention_features

    return {"flash_attention": flash_attention_features, "paged_attention": paged_attention_features,
            "varlen_attention": varlen_attention_features}


_EXTRA_HOOKS: dict[str, KernelHook] = {}


def register_kernel_features(kernel: str, hook: KernelHook) -> None:
    """Use ``hook`` for ``kernel``'s derived features (a new kernel family calls this once).

    Changing a hook changes the features of saved models: bump ``FEATURE_VERSION`` with it.
    """
    _EXTRA_HOOKS[kernel] = hook


def kernel_hook(kernel: str) -> KernelHook:
    """The derived-feature hook of ``kernel``: its own, else the Kernel Tuner convention."""
    if kernel in _EXTRA_HOOKS:
        return _EXTRA_HOOKS[kernel]
    return _builtin_hooks().get(kernel, kernel_tuner_features)


# --- compiler features -----------------------------------------------------------------------
CompileFn = Callable[[str, Mapping[str, Any], Mapping[str, Value], int], Any]
COMPILE_NAMES = ("cc_registers", "cc_spill_bytes", "cc_shared_bytes", "cc_fits", "cc_occupancy")


def family_compile(kernel: str, problem: Mapping[str, Any], config: Mapping[str, Value], arch: int) -> Any:
    """The kernel family's AOT compile report for ``config`` (None when it has no family)."""
    from tritune.kernels import get_family
    from tritune.search_space import spec_from_dict

    try:
        family = get_family(kernel)
        spec = spec_from_dict(kernel, problem)
    except (ValueError, ImportError):
        return None
    from tritune.search_space import space_for

    typed = space_for(spec, _any_hardware()).config_type.from_dict(config)
    return family.compile(spec, typed, arch=arch)


def _any_hardware() -> Hardware:
    return Hardware.from_spec("H100")


@dataclass
class CompilerFeatures:
    """Registers, spills and shared memory from an AOT compile for the target, cached per config.

    Only CUDA targets with a compute capability compile (the compile tier emits PTX/cubin);
    others get NaN. ``compile_fn`` is the family's compile by default; tests pass a stub. A cold
    compile takes about a second per config (the compile tier also caches on disk), which is why
    these features are opt-in.
    """

    compile_fn: CompileFn = family_compile
    cache: dict[str, dict[str, float]] = field(default_factory=dict)

    def __call__(self, kernel: str, problem: Mapping[str, Any], batch: ConfigBatch, hw: HardwareInfo,
                 threads: np.ndarray) -> dict[str, np.ndarray]:
        n = len(batch)
        arch = int(round(hw.compute_capability * 10)) if hw.compute_capability == hw.compute_capability else None
        if arch is None:
            return {k: np.full(n, NAN) for k in COMPILE_NAMES}
        rows = [self._report(kernel, problem, config, arch) for config in batch.rows]
        out = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in COMPILE_NAMES if k != "cc_occupancy"}
        shared = np.where(np.isfinite(out["cc_shared_bytes"]), out["cc_shared_bytes"], 0.0)
        _, occ = occupancy(hw, threads, smem_bytes=shared, registers=out["cc_registers"])
        out["cc_occupancy"] = np.where(out["cc_fits"] == 0.0, 0.0, np.where(np.isfinite(out["cc_registers"]), occ, NAN))
        return {k: out[k] for k in COMPILE_NAMES}

    def _report(self, kernel: str, problem: Mapping[str, Any], config: Mapping[str, Value], arch: int) -> dict[str, float]:
        key = json.dumps([kernel, dict(problem), dict(config), arch], sort_keys=True, default=str)
        if key not in self.cache:
            self.cache[key] = self._compile(kernel, problem, config, arch)
        return self.cache[key]

    def _compile(self, kernel: str, problem: Mapping[str, Any], config: Mapping[str, Value], arch: int) -> dict[str, float]:
        try:
            report = self.compile_fn(kernel, problem, config, arch)
        except Exception:  # a compile tier problem must not break ranking; the columns go missing
            report = None
        if report is None or not getattr(report, "ok", False):
            fits = 0.0 if report is not None else NAN
            return {"cc_registers": NAN, "cc_spill_bytes": NAN, "cc_shared_bytes": NAN, "cc_fits": fits}
        regs = report.registers if report.registers is not None else NAN
        spill = float((report.stack_bytes or 0) + (report.local_bytes or 0))
        return {"cc_registers": float(regs), "cc_spill_bytes": spill,
                "cc_shared_bytes": float(report.shared_bytes + report.static_shared_bytes),
                "cc_fits": 1.0 if report.fits else 0.0}


# --- the featurizer --------------------------------------------------------------------------
def problem_features(problem: Mapping[str, Any]) -> dict[str, float]:
    """Numeric facts of the problem: spec fields, ``problem_size`` entries, dtype width."""
    out: dict[str, float] = {}
    for k, v in sorted(problem.items()):
        if isinstance(v, bool):
            out[f"pb_{k}"] = 1.0 if v else 0.0
        elif isinstance(v, int | float):
            out[f"pb_log_{k}"] = _log(float(v)) if v > 0 else NAN
        elif isinstance(v, list | tuple):
            for i, x in enumerate(v):
                if isinstance(x, int | float) and not isinstance(x, bool):
                    out[f"pb_log_{k}_{i}"] = _log(float(x)) if x > 0 else NAN
        elif k == "dtype" and isinstance(v, str):
            out["pb_dtype_bytes"] = float(DTYPE_BYTES.get(v, NAN))
    return out


@dataclass
class Featurizer:
    """The fixed column layout of one kernel's features (built from its training records).

    ``params`` keeps the training order of the parameters; ``categories`` maps each
    non-numeric parameter to the values seen in training (unseen values become NaN).
    """

    kernel: str
    params: tuple[str, ...]
    categories: dict[str, tuple[Any, ...]]
    problem_names: tuple[str, ...]
    derived_names: tuple[str, ...]
    compile: bool = False
    compiler: CompilerFeatures | None = None

    @classmethod
    def from_records(cls, kernel: str, records: Sequence[TuningRecord], *, compile: bool = False) -> Featurizer:
        if not records:
            raise ValueError(f"no training records for kernel {kernel!r}")
        params: dict[str, None] = {}
        cats: dict[str, dict[Any, None]] = {}
        problems: dict[str, None] = {}
        for r in records:
            for k, v in r.config.items():
                params.setdefault(k)
                if not isinstance(v, bool | int | float):
                    cats.setdefault(k, {}).setdefault(v)
        seen: set[str] = set()
        derived: dict[str, None] = {}
        hook = kernel_hook(kernel)
        for r in records:
            pkey = json.dumps(r.problem, sort_keys=True, default=str) + r.hardware.key
            if pkey in seen:
                continue
            seen.add(pkey)
            problems.update(dict.fromkeys(problem_features(r.problem)))
            derived.update(dict.fromkeys(hook(r.problem, ConfigBatch([r.config]), HardwareInfo.of(r.hardware))))
        return cls(kernel, tuple(params), {k: tuple(v) for k, v in cats.items()}, tuple(problems), tuple(derived),
                   compile=compile)

    @property
    def names(self) -> tuple[str, ...]:
        cc = COMPILE_NAMES if self.compile else ()
        return (*(f"p_{p}" for p in self.params), *self.problem_names, *self.derived_names, *HARDWARE_NAMES, *cc)

    def transform(self, hardware: Hardware, problem: Mapping[str, Any], configs: Sequence[Mapping[str, Value]]) -> np.ndarray:
        """One row per config (float64, NaN where a value is unknown)."""
        return self.transform_many([hardware], problem, configs)[0]

    def transform_many(self, hardwares: Sequence[Hardware], problem: Mapping[str, Any],
                       configs: Sequence[Mapping[str, Value]]) -> list[np.ndarray]:
        """The feature matrix of ``configs`` on each of ``hardwares`` (shared columns built once)."""
        batch = ConfigBatch(configs)
        n = len(configs)
        raw = [self._raw_column(batch, p) for p in self.params]
        fixed = problem_features(problem)
        base = np.column_stack([*raw, *(np.full(n, fixed.get(name, NAN)) for name in self.problem_names)]) \
            if raw or self.problem_names else np.zeros((n, 0))
        hook = kernel_hook(self.kernel)
        out = []
        for hardware in hardwares:
            hw = HardwareInfo.of(hardware)
            derived = hook(problem, batch, hw)
            cols = [np.broadcast_to(np.asarray(derived.get(name, NAN), dtype=np.float64), (n,)) for name in self.derived_names]
            cols += [np.full(n, v) for v in hw.features().values()]
            if self.compile:
                if self.compiler is None:
                    self.compiler = CompilerFeatures()
                threads = np.asarray(derived.get("threads", derived.get("kt_threads", np.full(n, NAN))), dtype=np.float64)
                cc = self.compiler(self.kernel, problem, batch, hw, threads)
                cols += [cc[name] for name in COMPILE_NAMES]
            out.append(np.column_stack([base, *cols]) if cols else base)
        return out

    def _raw_column(self, batch: ConfigBatch, name: str) -> np.ndarray:
        if name in self.categories:
            codes = {v: float(i) for i, v in enumerate(self.categories[name])}
            return np.array([codes.get(r.get(name), NAN) for r in batch.rows], dtype=np.float64)
        return batch.column(name)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["compiler"] = None  # compile caches are per process; the compile tier's disk cache persists
        return state


def hardware_vector(hardware: Hardware) -> np.ndarray:
    """The hardware columns as a vector (for similarity between devices)."""
    return np.array(list(HardwareInfo.of(hardware).features().values()), dtype=np.float64)
