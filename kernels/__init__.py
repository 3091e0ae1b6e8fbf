"""Parameterized Triton kernel templates, their references, and the AOT compile tier.

Families are imported lazily by ``get_family``: a kernel module defines ``@triton.jit``
functions at import, and Triton reads ``TRITON_INTERPRET`` at that moment, so importing
``tritune.kernels`` alone must not pin the interpreter mode.
"""

from __future__ import annotations

import importlib

from ._compile import CompileReport, compile_for_target, resource_usage
from ._family import TORCH_DTYPES, KernelFamily, Verification, compare, source_hash

_FAMILIES = {
    "flash_attention": ("tritune.kernels.flash_attention", "FAMILY"),
    "paged_attention": ("tritune.kernels.paged_attention", "FAMILY"),
}


def get_family(name: str) -> KernelFamily:
    """The kernel family registered as ``name`` (imports its module on first use)."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown kernel {name!r}; known kernels: {', '.join(_FAMILIES)}")
    module_name, attr = _FAMILIES[name]
    return getattr(importlib.import_module(module_name), attr)


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def kernel_hash(name: str) -> str:
    """Source hash of a family's kernel module, without importing (defining) its kernels."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown kernel {name!r}; known kernels: {', '.join(_FAMILIES)}")
    return source_hash(_FAMILIES[name][0])


__all__ = [
    "CompileReport",
    "KernelFamily",
    "TORCH_DTYPES",
    "Verification",
    "compare",
    "compile_for_target",
    "family_names",
    "get_family",
    "kernel_hash",
    "resource_usage",
    "source_hash",
]
