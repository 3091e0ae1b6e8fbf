"""The strategy registry: name -> Strategy class, imported on first use.

To add a strategy, write one module with a ``Strategy`` subclass and add one line to
``STRATEGIES``. Optional dependencies (cmaes, scikit-learn, a trained advisor) are only imported
when their strategy is asked for.

- A strategy that learns from other problems sets ``learns = True``: bench-search then passes
  leave-one-out records (the other landscapes of the same kernel) in
  ``context.train_records``; ``tune`` passes the database's records of other problems.
- A strategy built on an Optuna sampler subclasses ``OptunaStrategy`` (``_optuna_strategy``)
  and gets invalid-config constraints, duplicate handling, persistence, resume and many
  workers for free; override ``initial_configs`` to measure a model's proposals first.
- Any other ask/tell strategy runs in ``tune`` through an adapter sampler (``_adapter``), so it
  is resumable too; ``context.options['cost_model']`` / ``['advisor']`` carry what ``tune`` got.
"""

from __future__ import annotations

import importlib

from tritune.search_space import SearchSpace
from tritune.tuner._strategy import Strategy, StrategyContext

# name -> "module:attr" (imported on first use) or the Strategy class itself.
STRATEGIES: dict[str, str | type[Strategy]] = {
    "tpe": "tritune.tuner._tpe:TPEStrategy",
    "gp": "tritune.tuner._gp:GPStrategy",
    "cmaes": "tritune.tuner._cmaes:CmaEsStrategy",
    "random": "tritune.tuner._random:RandomStrategy",
    "exhaustive": "tritune.tuner._exhaustive:ExhaustiveStrategy",
    "advisor": "tritune.tuner._advisor_seeded:AdvisorSeededStrategy",
    "cost-model": "tritune.tuner._model_guided:ModelGuidedStrategy",
    "pipeline": "tritune.tuner._pipeline:PipelineStrategy",
}

# The learned pipeline: the cost-model search with the advisor as one reweighted member of its
# ranking (``_pipeline``), measured against its parts with `tritune bench-search --strategy
# default cost-model tpe --ablation` (README, "What has been measured").
DEFAULT_STRATEGY = "pipeline"


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
