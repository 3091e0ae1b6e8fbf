"""The measurement contract: problems, results and the backend base class.

Every backend (gpu, interpreter, replay, and test doubles) implements ``MeasureBackend`` and is
run through the same conformance suite (tests/tuner/test_backend_conformance.py).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tritune.search_space import Hardware, SearchSpace, Value


class Status(str, enum.Enum):
    """Outcome of measuring one config. Only ``OK`` results are verified and timed."""

    OK = "ok"
    INVALID = "invalid"  # rejected by the space's constraints: never compiled, costs nothing
    COMPILE_ERROR = "compile_error"
    OUT_OF_RESOURCES = "out_of_resources"  # shared memory / registers over the device limit
    WRONG_RESULT = "wrong_result"  # ran, but the output did not match the reference
    RUNTIME_ERROR = "runtime_error"  # launch failed (illegal address, ...)
    TIMEOUT = "timeout"  # compile or run took longer than the backend's limit
    CRASHED = "crashed"  # the worker process died (segfault, abort, ...)
    FAILED = "failed"  # a recorded landscape marks it failed, cause unknown

    @property
    def costs_evaluation(self) -> bool:
        """Whether finding this out took a real evaluation (everything but INVALID)."""
        return self is not Status.INVALID


@dataclass(frozen=True)
class MeasureResult:
    """One config's measurement.

    ``time_ms`` is the median kernel time (None unless OK). ``real_timing`` False means the
    number is not a GPU kernel time (interpreter wall time) and must never be compared with one.
    ``cost_ms`` is what the evaluation cost in wall time (compile + verify + benchmark), used to
    simulate wall-clock budgets on recorded landscapes.
    """

    status: Status
    time_ms: float | None = None
    times_ms: tuple[float, ...] = ()
    error: str | None = None
    compile_ms: float | None = None
    cost_ms: float = 0.0
    real_timing: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK and self.time_ms is not None


@dataclass(frozen=True)
class Problem:
    """One thing to tune: a kernel on a shape on a device, with its search space.

    ``spec`` is the kernel's ProblemSpec for kernel families, or None for a recorded landscape
    (whose problem is fixed by the file). ``bucket`` is the database key the result is stored
    under.
    """

    kernel: str
    space: SearchSpace
    hardware: Hardware
    bucket: str
    spec: Any = None
    kernel_hash: str = ""
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.bucket


class MeasureBackend(ABC):
    """Measures configs of a problem.

    Contract:
    - ``measure`` returns exactly one result per config, in order, and never raises for a
      per-config failure (compile error, out of resources, wrong result, timeout, dead worker):
      those are statuses with a message. It raises only when the backend cannot run at all.
    - An OK result has been verified against the kernel's reference on fresh random inputs.
    - Configs the space rejects come back INVALID without being compiled or counted.
    - ``real_timing`` says whether OK times are GPU kernel times.
    """

    name: ClassVar[str]
    real_timing: ClassVar[bool]
    # How many configs the tuner should hand over at once to keep this backend busy (parallel
    # workers, compiling ahead while the GPU measures). 1 for sequential backends.
    batch_size: int = 1

    @abstractmethod
    def measure(self, problem: Problem, configs: Sequence[Mapping[str, Value]]) -> list[MeasureResult]: ...

    def measure_iter(self, problem: Problem,
                     configs: Sequence[Mapping[str, Value]]) -> Iterator[tuple[int, MeasureResult]]:
        """Yield ``(index, result)`` as each config finishes, in completion order.

        The tuner stores every result the moment it is yielded, so a job killed in the middle of
        a batch loses nothing already measured. Pipelining backends override this; the default
        measures one config at a time.
        """
        for i, config in enumerate(configs):
            yield i, self.measure(problem, [config])[0]

    def close(self) -> None:  # noqa: B027 - backends without resources need nothing
        """Release workers and devices; measuring after close is an error."""

    def __enter__(self) -> MeasureBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
