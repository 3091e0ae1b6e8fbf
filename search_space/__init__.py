"""Problem specs, shape buckets, typed configs, search spaces and hardware fingerprints.

Pure Python (no torch, triton or optuna at import), so every layer above can reason about
configs cheaply. Kernel families register their space builder in ``_SPACES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import flash_attention as _fa
from . import paged_attention as _pa
from . import varlen_attention as _va
from ._space import (
    Config,
    Constraint,
    Param,
    ParamConfig,
    SearchSpace,
    Value,
    config_key,
    pow2_ceil,
)
from ._specs import (
    DTYPE_BYTES,
    DTYPES,
    SPECS,
    Bucket,
    FlashAttentionSpec,
    PagedAttentionSpec,
    ProblemSpec,
    VarlenAttentionSpec,
    normalize_dtype,
    spec_from_dict,
    spec_type,
)
from .flash_attention import FlashAttentionConfig
from .hardware import (
    CPU_INTERPRETER,
    DEVICE_SPECS,
    DeviceSpec,
    Hardware,
    detect,
    device_spec,
    interpreting,
)
from .landscape import Entry, Landscape, load_landscapes, write_landscape
from .paged_attention import PagedAttentionConfig
from .records import TuningRecord
from .varlen_attention import VarlenAttentionConfig

_SPACES: dict[str, tuple[Callable[[Any, Hardware], SearchSpace], Callable[[Any, Hardware], Config]]] = {
    "flash_attention": (_fa.space, _fa.default_config),
    "paged_attention": (_pa.space, _pa.default_config),
    "varlen_attention": (_va.space, _va.default_config),
}
KERNELS: tuple[str, ...] = tuple(_SPACES)


def space_for(spec: ProblemSpec, hardware: Hardware) -> SearchSpace:
    """The search space of ``spec``'s kernel on ``hardware``."""
    return _SPACES[spec.kernel][0](spec, hardware)


def default_config(spec: ProblemSpec, hardware: Hardware) -> Config:
    """The always-valid fallback config of ``spec``'s kernel on ``hardware``."""
    return _SPACES[spec.kernel][1](spec, hardware)


__all__ = [
    "Bucket",
    "CPU_INTERPRETER",
    "Config",
    "Constraint",
    "DEVICE_SPECS",
    "DTYPES",
    "DTYPE_BYTES",
    "DeviceSpec",
    "Entry",
    "FlashAttentionConfig",
    "FlashAttentionSpec",
    "Hardware",
    "KERNELS",
    "Landscape",
    "PagedAttentionConfig",
    "PagedAttentionSpec",
    "Param",
    "ParamConfig",
    "ProblemSpec",
    "SPECS",
    "SearchSpace",
    "TuningRecord",
    "VarlenAttentionConfig",
    "VarlenAttentionSpec",
    "Value",
    "config_key",
    "default_config",
    "detect",
    "device_spec",
    "interpreting",
    "load_landscapes",
    "normalize_dtype",
    "pow2_ceil",
    "space_for",
    "spec_from_dict",
    "spec_type",
    "write_landscape",
]
