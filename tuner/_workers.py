"""Worker processes that compile and measure configs, so a bad config costs one task, not the job.

A config can hang the compiler, segfault, or poison a CUDA context (illegal address): each task
therefore runs in a child process. A task that runs past its timeout gets its worker killed; a
worker that dies (signal, ``os._exit``, OOM kill) reports CRASHED with its exit code; either way
the worker is replaced and the next task runs. Workers exit on their own when the tuner dies
(EOF on their pipe, parent-death signal on Linux, and a watchdog on the tuner's pid), so a
SIGKILLed job leaves no orphans measuring forever.

Task functions must be importable module-level functions; their return values are pickled back.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MAX_TRACE = 4000


@dataclass(frozen=True)
class Outcome:
    """How a task ended: ``kind`` is "ok" (``value`` holds the return value), "error" (the task
    raised: ``error`` is ``"Type: message"``, ``trace`` the traceback), "timeout" or "crashed"."""

    kind: str
    value: Any = None
    error: str | None = None
    trace: str | None = None
    exception_type: str | None = None
    seconds: float = 0.0


def _worker_main(conn: Any, env: Mapping[str, str], sys_path: Sequence[str], tuner_pid: int) -> None:
    # The environment is applied before any task imports a kernel module: Triton reads
    # TRITON_INTERPRET when a @triton.jit function is defined.
    os.environ.clear()
    os.environ.update(env)
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tuner's to handle
    _die_with(tuner_pid)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            os._exit(0)
        try:
            value = fn(*args)
            message: tuple[Any, ...] = ("ok", value)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back as data
            message = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()[-_MAX_TRACE:],
                       type(exc).__module__ + "." + type(exc).__qualname__)
        try:
            conn.send(message)
        except Exception as exc:  # an unpicklable return value
            conn.send(("error", f"could not send the task's result back: {exc}", "", "builtins.TypeError"))
        if getattr(message[1], "extra", None) and message[1].extra.get("restart_worker"):
            os._exit(0)  # e.g. a CUDA context poisoned by an illegal address: start clean


def _die_with(tuner_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(tuner_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, daemon=True, name="tritune-tuner-watchdog").start()


def _context(start_method: str | None) -> multiprocessing.context.BaseContext:
    if start_method is None:
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # Import torch once in the fork server: replacing a crashed worker then takes
        # milliseconds instead of a fresh interpreter plus torch (seconds on a busy machine).
        ctx.set_forkserver_preload(["torch"])
    return ctx


class Worker:
    """One child process running one task at a time."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, env: Mapping[str, str], name: str) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, dict(env), list(sys.path), os.getpid()),
                                   name=name, daemon=True)
        self.process.start()
        child.close()
        self.task: Any = None
        self.started = 0.0
        self.timeout: float | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None

    def send(self, task: Any, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> None:
        self.task, self.started, self.timeout = task, time.monotonic(), timeout
        self.conn.send((fn, args))

    def deadline(self) -> float | None:
        return None if self.timeout is None else self.started + self.timeout

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def close(self) -> None:
        try:
            self.conn.close()  # EOF: an idle worker exits by itself
        except OSError:
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "worker process vanished"
    if code < 0:
        try:
            return f"worker process killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with status {code}"


class WorkerPool:
    """``size`` workers sharing a queue of tasks; results come back as tasks finish.

    ``env`` is the complete environment of the workers (default: this process's), applied before
    any task runs. ``submit`` queues; ``poll`` waits up to ``timeout`` seconds and returns the
    finished ``(task, Outcome)`` pairs. Several pools can be waited on together with
    ``wait_any``.
    """

    def __init__(self, size: int, *, env: Mapping[str, str] | None = None, start_method: str | None = None,
                 name: str = "tritune-worker") -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got size={size}")
        self.size = size
        self.env = dict(os.environ if env is None else env)
        self.name = name
        self._ctx = _context(start_method)
        self._workers: list[Worker] = []
        self._queue: deque[tuple[Any, Callable[..., Any], tuple[Any, ...], float | None]] = deque()
        self._closed = False
        self.restarts = 0

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        """Start every worker now (otherwise they start on first use)."""
        while len(self._workers) < self.size:
            self._workers.append(self._new_worker())
        return self

    def _new_worker(self) -> Worker:
        return Worker(self._ctx, self.env, f"{self.name}-{len(self._workers) + self.restarts}")

    def close(self) -> None:
        self._closed = True
        for w in self._workers:
            if w.busy:
                w.kill()
            else:
                w.close()
        self._workers.clear()
        self._queue.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- tasks -------------------------------------------------------------------------------
    def submit(self, task: Any, fn: Callable[..., Any], args: tuple[Any, ...], *, timeout: float | None) -> None:
        if self._closed:
            raise RuntimeError(f"worker pool {self.name} is closed")
        self._queue.append((task, fn, args, timeout))
        self._dispatch()

    @property
    def pending(self) -> int:
        return len(self._queue) + sum(w.busy for w in self._workers)

    def _dispatch(self) -> None:
        while self._queue:
            idle = [w for w in self._workers if not w.busy]
            if not idle and len(self._workers) < self.size:
                self._workers.append(self._new_worker())
                continue
            if not idle:
                return
            worker = idle[0]
            if not worker.process.is_alive():  # exited after its last task (poisoned context)
                self._replace(worker)
                continue
            task, fn, args, timeout = self._queue.popleft()
            try:
                worker.send(task, fn, args, timeout)
            except (BrokenPipeError, OSError):
                self._queue.appendleft((task, fn, args, timeout))
                self._replace(worker)

    def _replace(self, worker: Worker) -> None:
        worker.kill()
        self.restarts += 1
        self._workers[self._workers.index(worker)] = self._new_worker()

    def handles(self) -> list[Any]:
        return [h for w in self._workers if w.busy for h in (w.conn, w.process.sentinel)]

    def next_deadline(self) -> float | None:
        deadlines = [d for w in self._workers if w.busy and (d := w.deadline()) is not None]
        return min(deadlines) if deadlines else None

    def collect(self) -> list[tuple[Any, Outcome]]:
        """Finished tasks, without waiting: results, crashes and timeouts."""
        done = []
        now = time.monotonic()
        for worker in list(self._workers):
            if not worker.busy:
                continue
            elapsed = now - worker.started
            outcome: Outcome | None = None
            if worker.conn.poll():
                try:
                    msg = worker.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is None:
                    worker.process.join(1)
                    outcome = Outcome("crashed", error=_exit_text(worker.process.exitcode), seconds=elapsed)
                elif msg[0] == "ok":
                    outcome = Outcome("ok", value=msg[1], seconds=elapsed)
                else:
                    outcome = Outcome("error", error=msg[1], trace=msg[2], exception_type=msg[3], seconds=elapsed)
            elif not worker.process.is_alive():
                outcome = Outcome("crashed", error=_exit_text(worker.process.exitcode), seconds=elapsed)
            elif (deadline := worker.deadline()) is not None and now >= deadline:
                outcome = Outcome("timeout", error=f"no result after {worker.timeout:.0f} s; worker killed",
                                  seconds=elapsed)
            if outcome is None:
                continue
            task = worker.task
            worker.task = None
            if outcome.kind in ("crashed", "timeout"):
                self._replace(worker)
            done.append((task, outcome))
        self._dispatch()
        return done

    def poll(self, timeout: float | None = None) -> list[tuple[Any, Outcome]]:
        return wait_any([self], timeout)[0] if self.pending else []

    def run(self, fn: Callable[..., Any], arg_list: Sequence[tuple[Any, ...]], *,
            timeout: float | None) -> Iterator[tuple[int, Outcome]]:
        """Run ``fn(*args)`` for each args tuple; yield ``(index, outcome)`` in completion order."""
        token = object()  # results of an abandoned earlier run are dropped, not mistaken for ours
        for i, args in enumerate(arg_list):
            self.submit((token, i), fn, args, timeout=timeout)
        remaining = len(arg_list)
        while remaining:
            for task, outcome in self.poll(None):
                if task[0] is token:
                    remaining -= 1
                    yield task[1], outcome


def wait_any(pools: Sequence[WorkerPool], timeout: float | None = None) -> list[list[tuple[Any, Outcome]]]:
    """Wait until a task of any pool finishes (or times out, or ``timeout`` passes); collect all."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        results = [p.collect() for p in pools]
        if any(results):
            return results
        handles = [h for p in pools for h in p.handles()]
        deadlines = [d for p in pools if (d := p.next_deadline()) is not None]
        if end is not None:
            deadlines.append(end)
        if not handles and end is None:
            return results
        wait_s = max(0.0, min(deadlines) - time.monotonic()) + 0.01 if deadlines else None
        if handles:
            multiprocessing.connection.wait(handles, timeout=wait_s)
        elif wait_s:
            time.sleep(wait_s)
        if end is not None and time.monotonic() >= end:
            return [p.collect() for p in pools]
