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

import importlib
import json
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
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


def _entry() -> None:
    """Worker process main; argv: task fd, result fd, tuner pid, sys.path (JSON), preload (JSON)."""
    task_fd, result_fd, tuner_pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    sys.path[:0] = [p for p in json.loads(sys.argv[4]) if p not in sys.path]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tuner's to handle
    _die_with(tuner_pid)
    tasks = Connection(task_fd, writable=False)
    results = Connection(result_fd, readable=False)
    for module in json.loads(sys.argv[5]):
        importlib.import_module(module)  # before "ready": import time never counts against a task
    results.send(("ready",))
    while True:
        try:
            fn, args = tasks.recv()
        except (EOFError, OSError):
            os._exit(0)
        try:
            message: tuple[Any, ...] = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back as data
            message = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()[-_MAX_TRACE:],
                       type(exc).__module__ + "." + type(exc).__qualname__)
        try:
            results.send(message)
        except Exception as exc:  # an unpicklable return value
            results.send(("error", f"could not send the task's result back: {exc}", "", "builtins.TypeError"))
        extra = getattr(message[1], "extra", None)
        if isinstance(extra, Mapping) and extra.get("restart_worker"):
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


class Worker:
    """One child process running one task at a time.

    A plain ``subprocess`` running ``_entry`` (not multiprocessing), so a user's script without a
    ``__main__`` guard is never re-imported in the worker. Its output goes to a log file whose
    tail is quoted when it crashes.
    """

    def __init__(self, env: Mapping[str, str], name: str, preload: Sequence[str] = ()) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
        code = "from tritune.tuner._workers import _entry; _entry()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(task_r), str(result_w), str(os.getpid()), json.dumps(sys.path),
             json.dumps(list(preload))],
            pass_fds=(task_r, result_w), env=dict(env), stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        os.close(task_r)
        os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.conn = Connection(result_r, writable=False)
        self.name = name
        self.ready = False  # True once the worker has imported its preload modules
        self.task: Any = None
        self.started = time.monotonic()
        self.timeout: float | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, task: Any, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> None:
        self.task, self.started, self.timeout = task, time.monotonic(), timeout
        self.tasks.send((fn, args))

    def deadline(self) -> float | None:
        if not self.ready:
            return self.started + WorkerPool.STARTUP_TIMEOUT_S
        return None if self.timeout is None else self.started + self.timeout

    def exit_text(self) -> str:
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        text = _exit_text(code)
        tail = self.log_tail()
        return f"{text}; last output: {tail}" if tail else text

    def log_tail(self, limit: int = 400) -> str:
        try:
            with open(self.log.name, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-3:])

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self._reap()

    def close(self) -> None:
        try:
            self.tasks.close()  # EOF: an idle worker exits by itself
        except OSError:
            pass
        try:
            self.process.wait(2)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._reap()

    def _reap(self) -> None:
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for c in (self.tasks, self.conn):
            try:
                c.close()
            except OSError:
                pass
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def _exit_text(code: int | None) -> str:
    if code is None:
        return "worker process vanished"
    if code < 0:
        try:
            return f"worker process killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with status {code}"


class WorkerStartError(RuntimeError):
    """Workers die before they can take a task (broken environment): the backend cannot run."""


class WorkerPool:
    """``size`` workers sharing a queue of tasks; results come back as tasks finish.

    ``env`` is the complete environment of the workers (default: this process's). ``preload``
    modules are imported by each worker before it reports ready, so that their import time never
    counts against a task's timeout. ``submit`` queues; ``poll`` waits and returns finished
    ``(task, Outcome)`` pairs; several pools can be waited on together with ``wait_any``.
    """

    STARTUP_TIMEOUT_S = 600.0
    MAX_FAILED_STARTS = 3

    def __init__(self, size: int, *, env: Mapping[str, str] | None = None, name: str = "tritune-worker",
                 preload: Sequence[str] = ("torch",)) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got size={size}")
        self.size = size
        self.env = dict(os.environ if env is None else env)
        self.name = name
        self.preload = tuple(preload)
        self._workers: list[Worker] = []
        self._queue: deque[tuple[Any, Callable[..., Any], tuple[Any, ...], float | None]] = deque()
        self._closed = False
        self._failed_starts = 0
        self.restarts = 0

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        """Start every worker now (otherwise they start on first use)."""
        while len(self._workers) < self.size:
            self._workers.append(self._new_worker())
        return self

    def _new_worker(self) -> Worker:
        return Worker(self.env, f"{self.name}-{len(self._workers) + self.restarts}", self.preload)

    def close(self) -> None:
        self._closed = True
        for w in self._workers:
            if w.busy or not w.ready:
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
            if len(self._workers) < self.size:
                self._workers.append(self._new_worker())
                continue
            idle = [w for w in self._workers if w.ready and not w.busy]
            if not idle:
                return
            worker = idle[0]
            if not worker.alive():  # exited after its last task (poisoned context)
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
        """What to wait on: busy workers, and starting ones while tasks are queued."""
        return [w.conn for w in self._workers if w.busy or (not w.ready and self._queue)]

    def next_deadline(self) -> float | None:
        deadlines = [d for w in self._workers if (d := w.deadline()) is not None and (w.busy or self._queue)]
        return min(deadlines) if deadlines else None

    def _check_starting(self, worker: Worker, now: float) -> None:
        """Advance a starting worker: ready, or failed (replaced; too many failures raise)."""
        failed = None
        if worker.conn.poll():
            try:
                msg = worker.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg == ("ready",):
                worker.ready, worker.timeout = True, None
                self._failed_starts = 0
                return
            failed = worker.exit_text() if msg is None else f"unexpected message {msg!r}"
        elif not worker.alive():
            failed = worker.exit_text()
        elif now - worker.started > self.STARTUP_TIMEOUT_S:
            failed = f"not ready after {self.STARTUP_TIMEOUT_S:.0f} s"
        if failed is not None:
            self._failed_starts += 1
            if self._failed_starts >= self.MAX_FAILED_STARTS:
                raise WorkerStartError(f"{self.name} workers fail to start: {failed}")
            self._replace(worker)

    def collect(self) -> list[tuple[Any, Outcome]]:
        """Finished tasks, without waiting: results, crashes and timeouts."""
        done = []
        now = time.monotonic()
        for worker in list(self._workers):
            if not worker.ready:
                self._check_starting(worker, now)
                continue
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
                    outcome = Outcome("crashed", error=worker.exit_text(), seconds=elapsed)
                elif msg[0] == "ok":
                    outcome = Outcome("ok", value=msg[1], seconds=elapsed)
                else:
                    outcome = Outcome("error", error=msg[1], trace=msg[2], exception_type=msg[3], seconds=elapsed)
            elif not worker.alive():
                outcome = Outcome("crashed", error=worker.exit_text(), seconds=elapsed)
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
        if any(results) or not any(p.pending for p in pools):
            return results
        handles = [h for p in pools for h in p.handles()]
        deadlines = [d for p in pools if (d := p.next_deadline()) is not None]
        if end is not None:
            deadlines.append(end)
        # Wake up at the next deadline, and at least every few seconds to notice a worker that
        # died without closing its pipe (it always closes it, but the check is cheap).
        wait_s = min([max(0.0, min(deadlines) - time.monotonic()) + 0.01] if deadlines else [5.0])
        if handles:
            multiprocessing.connection.wait(handles, timeout=min(wait_s, 5.0))
        else:
            time.sleep(min(wait_s, 0.1))
        if end is not None and time.monotonic() >= end:
            return [p.collect() for p in pools]
