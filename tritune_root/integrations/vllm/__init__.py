"""tritune as a vLLM attention backend: ``vllm serve MODEL --attention-backend TRITUNE``.

vLLM (0.33) runs every function of the ``vllm.general_plugins`` entry-point group in each of its
processes; tritune's (see pyproject.toml) is :func:`register`, which adds the backend name
``TRITUNE`` to vLLM's registry. The backend classes live in
:mod:`tritune.integrations.vllm.backend`, which imports vLLM: nothing of vLLM is imported by
this package itself, and ``tritune.integrations.vllm.TrituneAttentionBackend`` (the path
registered with vLLM) loads that module on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

NAME = "TRITUNE"
BACKEND_PATH = "tritune.integrations.vllm.TrituneAttentionBackend"
_BACKEND_NAMES = ("TrituneAttentionBackend", "TrituneAttentionImpl", "TrituneMetadataBuilder",
                  "TrituneAttentionMetadata")


def register() -> str:
    """Register the ``TRITUNE`` attention backend with vLLM's registry (idempotent).

    The ``vllm.general_plugins`` entry point; vLLM calls it in every process before it selects
    backends. Returns the backend name to pass as ``--attention-backend``.
    """
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    if NAME in AttentionBackendEnum.__members__:
        # A second call (a plugin loaded twice, a test): re-point the existing member.
        register_backend(AttentionBackendEnum[NAME], BACKEND_PATH)
    else:
        register_backend(NAME, BACKEND_PATH)
    return NAME


def __getattr__(name: str) -> Any:
    if name in _BACKEND_NAMES:
        return getattr(importlib.import_module("tritune.integrations.vllm.backend"), name)
    raise AttributeError(f"module 'tritune.integrations.vllm' has no attribute {name!r}")


__all__ = ["BACKEND_PATH", "NAME", "register", *_BACKEND_NAMES]
