"""Exhaustive search: every valid config once, seeds first, then the space's order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import ClassVar

from tritune.search_space import SearchSpace, Value, config_key
from tritune.tuner._backend import MeasureResult
from tritune.tuner._strategy import Strategy, StrategyContext


class ExhaustiveStrategy(Strategy):
    """Measures the whole valid space (the reference every other strategy is judged against).

    Configs measured before it asks (``observe``) are skipped; ``ask`` returns None when done.
    """

    name = "exhaustive"
    concurrent: ClassVar[bool] = True

    def __init__(self, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> None:
        super().__init__(space, context, seed=seed)
        self._done: set[str] = set()
        self._order = self._configs()

    def _configs(self) -> Iterator[dict[str, Value]]:
        for seed in self.context.seeds:
            if self.space.is_valid(seed):
                yield dict(seed)
        yield from self.space

    def ask(self) -> dict[str, Value] | None:
        for config in self._order:
            key = config_key(config)
            if key not in self._done:
                self._done.add(key)
                return config
        return None

    def tell(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        self._done.add(config_key(config))

    def observe(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        self._done.add(config_key(config))
