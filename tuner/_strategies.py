"""The strategy registry: name -> Strategy class, imported on first use.

To add a strategy, write one module with a ``Strategy`` subclass and add one line to
``STRATEGIES``. Optional dependencies (cmaes, scikit-learn, a trained advisor) are only imported
when their strategy is asked for.
"""

from __future__ import annotations

import importlib

from tritune.search_space import SearchSpace

from ._strategy import Strategy, StrategyContext

# name -> "module:attr" (imported on first use) or the Strategy class itself.
STRATEGIES: dict[str, str | type[Strategy]] = {
    "tpe": "tritune.tuner._tpe:TPEStrategy",
    "gp": "tritune.tuner._gp:GPStrategy",
    "cmaes": "tritune.tuner._cmaes:CmaEsStrategy",
    "random": "tritune.tuner._random:RandomStrategy",
    "exhaustive": "tritune.tuner._exhaustive:ExhaustiveStrategy",
    "advisor": "tritune.tuner._advisor_seeded:AdvisorSeededStrategy",
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
    entry = STRATEGIES[name]
    if not isinstance(entry, str):
        return entry
    module_name, attr = entry.split(":")
    return getattr(importlib.import_module(module_name), attr)


def make_strategy(name: str, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> Strategy:
    return get_strategy(name)(space, context, seed=seed)
