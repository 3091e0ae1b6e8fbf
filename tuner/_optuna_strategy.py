"""Base of the strategies that are an Optuna sampler (TPE, GP, CMA-ES, random).

Through the ask/tell ``Strategy`` interface (bench-search, tests) such a strategy runs an
in-memory study of its own. ``tune`` instead gives the strategy's sampler to a persistent study
(``make_sampler``) and drives it with ``StudyDriver`` directly, so every worker and every resumed
run shares one search history. Both paths use the same driver, hence the same rules for invalid
configs, failures, duplicates and seeds.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import optuna
from tritune.search_space import SearchSpace, Value, config_key
from tritune.tuner._backend import MeasureResult
from tritune.tuner._strategy import Strategy, StrategyContext
from tritune.tuner._study import Pending, SpaceCodec, StudyDriver


class OptunaStrategy(Strategy):
    """A Strategy whose proposals come from an Optuna sampler.

    Subclasses implement ``make_sampler``; options come from ``context.options``: ``ordinal``
    (encode numeric parameters as ordered indices), ``startup`` (random valid configs first, in
    real evaluations), ``tell_duplicates`` (tell a re-proposed config its known result, default
    True, rather than FAIL).
    """

    concurrent: ClassVar[bool] = True  # several configs may be asked before any is told
    # Random valid configs measured before the sampler's model is used (in real evaluations).
    default_startup: ClassVar[int] = 0
    # Encode numeric parameters as ordered indices (CMA-ES needs it; TPE does better without).
    ordinal: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> None:
        super().__init__(space, context, seed=seed)
        self.codec = SpaceCodec(space, ordinal=bool(context.options.get("ordinal", self.ordinal)))
        self._driver: StudyDriver | None = None
        self._pending: dict[str, Pending] = {}

    @abstractmethod
    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """A fresh sampler for this strategy (seeded with ``self.seed``)."""

    def option(self, name: str, default: Any) -> Any:
        return self.context.options.get(name, default)

    @property
    def driver(self) -> StudyDriver:
        if self._driver is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.create_study(direction="minimize", sampler=self.make_sampler())
            self._driver = self.make_driver(study)
            self._driver.enqueue(self.initial_configs())
        return self._driver

    def initial_configs(self) -> list[dict[str, Value]]:
        """Configs measured first, in order (before ``startup`` random ones and the sampler).

        The default is ``context.seeds`` (advisor proposals and the family default, from
        ``tune``). Seeding strategies override this, e.g. to put a model's proposals computed
        from ``context.train_records`` first; ``tune`` and bench-search both use it.
        """
        return [dict(s) for s in self.context.seeds]

    def make_driver(self, study: optuna.Study, *, worker: str = "") -> StudyDriver:
        """The driver for ``study`` with this strategy's rules (``startup``: random valid configs
        measured first, counted in real evaluations of the whole study)."""
        return StudyDriver(study, self.space, codec=self.codec, seed=self.seed, worker=worker,
                           tell_duplicates=bool(self.option("tell_duplicates", True)),
                           startup=int(self.option("startup", self.default_startup)))

    def ask(self) -> dict[str, Value] | None:
        pending = self.driver.ask()
        if pending is None:
            return None
        self._pending[pending.key] = pending
        return dict(pending.config)

    def tell(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        pending = self._pending.pop(config_key(config), None)
        if pending is None:
            raise ValueError(f"tell() for a config that was not asked (or was told already): {config_key(config)}")
        self.driver.tell(pending, result)

    def observe(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        self.driver.warm_start([(config, result)])
