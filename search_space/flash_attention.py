"""Search space of the FlashAttention forward template (kernels/flash_attention.py).

The constraints mirror what makes the compiled kernel fail or collapse on a GPU, so invalid
configs are rejected here, before any compile:

- shared memory per block: an estimate calibrated against the compiler's own figure for sm_80
  and sm_90 (tests/kernels/test_flash_compile.py checks that every accepted config fits and
  every config rejected for shared memory really does not);
- registers: the fp32 accumulator and score tile of one program must fit in the register file
  of its warps, else the kernel spills to local memory on every tile;
- ``tl.dot`` shape rules (every dot dimension >= 16), tiles larger than the problem, and the
  tensor-descriptor knob only where Triton and the device have tensor descriptors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._space import Config, Constraint, Param, SearchSpace, Value, pow2_ceil
from ._specs import DTYPE_BYTES, FlashAttentionSpec
from .hardware import Hardware


@dataclass(frozen=True)
class FlashAttentionConfig(Config):
    """One launch configuration of the FlashAttention forward template.

    ``split_diag``: visit the key tiles every query row sees in full in an unmasked loop, and
    only the diagonal (causal) and ragged tail tiles in a masked one. ``use_tma``: move Q/K/V/O
    through tensor descriptors (TMA on Hopper) instead of pointer loads.
    """

    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    split_diag: bool = True
    use_tma: bool = False


BLOCK_SIZES = (16, 32, 64, 128, 256)
MIN_DOT = 16  # smallest dimension tl.dot accepts for 16-bit operands
REGISTERS_PER_THREAD = 255
# The accumulator and score tile live in fp32 registers; beyond this share of the register file
# the compiler spills (checked with the compile tier: registers + stack bytes per config).
REGISTER_BUDGET = 224
MIN_TMA_TRITON = (3, 4)


def padded_head_dim(head_dim: int) -> int:
    """Head dims that are not powers of two run padded to the next one (masked loads)."""
    return max(16, pow2_ceil(head_dim))


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def tma_supported(hardware: Hardware) -> bool:
    """Tensor descriptors need Triton >= 3.4; TMA needs sm_90+ (the interpreter stands in for it)."""
    version = _version(hardware.triton_version)
    if hardware.triton_version != "any" and (not version or version < MIN_TMA_TRITON):
        return False
    if hardware.is_interpreter:
        return True
    if hardware.backend != "cuda":
        return False
    major = _version(hardware.compute_capability)
    return bool(major) and major[0] >= 9


def target_arch(hardware: Hardware) -> int:
    """CUDA compute capability as an int (90 for sm_90); the interpreter stands in for sm_90."""
    if hardware.is_interpreter:
        return 90
    digits = _version(hardware.compute_capability)
    if hardware.backend != "cuda" or len(digits) < 1:
        return 0  # not CUDA: the Ampere-style upper bound below applies
    return digits[0] * 10 + (digits[1] if len(digits) > 1 else 0)


def uses_wgmma(spec: FlashAttentionSpec, values: Mapping[str, Value], arch: int) -> bool:
    """Hopper's warpgroup MMA: sm_90+, 16-bit operands, 64 query rows per warpgroup."""
    return (arch >= 90 and spec.dtype in ("fp16", "bf16") and int(values["block_m"]) >= 64
            and int(values["num_warps"]) >= 4)


def smem_bytes(spec: FlashAttentionSpec, values: Mapping[str, Value], arch: int = 90) -> int:
    """Shared memory of one program in bytes (dynamic + static), as the compiler lays it out.

    Calibrated with the compile tier (tests/kernels/test_flash_compile.py):

    - sm_90 with wgmma, ``num_stages`` s >= 2: s buffers each of the K and V tiles, plus Q
      (wgmma reads its A operand from shared memory), plus 1 KB of static barriers: exact.
      With one stage Q is sometimes kept in registers: an upper bound.
    - mma.sync (sm_80/86/89; small tiles or 2 warps on sm_90): the pipeliner keeps s K
      buffers and s - 1 V buffers, plus layout-conversion scratch for Q and the probabilities,
      whose reuse by the allocator varies: an upper bound, within 2x of the compiler's figure.
    - tensor descriptors add up to 1 KB of barriers and alignment.
    """
    elt = DTYPE_BYTES[spec.dtype]
    d = padded_head_dim(spec.head_dim)
    block_m, block_n = int(values["block_m"]), int(values["block_n"])
    stages = max(1, int(values["num_stages"]))
    tile = block_n * d * elt
    q = block_m * d * elt
    p = block_m * block_n * elt
    static = 1024 if arch >= 90 else 0
    tma = 1024 if values.get("use_tma") else 0
    if uses_wgmma(spec, values, arch):
        dynamic = 2 * stages * tile + q
    elif stages == 1:
        dynamic = max(q, tile) + tile + p
    else:
        dynamic = (2 * stages - 1) * tile + q + p + (1024 if elt == 4 else 0)
    return dynamic + static + tma


def registers_per_thread(spec: FlashAttentionSpec, values: Mapping[str, Value]) -> int:
    """fp32 registers one thread needs for the accumulator, the score tile and Q (estimate)."""
    d = padded_head_dim(spec.head_dim)
    block_m, block_n = int(values["block_m"]), int(values["block_n"])
    threads = 32 * int(values["num_warps"])
    elt = DTYPE_BYTES[spec.dtype]
    acc = block_m * d
    scores = block_m * block_n
    q = block_m * d * elt // 4  # Q stays in registers, packed two 16-bit values per register
    return (acc + scores + q) // threads


