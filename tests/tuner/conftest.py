"""Fixtures of the tuner tests: the fault-injection family, small landscapes, a job runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tritune.kernels import register_family
from tritune.search_space import Hardware, Landscape, write_landscape
from tritune.tuner import Problem

HERE = Path(__file__).parent
CONV = Path(__file__).parents[2] / "data" / "kernel_tuner_cache" / "convolution_milo"


@pytest.fixture(scope="session")
def faulty_family():
    register_family("faulty", "faulty_family")
    from tritune.kernels import get_family

    return get_family("faulty")


def faulty_problem(family, n: int = 16, hardware: Hardware | None = None) -> Problem:
    from tritune.tuner import kernel_problem

    return kernel_problem("faulty", family.spec_type(n=n), hardware or Hardware.cpu_interpreter())


@pytest.fixture
def small_landscape(tmp_path) -> Landscape:
    """A 3x4x2 landscape: 3 configs absent (invalid), 2 failed, the rest timed; optimum 1.0 ms."""
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


def run_job(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run tests/tuner/tune_job.py (a tuning job in its own process) to completion."""
    return subprocess.run([sys.executable, str(HERE / "tune_job.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start_job(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "tune_job.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
