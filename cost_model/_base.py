"""The cost-model contract: rank configs of one problem before measuring them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tritune.search_space import Hardware, SearchSpace, TuningRecord, Value


class CostModel(ABC):
    """Predicts relative cost within one problem (lower score = predicted faster).

    Contract:
    - ``fit(records)`` trains on measurements of other problems/hardware; groups (``record.group``)
      define which records are comparable.
    - ``predict(...)`` returns one score per config; only the order within one call matters.
    - ``update(...)`` adds measurements of the target problem (online refit); cheap enough to call
      after every few measurements.
    """

    @abstractmethod
    def fit(self, records: Sequence[TuningRecord]) -> CostModel: ...

    @abstractmethod
    def predict(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
                configs: Sequence[Mapping[str, Value]]) -> np.ndarray: ...

    def update(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
               configs: Sequence[Mapping[str, Value]], times_ms: Sequence[float | None]) -> None:
        """Learn from target measurements (None = the config failed); the default ignores them."""
        return None
