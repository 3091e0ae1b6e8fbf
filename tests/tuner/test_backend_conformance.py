"""One contract, every backend: one result per config in order, INVALID for free, failures as
statuses (never exceptions), OK results verified and timed, no measuring after close."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from tritune.search_space import Hardware, Landscape
from tritune.tuner import (
    GpuBackend,
    InterpreterBackend,
    MeasureBackend,
    Problem,
    ReplayBackend,
    Status,
    landscape_problem,
)
from tuner_helpers import CONV, faulty_problem


@dataclass
class Case:
    backend: MeasureBackend
    problem: Problem
    good: list[dict]  # configs that measure OK
    bad: dict  # a valid config that fails (compile error, or failed on the GPU)
    invalid: dict  # rejected by the space


def _replay_case() -> Case:
    landscape = Landscape.load(CONV / "A4000.json.gz")
    entries = list(landscape)
    good = [dict(e.values) for e in entries if e.time_ms is not None][:2]
    bad = next(dict(e.values) for e in entries if e.time_ms is None)
    absent = dict(good[0], block_size_x=256, block_size_y=16, tile_size_x=4, tile_size_y=4)
    assert landscape.lookup(absent) is None
    return Case(ReplayBackend([landscape]), landscape_problem(landscape), good, bad, absent)


def _kernel_case(backend: MeasureBackend, family, hardware: Hardware) -> Case:
    problem = faulty_problem(family, n=32, hardware=hardware)
    return Case(backend, problem, [{"block": 16, "variant": "good"}, {"block": 32, "variant": "good"}],
                {"block": 16, "variant": "compile_error"}, {"block": 64, "variant": "good"})


def _gpu_hardware() -> Hardware:
    """This machine's GPU fingerprint, or a skip. The test session runs with TRITON_INTERPRET=1;
    the GPU backend's workers drop it, and only they launch kernels."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from tritune.search_space import detect

    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        return detect()
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


@pytest.fixture(scope="module", params=["replay", "interpreter", "gpu-pipeline", "gpu"])
def case(request, faulty_family):
    if request.param == "replay":
        c = _replay_case()
    elif request.param == "interpreter":
        c = _kernel_case(InterpreterBackend(workers=1, timeout_s=60).start(), faulty_family, Hardware.cpu_interpreter())
    elif request.param == "gpu-pipeline":
        from faulty_family import fake_gpu_measure

        env = {**os.environ, "TRITON_INTERPRET": "1"}
        backend = GpuBackend(compile_workers=1, measure_task=fake_gpu_measure, env=env).start()
        c = _kernel_case(backend, faulty_family, Hardware.from_spec("H100", "3.9.0"))
    else:
        hardware = _gpu_hardware()
        c = _kernel_case(GpuBackend().start(), faulty_family, hardware)
    yield c
    c.backend.close()


def test_one_result_per_config_in_order(case):
    configs = [case.invalid, case.good[0], case.bad, case.good[1]]
    results = case.backend.measure(case.problem, configs)
    assert len(results) == 4
    assert results[0].status is Status.INVALID and results[0].error and results[0].cost_ms == 0
    for r in (results[1], results[3]):
        assert r.status is Status.OK and r.ok, r.error
        assert r.time_ms > 0 and r.real_timing is case.backend.real_timing
    assert results[2].status not in (Status.OK, Status.INVALID) and results[2].error
    assert results[2].status.costs_evaluation


def test_measure_iter_yields_every_index_once(case):
    configs = [case.good[1], case.invalid, case.good[0]]
    seen = [i for i, _ in case.backend.measure_iter(case.problem, configs)]
    assert sorted(seen) == [0, 1, 2]


def test_nothing_to_measure(case):
    assert case.backend.measure(case.problem, []) == []


def test_same_config_measures_the_same_way(case):
    a, b = case.backend.measure(case.problem, [case.good[0], case.good[0]])
    assert a.status is b.status is Status.OK


@pytest.mark.parametrize("make", [lambda: ReplayBackend([]), lambda: InterpreterBackend(workers=1)])
def test_closed_backend_refuses_to_measure(make, faulty_family):
    backend = make()
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.measure(faulty_problem(faulty_family), [{"block": 16, "variant": "good"}])
