"""Gaussian-process Bayesian optimisation (Optuna's GPSampler, constrained log-EI)."""

from __future__ import annotations

import optuna
from tritune.tuner._optuna_strategy import OptunaStrategy
from tritune.tuner._study import sampler_kwargs_for_constraints


class GPStrategy(OptunaStrategy):
    """Optuna GPSampler, after a random start of ``startup`` (default 5) real evaluations.

    Best per evaluation on smooth spaces; each proposal fits a GP, so it is the slowest to ask
    (about 0.1-1 s per config at 100 trials), which only matters on recorded landscapes.
    """

    name = "gp"
    default_startup = 5

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(
            seed=self.seed,
            n_startup_trials=int(self.option("n_startup", 1)),
            deterministic_objective=False,
            **sampler_kwargs_for_constraints(),
        )
