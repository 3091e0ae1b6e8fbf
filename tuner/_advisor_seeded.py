"""Advisor-seeded search: the advisor's top-k configs are measured first, then a base strategy.

The base strategy (the cost-model-guided one when it is registered, else Optuna TPE) is built
with the advisor's proposals as its ``context.seeds``, so it measures them first and every
result, the seeds' included, lands in its own history: nothing measured is lost to it.

Where the advisor comes from (``context.options``):
- ``advisor``: an ``Advisor`` instance (tests, a ``PromptAdvisor``);
- ``advisor_checkpoint``: a checkpoint directory;
- otherwise, when ``context.train_records`` hold measurements (leave-one-out records in
  ``bench-search``, the database in ``tune``), a model trained from scratch on them, cached by
  the records' fingerprint in memory and under ``$TRITUNE_CACHE_DIR/advisor/``;
- otherwise the checkpoint shipped with the package.
Other options: ``advisor_k`` (seeds, default 10), ``advisor_base`` (base strategy name),
``advisor_train`` (a dict of ``TrainOptions`` fields when training here).
An advisor that fails never stops the search: the base strategy then runs unseeded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tritune.search_space import SearchSpace, TuningRecord, Value, config_key
from tritune.tuner._backend import MeasureResult
from tritune.tuner._strategy import Strategy, StrategyContext

log = logging.getLogger(__name__)

_TRAINED: dict[str, Any] = {}  # records fingerprint -> TLMAdvisor, for repeated runs in one process


class AdvisorSeededStrategy(Strategy):
    """Measures the advisor's top-k first, then continues with a base strategy (see module doc)."""

    name: ClassVar[str] = "advisor"
    learns: ClassVar[bool] = True

    def __init__(self, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> None:
        super().__init__(space, context, seed=seed)
        self.k = int(context.options.get("advisor_k", 10))
        self.base_name = str(context.options.get("advisor_base") or default_base())
        self.proposals: list[dict[str, Value]] = []
        self._base: Strategy | None = None
        self._known: dict[str, MeasureResult] = {}

    # --- ask/tell ----------------------------------------------------------------------------
    @property
    def base(self) -> Strategy:
        if self._base is None:
            self.proposals = self._propose()
            seeds = list({config_key(c): dict(c) for c in [*self.proposals, *self.context.seeds]}.values())
            context = dataclasses.replace(self.context, seeds=tuple(seeds))
            self._base = make_base(self.base_name, self.space, context, self.seed)
        return self._base

    def ask(self) -> dict[str, Value] | None:
        base = self.base
        for _ in range(10_000):
            config = base.ask()
            if config is None:
                return None
            known = self._known.get(config_key(config))
            if known is None:
                return config
            base.tell(config, known)  # a repeat: the base learns the known result, nothing is measured
        return None

    def tell(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        self._known[config_key(config)] = result
        self.base.tell(config, result)

    def observe(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        self._known[config_key(config)] = result
        observe = getattr(self.base, "observe", None)
        if observe is not None:
            observe(config, result)

    # --- the advisor -------------------------------------------------------------------------
    def _propose(self) -> list[dict[str, Value]]:
        if self.k <= 0:
            return []
        try:
            advisor = self.advisor()
            found = advisor.propose(self.context.hardware, self.context.kernel, self.context.problem, self.space,
                                    self.k)
        except Exception as exc:  # noqa: BLE001 -- a broken advisor must not stop the search
            log.warning("advisor failed (%s: %s); searching without seeds", type(exc).__name__, exc)
            return []
        return [dict(p.config) for p in found if self.space.is_valid(p.config)]

    def advisor(self) -> Any:
        opts = self.context.options
        if opts.get("advisor") is not None:
            return opts["advisor"]
        from tritune.llm_advisor import TLMAdvisor

        if opts.get("advisor_checkpoint"):
            return TLMAdvisor.load(opts["advisor_checkpoint"])
        records = [r for r in self.context.train_records if r.kernel == self.context.kernel]
        if records:
            return trained_advisor(records, options=opts.get("advisor_train"))
        return TLMAdvisor.load()


def trained_advisor(records: Sequence[TuningRecord], *, options: Mapping[str, Any] | None = None) -> Any:
    """A TLMAdvisor trained on ``records``, cached in memory and on disk by their fingerprint."""
    from tritune.llm_advisor import TensorLM, TLMAdvisor, TrainOptions, train

    train_options = TrainOptions(**dict(options or {}))
    key = fingerprint(records, train_options)
    if key in _TRAINED:
        return _TRAINED[key]
    cache = Path(os.environ.get("TRITUNE_CACHE_DIR") or Path.home() / ".cache" / "tritune") / "advisor" / key
    lm = None
    if (cache / "model.safetensors").exists():
        try:
            lm = TensorLM.load(cache)
        except (OSError, ValueError) as exc:
            log.warning("advisor cache %s unreadable (%s); retraining", cache, exc)
    if lm is None:
        log.info("training the advisor on %d records (cached as %s)", len(records), cache)
        lm = train(records, options=train_options)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=cache.parent))
            lm.save(tmp)
            tmp.replace(cache)  # atomic: a concurrent reader never sees half a checkpoint
        except OSError as exc:
            log.warning("could not cache the advisor in %s: %s", cache, exc)
    _TRAINED[key] = TLMAdvisor(lm)
    return _TRAINED[key]


def fingerprint(records: Sequence[TuningRecord], options: Any) -> str:
    """Stable hash of the records and the training options (the cache key of a trained advisor)."""
    h = hashlib.sha256(repr(dataclasses.asdict(options)).encode())
    for r in sorted(records, key=lambda r: (r.group, config_key(r.config))):
        h.update(f"{r.group}|{config_key(r.config)}|{r.time_ms}|{r.status}\n".encode())
    return h.hexdigest()[:20]


# --- base strategies -------------------------------------------------------------------------
_PREFERRED_BASES = ("cost-model", "tpe")


def _registry() -> Any | None:
    try:
        return importlib.import_module("tritune.tuner._strategies")
    except ModuleNotFoundError:
        return None


def default_base() -> str:
    registry = _registry()
    if registry is not None:
        for name in _PREFERRED_BASES:
            if name in registry.STRATEGIES:
                return name
    return "tpe"


def make_base(name: str, space: SearchSpace, context: StrategyContext, seed: int) -> Strategy:
    if name == AdvisorSeededStrategy.name:
        raise ValueError("advisor_base='advisor' would seed itself; choose e.g. 'tpe' or 'cost-model'")
    registry = _registry()
    if registry is not None:
        return registry.make_strategy(name, space, context, seed=seed)
    if name != "tpe":
        raise ValueError(f"base strategy {name!r} is not available here; only 'tpe' is")
    return _SeededTPE(space, context, seed=seed)


class _SeededTPE(Strategy):
    """Optuna TPE with the seeds enqueued; used only where the strategy registry is absent."""

    name: ClassVar[str] = "tpe"

    def __init__(self, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> None:
        super().__init__(space, context, seed=seed)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._dists = {p.name: optuna.distributions.CategoricalDistribution(p.values) for p in space.params}
        self._study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True))
        for c in context.seeds:
            self._study.enqueue_trial(dict(c), skip_if_exists=True)
        self._trials: dict[str, Any] = {}
        self._worst = 0.0

    def ask(self) -> dict[str, Value] | None:
        import math

        for _ in range(1000):
            trial = self._study.ask(self._dists)
            config = {n: trial.params[n] for n in self.space.names}
            if self.space.is_valid(config):
                self._trials[config_key(config)] = trial
                return config
            # Invalid: told as a bad value at no cost, so TPE moves away from it.
            self._study.tell(trial, self._worst + math.log(2))
        return None

    def tell(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        import math

        trial = self._trials.pop(config_key(config))
        value = math.log(result.time_ms) if result.ok and result.time_ms else None
        if value is not None:
            self._worst = max(self._worst, value)
        self._study.tell(trial, value if value is not None else self._worst + math.log(2))
