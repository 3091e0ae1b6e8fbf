"""Plain functions run in WorkerPool children by test_workers.py (importable there)."""

from __future__ import annotations

import os
import signal
import time


def square(x: int) -> int:
    return x * x


def sleep_then(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def fail(message: str) -> None:
    raise ValueError(message)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def exit_quietly(code: int) -> None:
    os._exit(code)


def unpicklable() -> object:
    return lambda: None


def env(name: str) -> str | None:
    return os.environ.get(name)


def pid() -> int:
    return os.getpid()
