"""Search space of the serving kernel (kernels/varlen_attention.py): one ragged batch per step.

A program owns a tile of ``block_m`` rows of one sequence and streams that sequence's keys in
``block_n``-token steps through the page table. What decides its speed on a mixed batch:

- ``pack_gqa``: the rows are ``block_m / pad(G)`` query tokens x the ``G = Hq/Hkv`` query heads
  of one KV head, so K/V are read once per group (decode rows fill a tile with heads instead of
  wasting 15 of 16 rows); off, a tile is ``block_m`` tokens of one query head (prefill chunks
  of MHA models keep whole-token tiles);
- ``block_m`` / ``block_n``: tile sizes; a step of ``block_n`` tokens reads one page id when it
  fits in a page, one per token otherwise (the "tokens per page step");
- ``num_splits``: split-KV for long contexts with few sequences: each split of a sequence's keys
  is its own program, and a combine kernel merges the partial softmaxes;
- ``split_diag``: an unmasked loop over the key tiles every row of the tile sees, and masked
  loops only at the window/causal/ragged edges; off, one masked loop;
- ``num_warps`` / ``num_stages``;
- ``exp2_poly``: the percentage of the softmax's exponentials computed by a cubic on the FMA
  pipes (kernels/_exp2.py), the FlashAttention template's knob for exponential-bound tiles.

The template's other Hopper knobs do not carry over: warp specialization and TMA need
contiguous K/V boxes (a paged step is a gather), and a persistent grid would have to walk a
ragged tile list the host does not know without a device sync.

Constraints reject what fails or wastes on the GPU: shared memory (estimate checked against the
compiler in tests/kernels/test_varlen_compile.py), registers, ``tl.dot`` shapes (every dimension
>= 16), tiles far larger than the batch's sequences, splits without keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._space import Config, Constraint, Param, SearchSpace, Value, first_passing, pow2_ceil
from ._specs import DTYPE_BYTES, VarlenAttentionSpec
from .flash_attention import target_arch
from .hardware import Hardware


@dataclass(frozen=True)
class VarlenAttentionConfig(Config):
    """One launch configuration of the varlen serving kernel (see the module docstring)."""

    block_m: int = 64
    block_n: int = 64
    pack_gqa: bool = True
    num_splits: int = 1
    split_diag: bool = True
    num_warps: int = 4
    num_stages: int = 2
    exp2_poly: int = 0


BLOCK_M = (16, 32, 64, 128)
BLOCK_N = (16, 32, 64, 128)
NUM_SPLITS = (1, 2, 4, 8, 16, 32)
NUM_WARPS = (2, 4, 8)
NUM_STAGES = (1, 2, 3, 4)
EXP2_POLY = (0, 25, 50, 100)
MIN_DOT = 16
# Tile registers per thread beyond which the compiler spills: calibrated on the compile tier
# (sm_80/sm_90, tests/kernels/test_varlen_compile.py): the rest of the 255 go to addresses,
# positions and masks.
REGISTER_BUDGET = 176
# Without wgmma (sm_80/86/89; small tiles on sm_90) the accumulator and Q are mma.sync
# fragments held in registers for the whole loop: beyond this per thread the compiler spilled
# (64-row tiles of head dim 128 on 4 warps: 360 B of stack on sm_80), below it never.
MMA_ACC_BUDGET = 64
FP8_MIN_ARCH = 89  # e4m3 conversions: Ada and Hopper (Triton rejects fp8e4nv on sm_80)


def padded_head_dim(head_dim: int) -> int:
    """Head dims that are not powers of two run padded to the next one (masked loads)."""
    return max(16, pow2_ceil(head_dim))


def group_pad(spec: VarlenAttentionSpec) -> int:
    """Rows one packed token takes: the query-head group rounded up to a power of two."""
    return pow2_ceil(spec.group)


def tokens_per_tile(spec: VarlenAttentionSpec, values: Mapping[str, Value]) -> int:
    """Query tokens of one tile (0 when a packed group does not fit the tile)."""
    rows = int(values["block_m"])
    return rows // group_pad(spec) if values["pack_gqa"] else rows


def uses_wgmma(spec: VarlenAttentionSpec, values: Mapping[str, Value], arch: int) -> bool:
    return arch >= 90 and int(values["block_m"]) >= 64 and int(values["num_warps"]) >= 4


def smem_bytes(spec: VarlenAttentionSpec, values: Mapping[str, Value], arch: int = 90) -> int:
    """Shared memory of one program in bytes (dynamic + static): an upper bound.

    Same structure as the FlashAttention template's estimate (search_space/flash_attention.py):
    pipelined K and V tiles, Q (wgmma's A operand lives in shared memory) and the probabilities
    as the second product's operand. An FP8 cache stages its 1-byte tiles and converts them, so
    the estimate counts converted 16-bit tiles too. Checked against the compiler by the compile
    tier (tests/kernels/test_varlen_compile.py): never below the compiler's figure.
    """
    elt = DTYPE_BYTES[spec.dtype]
    d = padded_head_dim(spec.head_dim)
    block_m, block_n = int(values["block_m"]), int(values["block_n"])
    stages = max(1, int(values["num_stages"]))
    tile = block_n * d * elt
    staged = block_n * d * spec.kv_bytes_per_elt
    q = block_m * d * elt
    p = block_m * block_n * elt
    static = 1024 if arch >= 90 else 0
    # exp2_poly 25/50 splits the fp32 score tile in halves and joins them: a layout conversion
    # through shared memory (the compiler's figure grew by exactly this tile).
    scratch = block_m * block_n * 4 if int(values.get("exp2_poly", 0)) in (25, 50) else 0
    if uses_wgmma(spec, values, arch):
        dynamic = 2 * stages * staged + q + (2 * tile if spec.kv_dtype == "fp8" else 0)
    elif stages == 1:
        dynamic = max(q, tile) + tile + p
    else:
        dynamic = (2 * stages - 1) * max(tile, staged) + q + p
    return dynamic + static + scratch


def registers_per_thread(spec: VarlenAttentionSpec, values: Mapping[str, Value], arch: int = 90) -> int:
    """32-bit registers one thread holds for the tiles (estimate): the fp32 accumulator and
    scores, Q, and the K and V steps (16-bit values two to a register). The gathered K/V steps
    pass through registers here (page-table addressing), unlike the FlashAttention template's;
    without wgmma every extra pipeline stage keeps another half step's addresses and values
    live (fitted on sm_80: 32x64 tiles on 4 warps spilled at 4 stages, not at 2)."""
    d = padded_head_dim(spec.head_dim)
    block_m, block_n = int(values["block_m"]), int(values["block_n"])
    threads = 32 * int(values["num_warps"])
    elt = DTYPE_BYTES[spec.dtype]
    kv = 2 * block_n * d * elt // 4
    if not uses_wgmma(spec, values, arch):
        kv = kv * (2 + max(0, int(values["num_stages"]) - 2)) // 2
    tiles = block_m * d + block_m * block_n + block_m * d * elt // 4 + kv
    return tiles // threads


def accumulator_per_thread(spec: VarlenAttentionSpec, values: Mapping[str, Value]) -> int:
    """Registers per thread of the fp32 accumulator plus the Q fragments (16-bit, two a register)."""
    d = padded_head_dim(spec.head_dim)
    rows = int(values["block_m"]) * d
    return (rows + rows * DTYPE_BYTES[spec.dtype] // 4) // (32 * int(values["num_warps"]))


def constraints(spec: VarlenAttentionSpec, hardware: Hardware) -> tuple[Constraint, ...]:
    arch = target_arch(hardware)
    gpad = group_pad(spec)
    q_tokens = pow2_ceil(spec.max_seqlen_q)
    k_tile_cap = max(MIN_DOT, pow2_ceil(spec.max_seqlen_k))

    def packing(values: Mapping[str, Value]) -> str | None:
        if values["pack_gqa"] and int(values["block_m"]) < gpad:
            return f"block_m={values['block_m']} cannot hold a packed group of {spec.group} query heads ({gpad} rows)"
        return None

    def tile_vs_batch(values: Mapping[str, Value]) -> str | None:
        rows_needed = max(MIN_DOT, q_tokens * (gpad if values["pack_gqa"] else 1))
        if int(values["block_m"]) > rows_needed:
            return (f"block_m={values['block_m']} is larger than needed: the longest sequence brings "
                    f"{spec.max_seqlen_q} tokens ({rows_needed} rows)")
        if int(values["block_n"]) > k_tile_cap:
            return f"block_n={values['block_n']} is larger than needed for max_seqlen_k={spec.max_seqlen_k}"
        return None

    def splits(values: Mapping[str, Value]) -> str | None:
        n, steps = int(values["num_splits"]), -(-spec.max_seqlen_k // int(values["block_n"]))
        if n > steps:
            return f"num_splits={n} leaves splits without a step of {values['block_n']} keys (max_seqlen_k {spec.max_seqlen_k})"
        return None

    def registers(values: Mapping[str, Value]) -> str | None:
        need = registers_per_thread(spec, values, arch)
        if not uses_wgmma(spec, values, arch):
            held = accumulator_per_thread(spec, values)
            if held > MMA_ACC_BUDGET:
                return (f"block_m={values['block_m']} rows x head dim {padded_head_dim(spec.head_dim)} keep ~{held} "
                        f"accumulator and Q registers per thread on num_warps={values['num_warps']} without wgmma "
                        f"(budget {MMA_ACC_BUDGET}); it would spill")
        if need > REGISTER_BUDGET:
            return (f"block_m={values['block_m']} x block_n={values['block_n']} x head dim "
                    f"{padded_head_dim(spec.head_dim)} needs ~{need} fp32 registers per thread with "
                    f"num_warps={values['num_warps']} (budget {REGISTER_BUDGET}); it would spill")
        return None

    def fp8_cache(values: Mapping[str, Value]) -> str | None:
        if spec.kv_dtype == "fp8" and 0 < arch < FP8_MIN_ARCH:
            return f"an FP8 (e4m3) cache needs sm_{FP8_MIN_ARCH}+; {hardware.name} is sm_{arch}"
        return None

    def exp2_poly(values: Mapping[str, Value]) -> str | None:
        # For the exponential-bound wgmma tiles of Hopper; on mma.sync tiles the split score
        # tile cost registers (sm_80: 64x64 on 8 warps spilled 232 B) for no gain.
        if int(values["exp2_poly"]) and arch and not uses_wgmma(spec, values, arch):
            return (f"exp2_poly={values['exp2_poly']} is for wgmma tiles (sm_90+, block_m >= 64, num_warps >= 4); "
                    f"this config runs mma.sync")
        # Narrow steps split into 8- or 4-column quarters: 128x16 tiles spilled 168 B (sm_90).
        if int(values["exp2_poly"]) and int(values["block_n"]) < 64:
            return f"exp2_poly={values['exp2_poly']} needs block_n >= 64 (the score tile is split by columns)"
        return None

    def smem(values: Mapping[str, Value]) -> str | None:
        need = smem_bytes(spec, values, arch)
        if need > hardware.smem_per_block:
            return f"needs ~{need} B of shared memory, the device allows {hardware.smem_per_block} B per block"
        return None

    return (
        Constraint("fp8_cache", fp8_cache),
        Constraint("gqa_packing", packing),
        Constraint("tile_size", tile_vs_batch),
        Constraint("splits_vs_context", splits),
        Constraint("registers", registers),
        Constraint("exp2_poly", exp2_poly),
        Constraint("shared_memory", smem),
    )


def space(spec: VarlenAttentionSpec, hardware: Hardware) -> SearchSpace:
    return SearchSpace(
        name=f"varlen_attention[{spec.describe()}]",
        params=(
            Param("block_m", BLOCK_M, "rows per tile (query tokens x packed query heads)"),
            Param("block_n", BLOCK_N, "keys per step (one page-id load when the step fits in a page)"),
            Param("pack_gqa", (True, False), "pack a KV group's query heads into the tile rows"),
            Param("num_splits", NUM_SPLITS, "split-KV programs per sequence (combined by a second kernel)"),
            Param("split_diag", (True, False), "unmasked interior loop + masked edge loops, or one masked loop"),
            Param("num_warps", NUM_WARPS),
            Param("num_stages", NUM_STAGES, "software pipeline depth of the K/V loads"),
            Param("exp2_poly", EXP2_POLY, "percent of the exponentials computed on the FMA pipes"),
        ),
        constraints=constraints(spec, hardware),
        default_values=default_config(spec, hardware).to_dict(),
        config_type=VarlenAttentionConfig,
        context={"spec": spec.to_dict(), "hardware": hardware.to_dict()},
    )


def default_splits(spec: VarlenAttentionSpec, hardware: Hardware, block_m: int, block_n: int, pack: bool) -> int:
    """Split-KV count for batches that leave the GPU idle: FA2's rule, roughly.

    Only decode-like batches (at most 16 new tokens per sequence) split: prefill chunks fill the
    grid with query tiles. Splits double while the programs stay within two waves and every
    split keeps at least four steps of keys.
    """
    if spec.max_seqlen_q > 16:
        return 1
    tokens = block_m // group_pad(spec) if pack else block_m
    tiles = spec.num_seqs * max(1, -(-spec.max_seqlen_q // max(1, tokens)))
    programs = tiles * (spec.heads_kv if pack else spec.heads_q)
    target = 2 * max(1, hardware.sm_count)
    splits = 1
    while (splits * 2 <= NUM_SPLITS[-1] and programs * splits * 2 <= target
           and spec.max_seqlen_k >= 4 * block_n * splits * 2):
        splits *= 2
    return splits


def default_config(spec: VarlenAttentionSpec, hardware: Hardware) -> VarlenAttentionConfig:
    """A valid config for every spec on every device: the runtime's untuned fallback.

    Packed GQA tiles sized to the batch (decode rows take one pad(G)-row token slot, prefill
    chunks 128-row tiles on Hopper, 64 elsewhere), 64-key steps (32 at head dim 256), split-KV
    for decode-like batches that would leave SMs idle; then smaller tiles until the register and
    shared-memory rules hold. Falls back to 16 x 16 tiles, one stage, which fit everywhere.
    """
    rules = constraints(spec, hardware)
    arch = target_arch(hardware)
    gpad = group_pad(spec)
    d = padded_head_dim(spec.head_dim)
    pack = gpad <= 64
    rows_needed = max(MIN_DOT, pow2_ceil(spec.max_seqlen_q) * (gpad if pack else 1))
    big = 128 if arch >= 90 else 64
    block_m = min(big, rows_needed) if pack else min(big, rows_needed)
    block_m = max(block_m, gpad if pack else MIN_DOT)
    block_n = min(32 if d >= 256 else 64, max(MIN_DOT, pow2_ceil(spec.max_seqlen_k)))
    stages = 3 if arch >= 90 and spec.max_seqlen_q > 16 else 2
    candidates = []
    for bm in dict.fromkeys((block_m, 64, 32, 16)):
        for bn in dict.fromkeys((block_n, 32, 16)):
            if bm > block_m or bn > block_n:
                continue
            for st in dict.fromkeys((stages, 2, 1)):
                for warps in ((8,) if bm >= 128 else (4, 8) if bm >= 64 else (4,)):
                    candidates.append((bm, bn, st, warps))
    tries = ({"block_m": bm, "block_n": bn, "pack_gqa": packed,
              "num_splits": default_splits(spec, hardware, bm, bn, packed), "split_diag": True,
              "num_warps": warps, "num_stages": st, "exp2_poly": 0}
             for bm, bn, st, warps in candidates for packed in dict.fromkeys((pack, False)))
    values = first_passing(tries, rules)
    if values is None:
        return VarlenAttentionConfig(16, 16, False, 1, True, 4, 1, 0)
    return VarlenAttentionConfig(**values)
