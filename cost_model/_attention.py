"""Derived features of the attention kernel families (the per-kernel feature hooks).

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
from tritune.search_space import varlen_attention as va_space

from ._features import NAN, ConfigBatch, HardwareInfo, occupancy

FLASH_NAMES = ("threads", "programs", "log_programs_per_sm", "smem_est", "smem_fraction", "regs_est",
               "resident_programs", "occupancy_est", "waves", "wave_efficiency", "kv_tiles", "arith_intensity",
               "log_work_per_program")
PAGED_NAMES = ("threads", "programs", "log_programs_per_sm", "smem_est", "smem_fraction", "resident_programs",
               "occupancy_est", "waves", "wave_efficiency", "tokens_per_program", "kv_steps", "pages_per_step",
               "arith_intensity", "log_bytes_per_program")
VARLEN_NAMES = ("threads", "programs", "log_programs_per_sm", "smem_est", "smem_fraction", "regs_est",
                "resident_programs", "occupancy_est", "waves", "wave_efficiency", "tokens_per_tile", "active_tiles",
                "active_fraction", "tile_efficiency", "kv_reads_per_group", "splits", "keys_per_split", "kv_steps",
                "pages_per_step", "arith_intensity", "log_work_per_program")


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


def _query_lengths(spec: Any) -> list[int]:
    """New tokens per sequence of the bucket's representative batch, as the family draws it
    (kernels/varlen_attention.py ``query_lengths``; restated here so the cost model never imports
    the kernels): the first sequence brings ``max_seqlen_q``, the others share the rest evenly."""
    rest, others = spec.total_q - spec.max_seqlen_q, spec.num_seqs - 1
    return [spec.max_seqlen_q] + [rest // others + (1 if i < rest % others else 0) for i in range(others)]


def varlen_attention_features(problem: Mapping[str, Any], batch: ConfigBatch, hw: HardwareInfo) -> dict[str, np.ndarray]:
    """Grid, waves, tile efficiency with GQA packing, splits, shared memory and registers of a
    varlen serving launch (kernels/varlen_attention.py), from host-known values only.

    The launcher's grid is ``(total_q // block_q + num_seqs) x (heads_kv if pack_gqa else heads_q)
    x num_splits``, ``block_q = block_m // pad(G)`` query tokens per tile when packing the ``G``
    query heads of a KV group into the rows (else ``block_m``); programs past a sequence's tokens
    exit at once (``active_fraction`` is the share that works). ``tile_efficiency``: real query
    rows / tile rows over the working tiles: the ragged tails of the sequences and, when packing,
    the padding of G to a power of two (one decode token of a 32/8 model fills 4 rows of a 16-row
    packed tile, 1 row unpacked). Without packing every query head reads its group's K/V again
    (``kv_reads_per_group`` = G). Keys per program: the longest sequence's keys over the splits
    (a causal chunk sees its prefix and half itself). Shared memory and registers are the search
    space's estimates for the target's compute capability.
    """
    n = len(batch)
    spec = _spec_of("varlen_attention", problem)
    if spec is None or not batch.has("block_m") or not batch.has("block_n"):
        return _nan(VARLEN_NAMES, n)
    block_m, block_n = batch.column("block_m"), batch.column("block_n")
    pack = batch.column("pack_gqa", 1.0) > 0
    splits = np.maximum(batch.column("num_splits", 1.0), 1.0)
    warp = hw.warp_size if hw.warp_size == hw.warp_size else 32.0
    threads = batch.column("num_warps", 4.0) * warp
    group, gpad = spec.group, va_space.group_pad(spec)
    block_q = np.maximum(1.0, np.where(pack, np.floor(block_m / gpad), block_m))
    heads = np.where(pack, spec.heads_kv, spec.heads_q)
    tiles = np.floor(spec.total_q / block_q) + spec.num_seqs
    q_lens = np.array(_query_lengths(spec), dtype=np.float64)
    active = np.ceil(q_lens[None, :] / block_q[:, None]).sum(axis=1)
    programs = tiles * heads * splits
    rows = spec.total_q * np.where(pack, group, 1.0)  # real rows per program axis of heads
    arch = hw.cuda_arch
    smem = _estimate(lambda sp, row: va_space.smem_bytes(sp, row, arch=arch or 90), spec, batch)
    regs = _estimate(va_space.registers_per_thread, spec, batch)
    keys = float(spec.max_seqlen_k)
    if spec.window_left >= 0:
        keys = min(keys, spec.window_left + float(spec.max_seqlen_q))
    if spec.causal and spec.max_seqlen_q > 1:
        keys = max(1.0, keys - spec.max_seqlen_q / 2)  # the chunk's own causal triangle
    per_split = np.ceil(keys / splits)
    d = va_space.padded_head_dim(spec.head_dim)
    elt, kv_elt = DTYPE_BYTES[spec.dtype], spec.kv_bytes_per_elt
    flops = 4.0 * block_m * per_split * d
    moved = 2.0 * block_m * d * elt + 2.0 * per_split * d * kv_elt
    out = {
        "threads": threads,
        "programs": programs,
        "smem_est": smem,
        "regs_est": regs,
        "tokens_per_tile": block_q,
        "active_tiles": active,
        "active_fraction": active / tiles,
        "tile_efficiency": rows / (active * block_m),
        "kv_reads_per_group": np.where(pack, 1.0, float(group)),
        "splits": splits,
        "keys_per_split": per_split,
        "kv_steps": np.ceil(per_split / block_n),
        "pages_per_step": block_n / spec.block_size if spec.block_size else np.zeros(n),
        "arith_intensity": flops / moved,
        "log_work_per_program": np.log2(np.maximum(1.0, block_m * per_split)),
    }
    out.update(_launch(hw, programs, threads, smem, regs))
    return {k: out[k] for k in VARLEN_NAMES}
