"""Search space of the paged-attention decode template (kernels/paged_attention.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._space import Config, Constraint, Param, SearchSpace, Value
from ._specs import DTYPE_BYTES, PagedAttentionSpec
from .hardware import Hardware


@dataclass(frozen=True)
class PagedAttentionConfig(Config):
    block_n: int = 64  # tokens per inner step
    num_splits: int = 1  # KV splits (flash-decoding); 1 = single pass
    num_warps: int = 4
    num_stages: int = 2


def smem_bytes(spec: PagedAttentionSpec, values: Mapping[str, Value]) -> int:
    elt = DTYPE_BYTES[spec.dtype]
    return 2 * int(values["block_n"]) * spec.head_dim * elt * max(1, int(values["num_stages"]) - 1)


def space(spec: PagedAttentionSpec, hardware: Hardware) -> SearchSpace:
    def smem(values: Mapping[str, Value]) -> str | None:
        need = smem_bytes(spec, values)
        if need > hardware.smem_per_block:
            return f"needs ~{need} B of shared memory, the device allows {hardware.smem_per_block} B per block"
        return None

    return SearchSpace(
        name=f"paged_attention[{spec.describe()}]",
        params=(
            Param("block_n", (16, 32, 64, 128)),
            Param("num_splits", (1, 2, 4, 8, 16)),
            Param("num_warps", (1, 2, 4, 8)),
            Param("num_stages", (1, 2, 3)),
        ),
        constraints=(Constraint("shared_memory", smem),),
        default_values=default_config(spec, hardware).to_dict(),
        config_type=PagedAttentionConfig,
        context={"spec": spec.to_dict(), "hardware": hardware.to_dict()},
    )


def default_config(spec: PagedAttentionSpec, hardware: Hardware) -> PagedAttentionConfig:
    return PagedAttentionConfig(block_n=32, num_splits=1, num_warps=4, num_stages=1)
