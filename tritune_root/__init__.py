"""tritune: an LLM-guided autotuner for Triton attention kernels.

The public ops are imported lazily (PEP 562): ``import tritune.search_space`` must stay free of
torch and triton, and importing the package must not define kernels before the caller had a
chance to set ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "flash_attention": "tritune.ops",
    "paged_attention": "tritune.ops",
    "varlen_attention": "tritune.ops",
    "PagedKVCache": "tritune.kv_cache",
    "register_transformers": "tritune.integrations.transformers",
}
# Submodules reachable as attributes (``tritune.flash_attn.flash_attn_func``), imported on first use.
_SUBMODULES = {"flash_attn": "tritune.flash_attn"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tritune' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBMODULES])


__all__ = ["__version__", *_LAZY]
