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
    "varlen_attention": ("tritune.kernels.varlen_attention", "FAMILY"),
}


def register_family(name: str, module: str, attr: str = "FAMILY") -> None:
    """Make ``get_family(name)`` return ``getattr(import_module(module), attr)``.

    For families outside this package (tests' fault-injection family, user templates). Tuner
    worker processes repeat the registration from the (name, module, attr) they are sent, so the
    module must be importable there too. Re-registering the same triple is a no-op.
    """
    current = _FAMILIES.get(name)
    if current is not None and current != (module, attr):
        raise ValueError(f"kernel {name!r} is already registered as {current[0]}:{current[1]}")
    _FAMILIES[name] = (module, attr)


def family_ref(name: str) -> tuple[str, str, str]:
    """(name, module, attr) of a registered family: what a worker process needs to find it."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown kernel {name!r}; known kernels: {', '.join(_FAMILIES)}")
    return (name, *_FAMILIES[name])


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
    "family_ref",
    "get_family",
    "kernel_hash",
    "register_family",
    "resource_usage",
    "source_hash",
]
