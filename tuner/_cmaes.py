"""CMA-ES with margin (Optuna's CmaEsSampler), for integer/ordinal spaces. Needs ``cmaes``."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from tritune.tuner._optuna_strategy import OptunaStrategy


class CmaEsStrategy(OptunaStrategy):
    """Optuna CmaEsSampler with the margin correction for discrete parameters.

    It ignores constraints, so infeasible and failed configs only teach it through their penalty
    value (worse than every config timed so far). Numeric parameters are ordinal indices;
    categorical ones are sampled at random. It starts with ``startup`` (default 5) random valid
    configs.
    """

    name = "cmaes"
    ordinal = True
    default_startup = 5

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ValueError("strategy 'cmaes' needs the cmaes package: pip install cmaes") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # with_margin
            return _QuietCmaEs(seed=self.seed, n_startup_trials=int(self.option("n_startup", 1)),
                               with_margin=True, warn_independent_sampling=False)


class _QuietCmaEs(optuna.samplers.CmaEsSampler):
    """Says once per trial that it ignores constraints; we know, and use a penalty value instead."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Constraints have been set")
            super().after_trial(*args, **kwargs)