def space(spec: FlashAttentionSpec, hardware: Hardware) -> SearchSpace:
    limit = hardware.smem_per_block
    arch = target_arch(hardware)
    seq_q_tile = max(MIN_DOT, pow2_ceil(spec.seq_q))
    seq_kv_tile = max(MIN_DOT, pow2_ceil(spec.seq_kv))
    tma_ok = tma_supported(hardware)

    def smem(values: Mapping[str, Value]) -> str | None:
        need = smem_bytes(spec, values, arch)
        if need > limit:
            return f"needs ~{need} B of shared memory, the device allows {limit} B per block"
        return None

    def registers(values: Mapping[str, Value]) -> str | None:
        need = registers_per_thread(spec, values)
        if need > REGISTER_BUDGET:
            return (f"block_m={values['block_m']} x block_n={values['block_n']} x head dim "
                    f"{padded_head_dim(spec.head_dim)} needs ~{need} fp32 registers per thread with "
                    f"num_warps={values['num_warps']} (budget {REGISTER_BUDGET}); it would spill")
        return None

    def tile_fits_problem(values: Mapping[str, Value]) -> str | None:
        if int(values["block_m"]) > seq_q_tile:
            return f"block_m={values['block_m']} is larger than needed for seq_q={spec.seq_q} (max {seq_q_tile})"
        if int(values["block_n"]) > seq_kv_tile:
            return f"block_n={values['block_n']} is larger than needed for seq_kv={spec.seq_kv} (max {seq_kv_tile})"
        return None

    def tma(values: Mapping[str, Value]) -> str | None:
        if values["use_tma"] and not tma_ok:
            return (f"use_tma needs Triton >= {'.'.join(map(str, MIN_TMA_TRITON))} and an sm_90+ GPU "
                    f"(have triton {hardware.triton_version}, {hardware.name})")
        return None

    params = (
        Param("block_m", BLOCK_SIZES, "query rows per program"),
        Param("block_n", BLOCK_SIZES, "keys per inner-loop tile"),
        Param("num_warps", (2, 4, 8), "warps per program"),
        Param("num_stages", (1, 2, 3, 4, 5), "software pipeline depth of the K/V loads"),
        Param("split_diag", (True, False), "unmasked loop + masked diagonal loop, or one masked loop"),
        Param("use_tma", (False, True), "tensor-descriptor (TMA) loads and stores"),
    )
    return SearchSpace(
        name=f"flash_attention[{spec.describe()}]",
        params=params,
        constraints=(
            Constraint("tile_size", tile_fits_problem),
            Constraint("tensor_descriptors", tma),
            Constraint("registers", registers),
            Constraint("shared_memory", smem),
        ),
        default_values=default_config(spec, hardware).to_dict(),
        config_type=FlashAttentionConfig,
        context={"spec": spec.to_dict(), "hardware": hardware.to_dict()},
    )


# Defaults by padded head dim, FlashInfer-style: the largest tiles the compile tier shows
# compiling without spills (sm_90: wgmma; sm_80: mma.sync, where Q sits in registers).
# (block_m, block_n, num_warps, num_stages); checked by tests/kernels/test_flash_compile.py.
_HOPPER_DEFAULTS = {64: (128, 128, 8, 3), 128: (128, 64, 8, 3), 256: (128, 32, 8, 2)}
_AMPERE_DEFAULTS = {64: (128, 64, 8, 2), 128: (128, 64, 8, 2), 256: (64, 32, 8, 2)}


def _preferred(spec: FlashAttentionSpec, hardware: Hardware) -> list[FlashAttentionConfig]:
    """Fallback candidates, best first: the table entry, then smaller tiles for short sequences."""
    arch = target_arch(hardware)
    d = min(256, max(64, padded_head_dim(spec.head_dim)))
    table = _HOPPER_DEFAULTS if arch >= 90 else _AMPERE_DEFAULTS
    block_m, block_n, warps, stages = table[d]
    out = [FlashAttentionConfig(block_m, block_n, warps, stages, True, False)]
    for bm in (128, 64, 32, 16):
        for bn in (128, 64, 32, 16):
            if bm <= block_m and bn <= block_n:
                out.append(FlashAttentionConfig(bm, bn, warps if bm >= 64 else 4, min(stages, 2), True, False))
    return out


def _fits(spec: FlashAttentionSpec, hardware: Hardware, cfg: FlashAttentionConfig) -> bool:
    values = cfg.to_dict()
    if cfg.block_m > max(MIN_DOT, pow2_ceil(spec.seq_q)) or cfg.block_n > max(MIN_DOT, pow2_ceil(spec.seq_kv)):
        return False
    return (registers_per_thread(spec, values) <= REGISTER_BUDGET
            and smem_bytes(spec, values, target_arch(hardware)) <= hardware.smem_per_block)


def default_config(spec: FlashAttentionSpec, hardware: Hardware) -> FlashAttentionConfig:
    """A config valid for ``spec`` on ``hardware`` (the runtime fallback when nothing is tuned).

    Falls back to the smallest tiles, which fit every spec on every supported device (a 16-row
    by 16-key tile of head dim 256 in fp32 needs 48 KB of shared memory).
    """
    for cfg in _preferred(spec, hardware):
        if _fits(spec, hardware, cfg):
            return cfg
    return FlashAttentionConfig(16, 16, 4, 1, True, False)
