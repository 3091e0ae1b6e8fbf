"""Uniform random search over the valid configs, without replacement (the baseline)."""

from __future__ import annotations

import optuna
from tritune.tuner._optuna_strategy import OptunaStrategy


class RandomStrategy(OptunaStrategy):
    """Optuna's RandomSampler; invalid proposals are free and measured configs are never repeated,
    so this is exactly "n draws without replacement among valid configs", whose expected result
    bench-search also computes in closed form."""

    name = "random"

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)
