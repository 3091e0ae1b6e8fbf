"""Tree-structured Parzen Estimator (Optuna's TPESampler), multivariate, constraint-aware."""

from __future__ import annotations

import optuna

from ._optuna_strategy import OptunaStrategy
from ._study import sampler_kwargs_for_constraints


class TPEStrategy(OptunaStrategy):
    """Optuna TPE over the ordinal encoding.

    Options: ``n_startup`` (random configs before the model is used, default 10), ``multivariate``
    (model parameter interactions, default True), ``n_ei_candidates`` (default 24).
    """

    name = "tpe"

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(
            seed=self.seed,
            n_startup_trials=int(self.option("n_startup", 10)),
            multivariate=bool(self.option("multivariate", True)),
            n_ei_candidates=int(self.option("n_ei_candidates", 24)),
            constant_liar=True,
            **sampler_kwargs_for_constraints(),
        )
