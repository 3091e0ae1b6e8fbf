"""The advisor contract: propose configs for a problem on some hardware."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tritune.search_space import Hardware, SearchSpace, Value


@dataclass(frozen=True)
class Proposal:
    """A proposed config and the advisor's score for it (log-probability; higher = more confident)."""

    config: Mapping[str, Value]
    score: float


class Advisor(ABC):
    """Proposes configs; every proposal is inside the space and passes its constraints.

    Contract:
    - ``propose`` returns at most ``k`` distinct valid configs in the order to measure them, the
      advisor's favourite first (later ones may trade score for diversity); never raises for a
      bad model output (invalid outputs are dropped, with reasons available to the caller).
    - ``measured`` carries (config, time_ms or None) already measured on the target, so an
      advisor can condition on them and must not re-propose them.
    """

    @abstractmethod
    def propose(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace, k: int,
                *, measured: Sequence[tuple[Mapping[str, Value], float | None]] = ()) -> list[Proposal]: ...

    def score(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
              configs: Sequence[Mapping[str, Value]], *,
              measured: Sequence[tuple[Mapping[str, Value], float | None]] = ()) -> Sequence[float] | None:
        """How good the advisor expects each of ``configs`` to be (higher = faster), or None.

        Lets a search weigh the advisor's opinion of every candidate against a cost model's
        instead of measuring a few forced proposals. None (the default) means the advisor has no
        speed opinion here (it cannot score, or never saw this kernel measured); then callers use
        ``propose`` alone. ``measured`` as for ``propose``.
        """
        return None
