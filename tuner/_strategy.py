"""The search-strategy contract shared by every strategy module (one small module each).

A strategy is driven ask/tell, one config at a time, by whoever owns the measuring: ``tune``
(real kernels, persisted) and ``bench-search`` (recorded landscapes). Keeping the loop outside
the strategy is what lets every strategy be tested on recorded landscapes without a GPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tritune.search_space import Hardware, SearchSpace, TuningRecord, Value
from tritune.tuner._backend import MeasureResult


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may know besides the space.

    ``problem`` is the spec (as a dict) or a landscape's problem. ``train_records`` are
    measurements of *other* problems/hardware (leave-one-out in ``bench-search``, the database
    in ``tune``) for strategies that learn; never measurements of the target itself.
    ``seeds`` are configs to try first (advisor proposals, defaults), in order.
    """

    hardware: Hardware
    kernel: str
    problem: Mapping[str, Any] = field(default_factory=dict)
    train_records: Sequence[TuningRecord] = ()
    seeds: Sequence[Mapping[str, Value]] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """Proposes configs and learns from their measurements.

    Contract:
    - ``ask`` returns the next config to measure (a dict over the space's parameters), or None
      when the strategy has nothing left to propose (e.g. exhaustive search is done).
    - ``tell`` is called exactly once per asked config, with its result, before the next ask
      (unless ``concurrent`` is True: then several asks may precede their tells).
      INVALID results cost the caller nothing; strategies must still learn from them (so they
      are not proposed again).
    - Given the same ``seed`` and the same results, a strategy proposes the same sequence.
    """

    name: ClassVar[str]
    # True for strategies that learn from ``context.train_records`` (measurements of other
    # problems or hardware); bench-search gives them leave-one-out records only when set.
    learns: ClassVar[bool] = False
    # True when several configs may be asked before the first is told (the tuner then hands a
    # batch to backends that measure in parallel); otherwise ask/tell strictly alternate.
    concurrent: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> None:
        self.space = space
        self.context = context
        self.seed = seed

    @abstractmethod
    def ask(self) -> dict[str, Value] | None: ...

    @abstractmethod
    def tell(self, config: Mapping[str, Value], result: MeasureResult) -> None: ...

    def observe(self, config: Mapping[str, Value], result: MeasureResult) -> None:  # noqa: B027
        """Learn from a measurement this strategy did not ask for.

        Called for measurements made before it existed (a resumed job, earlier studies of the
        same problem) or by other workers sharing the study. The default ignores them; the tuner
        never re-measures a config either way.
        """
