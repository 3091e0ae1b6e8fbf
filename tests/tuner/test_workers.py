"""The worker pool: results in completion order, and a bad task costs one task, never the pool."""

from __future__ import annotations

import time

import pytest
import worker_tasks as t
from tritune.tuner import WorkerPool


@pytest.fixture
def pool():
    with WorkerPool(2, preload=(), name="test-worker") as p:
        yield p


def test_results_come_back_by_index(pool):
    got = dict(pool.run(t.square, [(i,) for i in range(6)], timeout=30))
    assert {i: o.value for i, o in got.items()} == {i: i * i for i in range(6)}
    assert all(o.kind == "ok" for o in got.values())


def test_completion_order_not_submission_order(pool):
    order = [i for i, _ in pool.run(t.sleep_then, [(0, 1.5), (1, 0.0)], timeout=30)]
    assert order == [1, 0]


def test_exception_is_an_outcome_with_type_and_message(pool):
    [(_, outcome)] = list(pool.run(t.fail, [("no good",)], timeout=30))
    assert outcome.kind == "error"
    assert outcome.error == "ValueError: no good"
    assert outcome.exception_type == "builtins.ValueError"
    assert "Traceback" in outcome.trace


def test_hang_is_killed_at_the_timeout_and_the_pool_goes_on(pool):
    start = time.monotonic()
    outcomes = dict(pool.run(t.sleep_then, [(0, 600.0)], timeout=1.0))
    assert outcomes[0].kind == "timeout" and "no result after 1 s" in outcomes[0].error
    assert time.monotonic() - start < 30
    assert dict(pool.run(t.square, [(3,)], timeout=30))[0].value == 9
    assert pool.restarts == 1


def test_crashes_are_reported_with_the_signal_and_replaced(pool):
    outcomes = dict(pool.run(t.segfault, [()], timeout=30))
    assert outcomes[0].kind == "crashed" and "SIGSEGV" in outcomes[0].error
    outcomes = dict(pool.run(t.exit_quietly, [(3,)], timeout=30))
    assert outcomes[0].kind == "crashed" and "exited with status 3" in outcomes[0].error
    assert dict(pool.run(t.square, [(4,)], timeout=30))[0].value == 16


def test_unpicklable_result_is_an_error_not_a_hang(pool):
    [(_, outcome)] = list(pool.run(t.unpicklable, [()], timeout=30))
    assert outcome.kind == "error" and "could not send" in outcome.error


def test_workers_get_the_given_environment():
    with WorkerPool(1, env={"TRITUNE_X": "42", "PATH": "/usr/bin:/bin"}, preload=()) as p:
        assert dict(p.run(t.env, [("TRITUNE_X",)], timeout=30))[0].value == "42"


def test_closed_pool_refuses_work(pool):
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(0, t.square, (1,), timeout=1)
