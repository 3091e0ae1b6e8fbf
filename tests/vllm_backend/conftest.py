"""The vLLM backend tests run only where vllm is installed: the side virtualenv made by
scripts/vllm_venv.sh (vllm 0.33 pins another torch, so it never joins the main one).

Without vllm they skip with the reason (each module starts with ``pytest.importorskip``), except
where ``TRITUNE_REQUIRE_VLLM=1`` (CI sets it for its vLLM step): there a missing vllm fails the
run instead of skipping it.
"""

import importlib.util
import os

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
REQUIRED = os.environ.get("TRITUNE_REQUIRE_VLLM") == "1"
WHY = ("vllm is not installed in this interpreter: make the side virtualenv with scripts/vllm_venv.sh and run "
       ".venv-vllm/bin/python -m pytest tests/vllm_backend")


if REQUIRED and not HAVE_VLLM:
    raise pytest.UsageError("TRITUNE_REQUIRE_VLLM=1 but vllm is not importable: " + WHY)


def _import_vllm_triton_utils():
    """Import vLLM's Triton helpers with the real Triton, before any other vllm module.

    On a machine without a GPU driver, ``vllm.triton_utils`` finds no active Triton driver and
    swaps in placeholders (its kernels would become plain Python functions). Under the
    interpreter the real Triton runs them, so its check sees the CUDA driver as active while that
    module is imported; the driver class is restored right after.
    """
    from triton.backends import backends

    driver = backends["nvidia"].driver
    saved = driver.__dict__.get("is_active")
    driver.is_active = staticmethod(lambda: True)
    try:
        import vllm.triton_utils
    finally:
        if saved is None:
            del driver.is_active
        else:
            driver.is_active = saved
    return vllm.triton_utils


if HAVE_VLLM:
    _VLLM_TRITON = _import_vllm_triton_utils()


@pytest.fixture(scope="session")
def vllm_triton():
    """vllm.triton_utils, checked to hold the real Triton (vLLM's kernels can run here)."""
    assert _VLLM_TRITON.HAS_TRITON, "vLLM's Triton kernels are placeholders: vllm was imported before the conftest"
    return _VLLM_TRITON
