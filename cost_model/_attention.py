"""Derived features of the two attention kernel families (the per-kernel feature hooks).

Both follow one picture of a launch: a grid of programs, each of ``num_warps`` warps, resident
on the SMs as far as threads, shared memory and registers allow, running in waves. The shared
memory and register figures are the search space's own estimates (``search_space``, for the
target's compute capability), so the cost model sees what the constraints see. Everything is an estimate from the spec: no compile.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from tritune.search_space import DTYPE_BYTES, spec_from_dict
from tritune.search_space import flash_attention as fa_space
from tritune.search_space import paged_attention as pa_space

from ._features import NAN, ConfigBatch, HardwareInfo, occupancy

FLASH_NAMES = ("threads", "programs", "log_programs_per_sm", "smem_est", "smem_fraction", "regs_est",
               "resident_programs", "occupancy_est", "waves", "wave_efficiency", "kv_tiles", "arith_intensity",
               "log_work_per_program")
PAGED_NAMES = ("threads", "programs", "log_programs_per_sm", "smem_est", "smem_fraction", "resident_programs",
               "occupancy_est", "waves", "wave_efficiency", "tokens_per_program", "kv_steps", "pages_per_step",
               "arith_intensity", "log_bytes_per_program")


@functools.lru_cache(maxsize=256)
def _spec(kernel: str, problem_json: str) -> Any:
    return spec_from_dict(kernel, json.loads(problem_json))


def _spec_of(kernel: str, problem: Mapping[str, Any]) -> Any:
    try:
        return _spec(kernel, json.dumps(dict(problem), sort_keys=True))
    except (TypeError, ValueError):
        return None


def _nan(names: tuple[str, ...], n: int) -> dict[str, np.ndarray]:
    return {k: np.full(n, NAN) for k in names}


def _estimate(fn: Any, spec: Any, batch: ConfigBatch) -> np.ndarray:
    """A search-space estimate per config (NaN where the config lacks what it needs)."""
    out = np.full(len(batch), NAN)
    for i, row in enumerate(batch.rows):
        try:
            out[i] = float(fn(spec, row))
        except (KeyError, TypeError, ValueError):
            pass
    return out


def _launch(hw: HardwareInfo, programs: np.ndarray, threads: np.ndarray, smem: np.ndarray,
            regs: np.ndarray) -> dict[str, np.ndarray]:
    """Residency and waves of the programs on ``hw`` (NaN where hardware is unknown)."""
    resident, occ = occupancy(hw, threads, smem_bytes=np.nan_to_num(smem), registers=regs)
    slots = hw.sm_count * resident
    with np.errstate(divide="ignore", invalid="ignore"):
        waves = np.where(slots > 0, programs / slots, NAN)
        efficiency = np.where(slots > 0, programs / (np.ceil(waves) * slots), NAN)
        per_sm = np.log2(programs / hw.sm_count)
    return {
        "log_programs_per_sm": per_sm,
        "smem_fraction": smem / hw.smem_per_block,
        "resident_programs": resident,
        "occupancy_est": occ,
        "waves": waves,
        "wave_efficiency": efficiency,
    }


def flash_attention_features(problem: Mapping[str, Any], batch: ConfigBatch, hw: HardwareInfo) -> dict[str, np.ndarray]:
    """Tiles, programs and waves, estimated shared memory and registers, arithmetic intensity.

    The grid is ``cdiv(seq_q, block_m) x batch*heads_q`` (kernels/flash_attention.py). Under a
    causal mask with ``seq_q == seq_kv`` a program sees half the keys on average.
    """
    n = len(batch)
    spec = _spec_of("flash_attention", problem)
    if spec is None or not batch.has("block_m") or not batch.has("block_n"):
        return _nan(FLASH_NAMES, n)
    block_m, block_n = batch.column("block_m"), batch.column("block_n")
    warp = hw.warp_size if hw.warp_size == hw.warp_size else 32.0
    threads = batch.column("num_warps", 4.0) * warp
    programs = np.ceil(spec.seq_q / block_m) * spec.batch * spec.heads_q
    arch = hw.cuda_arch
    smem = _estimate(lambda sp, row: fa_space.smem_bytes(sp, row, arch=arch), spec, batch)
    regs = _estimate(fa_space.registers_per_thread, spec, batch)
    keys = spec.seq_kv / 2 if spec.causal and spec.seq_q == spec.seq_kv else float(spec.seq_kv)
    d = fa_space.padded_head_dim(spec.head_dim)
    elt = DTYPE_BYTES[spec.dtype]
    flops = 4.0 * block_m * keys * d
    moved = elt * (2.0 * block_m * d + 2.0 * keys * d)  # Q in + O out, K and V once each
    out = {
        "threads": threads,
        "programs": programs,
        "smem_est": smem,
        "regs_est": regs,
        "kv_tiles": np.ceil(keys / block_n),
        "arith_intensity": flops / moved,
        "log_work_per_program": np.log2(np.maximum(1.0, block_m * keys)),
    }
    out.update(_launch(hw, programs, threads, smem, regs))
    return {k: out[k] for k in FLASH_NAMES}


def paged_attention_features(problem: Mapping[str, Any], batch: ConfigBatch, hw: HardwareInfo) -> dict[str, np.ndarray]:
    """Programs, tokens per program, KV steps, shared memory and waves of a paged decode launch.

    Estimated grid: one program per (sequence, KV head, split), serving that KV head's query
    group; each program reads ``context_len / num_splits`` tokens of K and V.
    """
    n = len(batch)
    spec = _spec_of("paged_attention", problem)
    if spec is None or not batch.has("block_n"):
        return _nan(PAGED_NAMES, n)
    block_n = batch.column("block_n")
    splits = batch.column("num_splits", 1.0)
    warp = hw.warp_size if hw.warp_size == hw.warp_size else 32.0
    threads = batch.column("num_warps", 4.0) * warp
    programs = spec.num_seqs * spec.heads_kv * splits
    tokens = np.ceil(spec.context_len / splits)
    elt = DTYPE_BYTES[spec.dtype]
    group = spec.heads_q // spec.heads_kv
    smem = _estimate(pa_space.smem_bytes, spec, batch)
    kv_bytes = 2.0 * tokens * spec.head_dim * elt
    out = {
        "threads": threads,
        "programs": programs,
        "smem_est": smem,
        "tokens_per_program": tokens,
        "kv_steps": np.ceil(tokens / block_n),
        "pages_per_step": block_n / spec.block_size,
        "arith_intensity": 4.0 * group * tokens * spec.head_dim / kv_bytes,
        "log_bytes_per_program": np.log2(kv_bytes),
    }
    out.update(_launch(hw, programs, threads, smem, np.full(n, NAN)))
    return {k: out[k] for k in PAGED_NAMES}
