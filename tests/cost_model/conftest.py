"""Shared fixtures: the landscapes, loaded once per session."""

import os

import pytest
from tritune.search_space import Landscape


def _load(root: str, kernel_dir: str) -> list[Landscape]:
    folder = os.path.join(root, kernel_dir)
    return [Landscape.load(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".json.gz")]


@pytest.fixture(scope="session")
def conv_landscapes(kernel_tuner_cache):
    """The six convolution landscapes (A100, A4000, A6000, MI250X, W6600, W7800)."""
    return _load(kernel_tuner_cache, "convolution_milo")


@pytest.fixture(scope="session")
def dedisp_landscapes(kernel_tuner_cache):
    return _load(kernel_tuner_cache, "dedispersion_milo")
