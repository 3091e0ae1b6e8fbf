"""Fixtures of the tuner tests: the fault-injection family and a small landscape."""

from __future__ import annotations

import pytest
from tritune.kernels import register_family
from tritune.search_space import Hardware, Landscape, write_landscape


@pytest.fixture(scope="session")
def faulty_family():
    register_family("faulty", "faulty_family")
    from tritune.kernels import get_family

    return get_family("faulty")


@pytest.fixture
def small_landscape(tmp_path) -> Landscape:
    """A 3x4x2 landscape: 5 of 24 configs absent (invalid), 2 failed, 17 timed; optimum 1.0 ms."""
    results = []
    for a in (1, 2, 4):
        for b in (8, 16, 32, 64):
            for c in ("x", "y"):
                if (a, b) in ((4, 64), (1, 8)) or (a, b, c) == (2, 8, "y"):
                    continue  # invalid
                if (a, b, c) in ((2, 64, "x"), (4, 8, "y")):
                    results.append(({"a": a, "b": b, "c": c}, None, "RuntimeFailedConfig", {"compile_time": 50.0}))
                    continue
                t = 1.0 + abs(a - 2) + abs(b - 32) / 8 + (0.5 if c == "y" else 0.0)
                results.append(({"a": a, "b": b, "c": c}, t, None, {"compile_time": 100.0, "benchmark_time": 10.0}))
    path = write_landscape(tmp_path / "small.json.gz", kernel="toy", kernel_name="toy_kernel", spec={"n": 1},
                           hardware=Hardware.from_spec("A100", "any"),
                           params={"a": (1, 2, 4), "b": (8, 16, 32, 64), "c": ("x", "y")}, results=results)
    return Landscape.load(path)
