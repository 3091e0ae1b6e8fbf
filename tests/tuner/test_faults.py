"""Fault injection: every way a config can go wrong costs one trial, is recorded with its status
and message, and never becomes the tuned config."""

from __future__ import annotations

import json
import os

import pytest
from tritune.db import TuningDB
from tritune.search_space import Hardware
from tritune.tuner import Budget, GpuBackend, InterpreterBackend, tune
from tuner_helpers import faulty_problem

EXPECTED = {
    "good": ("ok", None),
    "compile_error": ("compile_error", "deliberately broken"),
    "out_of_smem": ("out_of_resources", "shared memory"),
    "wrong": ("wrong_result", "max error"),
    "hang": ("timeout", "no result after"),
    "crash": ("crashed", "SIGSEGV"),
}


@pytest.fixture(scope="module")
def interpreter():
    with InterpreterBackend(workers=1, timeout_s=8.0).start() as backend:
        yield backend


def _by_variant(db_path):
    with TuningDB(db_path) as db:
        rows = db.trials(kernel="faulty")
        best = db.best(kernel="faulty")
    return {json.loads(r["config"])["variant"]: r for r in rows}, best


@pytest.mark.slow
def test_job_survives_every_fault_and_keeps_the_correct_config(faulty_family, interpreter, tmp_db):
    problem = faulty_problem(faulty_family, n=16)  # block 16 only: one config per variant
    report = tune([problem], interpreter, budget=Budget(trials=20), strategy="exhaustive", db=tmp_db,
                  progress=False)
    p = report.problems[0]
    assert p.stopped == "space exhausted" and p.evaluations == len(EXPECTED) == p.measured_here
    rows, best = _by_variant(tmp_db)
    for variant, (status, message) in EXPECTED.items():
        assert rows[variant]["status"] == status, (variant, rows[variant]["error"])
        if message:
            assert message in rows[variant]["error"], (variant, rows[variant]["error"])
    assert rows["good"]["real_timing"] == 0 and rows["good"]["time_ms"] > 0
    # "wrong" is by far the fastest launch; only the verified config may become best.
    assert [b.config for b in best] == [{"block": 16, "variant": "good"}]
    assert p.best_config == {"block": 16, "variant": "good"}
    assert interpreter.measure_pool.restarts >= 2  # the hang and the crash each cost a worker


@pytest.mark.slow
def test_gpu_pipeline_compiles_ahead_and_isolates_faults(faulty_family, tmp_path):
    """The GPU backend's plumbing with the GPU measurement replaced by the interpreter's.

    The compile stage (the family's AOT compile) rejects the broken and the too-large configs,
    so they never reach the measuring worker; the rest fail there as on a GPU.
    """
    from faulty_family import fake_gpu_measure

    log = tmp_path / "measured.log"
    env = {**os.environ, "TRITON_INTERPRET": "1", "TRITUNE_TEST_MEASURE_LOG": str(log)}
    problem = faulty_problem(faulty_family, n=16, hardware=Hardware.from_spec("H100", "3.9.0"))
    with GpuBackend(compile_workers=1, measure_timeout_s=8.0, measure_task=fake_gpu_measure, env=env) as backend:
        configs = [{"block": 16, "variant": v} for v in EXPECTED] + [{"block": 64, "variant": "good"}]
        results = backend.measure(problem, configs)
    got = {c["variant"] if c["block"] == 16 else "too_big": r for c, r in zip(configs, results, strict=True)}
    for variant, (status, message) in EXPECTED.items():
        assert got[variant].status.value == status, (variant, got[variant].error)
        if message:
            assert message in got[variant].error
    assert got["too_big"].status.value == "invalid" and got["too_big"].cost_ms == 0
    assert got["good"].real_timing and got["good"].time_ms > 0
    assert got["good"].extra.get("shared_bytes") == 64  # figures from the compile stage
    measured = log.read_text().split()
    assert not any("compile_error" in m or "out_of_smem" in m for m in measured)
