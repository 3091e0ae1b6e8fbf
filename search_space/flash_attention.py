"""Search space of the FlashAttention forward template (kernels/flash_attention.py).

The constraints mirror what makes the compiled kernel fail or collapse on a GPU, so invalid
configs are rejected here, before any compile:

- shared memory per block: an estimate calibrated against the compiler's own figure for sm_80
  and sm_90 (tests/kernels/test_flash_compile.py checks that every accepted config fits and
  every config rejected for shared memory really does not);
- registers: the fp32 accumulator and score tile of one program must fit in the register file
  of its warps, else the kernel spills to local memory on every tile;
- ``tl.dot`` shape rules (every dot dimension >= 16), tiles larger than the problem, and the
  tensor-descriptor knob only where Triton and the device have tensor descriptors;
- where the knobs past stock Triton are valid, as the compile tier found on triton 3.6 and 3.9
  for sm_90 and sm_80 (tests/kernels/test_flash_knobs_compile.py re-checks every rule):
  ``warp_specialize`` specializes (12 warps, 2 consumer partitions, ``setmaxnreg`` in the PTX)
  only on sm_90+, over descriptors, with 4 warps and one key loop: the two-loop ``split_diag``
  kernel fails in the pass (causal or not), 8 warps leave the loop unspecialized (a duplicate
  of the knob off), and on sm_80 it spills kilobytes. Combined with ``exp2_poly`` it fails on
  triton 3.6 and compiles on 3.9. ``maxnreg`` never goes with it (the cap overrides the pass's
  register hand-off: 8 ``setmaxnreg`` drop to 2). Whether a ``maxnreg`` cap spills cannot be
  read off the tile sizes (see ``MAXNREG_LIVE_OVERHEAD``), so the space rejects only the caps
  below the fp32 values that are live through the key loop, where a spill is certain; the GPU
  backend's compile stage rejects the other caps that spill, before anything is measured
  (``tuner._tasks.compile_status``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._space import Config, Constraint, Param, SearchSpace, Value, pow2_ceil
from ._specs import DTYPE_BYTES, FlashAttentionSpec
from .hardware import Hardware


@dataclass(frozen=True)
class FlashAttentionConfig(Config):
    """One launch configuration of the FlashAttention forward template.

    ``split_diag``: visit the key tiles every query row sees in full in an unmasked loop, and
    only the diagonal (causal) and ragged tail tiles in a masked one. ``use_tma``: move Q/K/V/O
    through tensor descriptors (TMA on Hopper) instead of pointer loads.

    Knobs past the stock Triton tutorial (all off by default; see ``space`` for where each is
    valid): ``warp_specialize`` runs the key loop through Triton's automatic warp
    specialization over device-side descriptors (needs ``use_tma``); ``exp2_poly`` is the
    percentage of the score tile's exponentials computed by a cubic on the FMA pipes instead of
    the special-function unit (FlashAttention-4's trick); ``persistent`` > 0 launches that many
    programs per SM, each walking tiles in a causal-balanced order; ``maxnreg`` > 0 caps the
    registers per thread (Triton's ``maxnreg`` launch option), trading spills for occupancy.
    """

    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    split_diag: bool = True
    use_tma: bool = False
    warp_specialize: bool = False
    exp2_poly: int = 0
    persistent: int = 0
    maxnreg: int = 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FlashAttentionConfig:
        """As ``Config.from_dict``, but a record from before a knob existed means the knob off.

        Landscapes, tuned-config rows and advisor corpora written before ``warp_specialize``,
        ``exp2_poly``, ``persistent`` and ``maxnreg`` name only the first six fields; those
        configs ran exactly the kernel these knobs' off values give.
        """
        filled = {**LATER_KNOBS, **values} if all(k in values for k in BASE_KNOBS) else values
        return super().from_dict(filled)


BASE_KNOBS = ("block_m", "block_n", "num_warps", "num_stages", "split_diag", "use_tma")
LATER_KNOBS: dict[str, Value] = {"warp_specialize": False, "exp2_poly": 0, "persistent": 0, "maxnreg": 0}


BLOCK_SIZES = (16, 32, 64, 128, 256)
EXP2_POLY = (0, 25, 50)  # the kernel also takes 100; all-FMA exponentials just move the bottleneck
PERSISTENT = (0, 1, 2)
MAXNREG = (0, 128)  # 128: two 8-warp or four 4-warp programs per SM by registers
MIN_DOT = 16  # smallest dimension tl.dot accepts for 16-bit operands
REGISTERS_PER_THREAD = 255
# The accumulator and score tile live in fp32 registers; beyond this share of the register file
# the compiler spills (checked with the compile tier: registers + stack bytes per config).
REGISTER_BUDGET = 224
MIN_TMA_TRITON = (3, 4)
MIN_WS_TRITON = (3, 5)  # the automatic warp specialization for Hopper ("all autoWS" in 3.5)
# warp_specialize + exp2_poly: fails in the pass on triton 3.6, compiles on 3.9 (3.7/3.8 not
# checked, so not allowed).
MIN_WS_POLY_TRITON = (3, 9)
WS_WARPS = 4  # with any other num_warps the pass leaves the loop as it is
# A maxnreg cap below the fp32 accumulator and score tile per thread (live through the whole key
# loop) + this many registers (loop state, addresses) spills for certain. Above that the compiler
# decides: on 144 compiles at a 128 cap (3 shapes x sm_80/sm_90, triton 3.9; the data and the
# script that gathered it: data/compile_tier/, scripts/maxnreg_sample.py) tiles of the same size
# estimate (<= 64 per thread) needed 59 to 255 registers uncapped, and decision trees over tile
# sizes, warps, stages and knobs told "fits uncapped" from "spills at the cap" in 78-82% of
# held-out cases. This bound rejected 26 of them, all spilling; 54 of the 118 it let through
# spill, and the compile stage rejects those.
MAXNREG_LIVE_OVERHEAD = 16
EXP2_DTYPES = ("fp16", "bf16")  # the cubic's 1e-4 relative error is below their rounding only


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
    - warp specialization keeps one more stage of K and V (the producer runs a tile ahead),
      and a persistent warp-specialized kernel two more again: upper bounds.
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
    if values.get("warp_specialize"):
        dynamic = 2 * (stages + 1) * tile + q + (4 * tile if values.get("persistent") else 0)
    elif uses_wgmma(spec, values, arch):
        dynamic = 2 * stages * tile + q
    elif stages == 1:
        dynamic = max(q, tile) + tile + p
    else:
        dynamic = (2 * stages - 1) * tile + q + p + (1024 if elt == 4 else 0)
    return dynamic + static + tma


def registers_per_thread(spec: FlashAttentionSpec, values: Mapping[str, Value]) -> int:
    """fp32 registers one thread needs for the accumulator, the score tile and Q (estimate).

    Warp-specialized, the tile is split between two consumer partitions of ``num_warps`` warps
    each (the producer holds no tile): 12 warps run for ``num_warps=4`` (compile tier).
    """
    d = padded_head_dim(spec.head_dim)
    block_m, block_n = int(values["block_m"]), int(values["block_n"])
    threads = 32 * int(values["num_warps"]) * (2 if values.get("warp_specialize") else 1)
    elt = DTYPE_BYTES[spec.dtype]
    acc = block_m * d
    scores = block_m * block_n
    q = block_m * d * elt // 4  # Q stays in registers, packed two 16-bit values per register
    return (acc + scores + q) // threads


def live_fp32_per_thread(spec: FlashAttentionSpec, values: Mapping[str, Value]) -> int:
    """fp32 values per thread that stay live through the key loop: the accumulator and the score
    tile (a lower bound of the registers one thread needs, whatever the compiler does)."""
    d = padded_head_dim(spec.head_dim)
    block_m, block_n = int(values["block_m"]), int(values["block_n"])
    return (block_m * d + block_m * block_n) // (32 * int(values["num_warps"]))


def ws_supported(hardware: Hardware) -> bool:
    """Automatic warp specialization: Triton >= 3.5 and sm_90+ (the interpreter stands in)."""
    version = _version(hardware.triton_version)
    if hardware.triton_version != "any" and (not version or version < MIN_WS_TRITON):
        return False
    return tma_supported(hardware)


def knob_rules(spec: FlashAttentionSpec, hardware: Hardware) -> tuple[Constraint, ...]:
    """Where ``warp_specialize``, ``exp2_poly``, ``persistent`` and ``maxnreg`` are valid."""
    ws_ok = ws_supported(hardware)
    version = _version(hardware.triton_version)
    poly_with_ws = hardware.triton_version == "any" or (bool(version) and version >= MIN_WS_POLY_TRITON)

    def warp_specialization(values: Mapping[str, Value]) -> str | None:
        if not values["warp_specialize"]:
            return None
        if not ws_ok:
            return (f"warp_specialize needs Triton >= {'.'.join(map(str, MIN_WS_TRITON))} and an sm_90+ GPU "
                    f"(have triton {hardware.triton_version}, {hardware.name})")
        if not values["use_tma"]:
            return "warp_specialize runs over device-side tensor descriptors: it needs use_tma=True"
        if values["split_diag"]:
            return "warp_specialize fails to compile with split_diag's two key loops (triton 3.6 and 3.9); use split_diag=False"
        if int(values["num_warps"]) != WS_WARPS:
            return (f"warp_specialize with num_warps={values['num_warps']} leaves the loop unspecialized; "
                    f"it partitions with num_warps={WS_WARPS} (then 12 warps run)")
        if int(values["block_m"]) < 64:
            return f"warp_specialize needs block_m >= 64 (one warpgroup MMA per consumer), got {values['block_m']}"
        if int(values["exp2_poly"]) and not poly_with_ws:
            return (f"warp_specialize with exp2_poly fails to compile on triton {hardware.triton_version} "
                    f"(needs >= {'.'.join(map(str, MIN_WS_POLY_TRITON))})")
        if int(values["maxnreg"]):
            return "maxnreg overrides warp specialization's own register split (setmaxnreg); use maxnreg=0"
        return None

    def exp2_emulation(values: Mapping[str, Value]) -> str | None:
        if int(values["exp2_poly"]) and spec.dtype not in EXP2_DTYPES:
            return f"exp2_poly's 1e-4 relative error is within fp16/bf16 output tolerance only, not {spec.dtype}"
        return None

    def register_cap(values: Mapping[str, Value]) -> str | None:
        cap = int(values["maxnreg"])
        if not cap or values["warp_specialize"]:
            return None
        live = live_fp32_per_thread(spec, values) + MAXNREG_LIVE_OVERHEAD
        if live > cap:
            return (f"maxnreg={cap} is below the {live} registers per thread live through the key loop "
                    "(accumulator + score tile + loop state): it spills; use more warps, smaller tiles "
                    "or maxnreg=0")
        return None

    return (Constraint("warp_specialize", warp_specialization), Constraint("exp2_poly", exp2_emulation),
            Constraint("maxnreg", register_cap))


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
        # Domains shrink where a knob can never be valid, so the space stays enumerable.
        Param("warp_specialize", (False, True) if ws_supported(hardware) else (False,),
              "automatic warp specialization of the key loop (device descriptors)"),
        Param("exp2_poly", EXP2_POLY if spec.dtype in EXP2_DTYPES else (0,),
              "percent of the softmax exponentials done by a cubic on the FMA pipes"),
        Param("persistent", PERSISTENT, "programs per SM of a persistent grid (0: one program per tile)"),
        Param("maxnreg", MAXNREG, "register cap per thread (0: none)"),
    )
    return SearchSpace(
        name=f"flash_attention[{spec.describe()}]",
        params=params,
        constraints=(
            Constraint("tile_size", tile_fits_problem),
            Constraint("tensor_descriptors", tma),
            *knob_rules(spec, hardware),
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
