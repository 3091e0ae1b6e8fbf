"""Helpers shared by the tuner tests (a module of its own: every test folder has a conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tritune.search_space import Hardware
from tritune.tuner import Problem

HERE = Path(__file__).parent
CONV = Path(__file__).parents[2] / "data" / "kernel_tuner_cache" / "convolution_milo"


def faulty_problem(family, n: int = 16, hardware: Hardware | None = None) -> Problem:
    from tritune.tuner import kernel_problem

    return kernel_problem("faulty", family.spec_type(n=n), hardware or Hardware.cpu_interpreter())


def run_job(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run tests/tuner/tune_job.py (a tuning job in its own process) to completion."""
    return subprocess.run([sys.executable, str(HERE / "tune_job.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start_job(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "tune_job.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
