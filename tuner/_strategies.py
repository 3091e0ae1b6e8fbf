"""The strategy registry: name -> Strategy class, imported on first use.

To add a strategy, write one module with a ``Strategy`` subclass and add one line to
``STRATEGIES``. Optional dependencies (cmaes, scikit-learn, a trained advisor) are only imported
when their strategy is asked for.
"""

from __future__ import annotations

import importlib

from tritune.search_space import SearchSpace

from ._strategy import Strategy, StrategyContext

STRATEGIES: dict[str, str] = {
    "tpe": "tritune.tuner._tpe:TPEStrategy",
    "gp": "tritune.tuner._gp:GPStrategy",
    "cmaes": "tritune.tuner._cmaes:CmaEsStrategy",
    "random": "tritune.tuner._random:RandomStrategy",
    "exhaustive": "tritune.tuner._exhaustive:ExhaustiveStrategy",
    "cost-model": "tritune.tuner._model_guided:ModelGuidedStrategy",
}

# Chosen by `tritune bench-search` on the six convolution landscapes (see the tuner report);
# no advisor and no cost model involved.
DEFAULT_STRATEGY = "tpe"


def strategy_names() -> tuple[str, ...]:
    return tuple(STRATEGIES)


def get_strategy(name: str) -> type[Strategy]:
    """The Strategy class registered as ``name`` ("default" is ``DEFAULT_STRATEGY``)."""
    if name == "default":
        name = DEFAULT_STRATEGY
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from: default, {', '.join(STRATEGIES)}")
    module_name, attr = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def make_strategy(name: str, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> Strategy:
    return get_strategy(name)(space, context, seed=seed)
