"""Advisor-seeded search: the advisor's proposals are measured first, then a base strategy.

1. The advisor's top ``advisor_k`` configs (default 4, a portfolio across regions: see
   ``TLMAdvisor.diverse_top``) are the base strategy's ``context.seeds``: it measures them first
   and their results land in its own history.
2. Then ``advisor_rounds`` rounds (default 0) of ``advisor_round_k`` configs the advisor proposes
   *knowing* the measurements so far (an advisor conditions on ``measured``: ours re-weights its
   hypotheses about which known device the target behaves like). The base strategy learns
   their results through ``observe``.
3. Then the base strategy alone: the cost-model-guided one when it is registered, else TPE.
Nothing is measured twice; every result reaches the base strategy.

Why so few forced proposals: the advisor only transfers what the training devices did, while the
cost-model search also fits the target's own measurements and explores away from them; on a
target unlike every training device the transferred proposals all miss together. Leave-one-GPU-out
(bench-search, 5 repeats) the former default, 8 seeds plus 2 conditioned rounds of 4 from the top
16 of the ranking, reached 0.938 / 0.985 at 20 evaluations on convolution / dedispersion (A100
convolution: its 16 proposals all sat in one region, use_shmem=0 with tile_size_y=4, varying
read_only, which taught the target member "read_only=1 is slow" while the optimum region uses it
with shared memory, and left the base no diverse picks); 4 seeds from the top 5% and no rounds,
with the base's diverse picks counted on its own picks, 0.968 / 0.993 (A100: 0.673 -> 0.844).

Where the advisor comes from (``context.options``):
- ``advisor``: an ``Advisor`` instance (tests, a ``PromptAdvisor``);
- ``advisor_checkpoint``: a checkpoint directory;
- otherwise, when ``context.train_records`` hold measurements of this kernel (leave-one-out
  records in ``bench-search``, the database in ``tune``), a model trained from scratch on them,
  cached by the records' fingerprint in memory and under ``$TRITUNE_CACHE_DIR/advisor/``;
- otherwise the checkpoint shipped with the package.
Other options: ``advisor_base`` (base strategy name), ``advisor_train`` (a dict of
``TrainOptions`` fields when training here). An advisor that fails never stops the search: the
base strategy then runs on without it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tritune.search_space import SearchSpace, TuningRecord, Value, config_key
from tritune.tuner._backend import MeasureResult
from tritune.tuner._strategy import Strategy, StrategyContext

log = logging.getLogger(__name__)

_TRAINED: dict[str, Any] = {}  # records fingerprint or "checkpoint:PATH" -> TLMAdvisor, reused in one process


class AdvisorSeededStrategy(Strategy):
    """Measures the advisor's top-k first, then continues with a base strategy (see module doc)."""

    name: ClassVar[str] = "advisor"
    learns: ClassVar[bool] = True

    def __init__(self, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> None:
        super().__init__(space, context, seed=seed)
        opts = context.options
        self.k = int(opts.get("advisor_k", 4))
        self.rounds = int(opts.get("advisor_rounds", 0))
        self.round_k = int(opts.get("advisor_round_k", 4))
        self.base_name = str(opts.get("advisor_base") or default_base())
        self.proposals: list[dict[str, Value]] = []  # every advisor proposal, in order
        self._base: Strategy | None = None
        self._advisor: Any = None
        self._known: dict[str, MeasureResult] = {}
        self._seeds: set[str] = set()
        self._queue: list[dict[str, Value]] = []  # conditioned proposals waiting to be asked
        self._mine: set[str] = set()  # asked by this strategy, not by the base
        self._configs: dict[str, dict[str, Value]] = {}
        self._rounds_done = 0
        self._failed = False

    # --- ask/tell ----------------------------------------------------------------------------
    @property
    def base(self) -> Strategy:
        if self._base is None:
            first = self._propose([])
            self._seeds = {config_key(c) for c in first}
            seeds = list({config_key(c): dict(c) for c in [*first, *self.context.seeds]}.values())
            context = dataclasses.replace(self.context, seeds=tuple(seeds))
            self._base = make_base(self.base_name, self.space, context, self.seed)
        return self._base

    def ask(self) -> dict[str, Value] | None:
        base = self.base
        # The rounds start once the seeds are measured (or as many configs, should the base skip some).
        seeded = self._seeds <= set(self._known) or len(self._known) >= len(self._seeds)
        if not self._queue and seeded and self._rounds_done < self.rounds:
            self._rounds_done += 1
            measured = [(self._config(key), r.time_ms if r.ok else None) for key, r in self._known.items()
                        if r.status.costs_evaluation]
            self._queue = self._propose(measured, k=self.round_k)
        while self._queue:
            config = self._queue.pop(0)
            key = config_key(config)
            if key not in self._known:
                self._mine.add(key)
                return config
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
        key = config_key(config)
        self._known[key] = result
        self._configs[key] = dict(config)
        if key in self._mine:
            self._observe_base(config, result)
        else:
            self.base.tell(config, result)

    def observe(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        self._known[config_key(config)] = result
        self._configs[config_key(config)] = dict(config)
        self._observe_base(config, result)

    def _observe_base(self, config: Mapping[str, Value], result: MeasureResult) -> None:
        observe = getattr(self.base, "observe", None)
        if observe is not None:
            observe(config, result)

    def _config(self, key: str) -> dict[str, Value]:
        return self._configs[key]

    # --- the advisor -------------------------------------------------------------------------
    def _propose(self, measured: list[tuple[dict[str, Value], float | None]], k: int | None = None) -> list[dict[str, Value]]:
        k = self.k if k is None else k
        if k <= 0 or self._failed:
            return []
        try:
            if self._advisor is None:
                self._advisor = self.advisor()
            found = self._advisor.propose(self.context.hardware, self.context.kernel, self.context.problem,
                                          self.space, k, measured=measured)
        except Exception as exc:  # noqa: BLE001 -- a broken advisor must not stop the search
            log.warning("advisor failed (%s: %s); searching on without it", type(exc).__name__, exc)
            self._failed = True
            return []
        done = {config_key(c) for c, _ in measured}
        out = [dict(p.config) for p in found if self.space.is_valid(p.config) and config_key(p.config) not in done]
        self.proposals.extend(out)
        return out

    def advisor(self) -> Any:
        opts = self.context.options
        if opts.get("advisor") is not None:
            return opts["advisor"]
        from tritune.llm_advisor import TLMAdvisor

        records = [r for r in self.context.train_records if r.kernel == self.context.kernel]
        if records and not opts.get("advisor_checkpoint"):
            return trained_advisor(records, options=opts.get("advisor_train"))
        # One load per checkpoint and process: a job tunes many problems with the same advisor.
        checkpoint = str(opts.get("advisor_checkpoint") or "")
        if f"checkpoint:{checkpoint}" not in _TRAINED:
            _TRAINED[f"checkpoint:{checkpoint}"] = TLMAdvisor.load(checkpoint or None)
        return _TRAINED[f"checkpoint:{checkpoint}"]


def trained_advisor(records: Sequence[TuningRecord], *, options: Mapping[str, Any] | None = None) -> Any:
    """A TLMAdvisor trained on ``records``, cached in memory and on disk by their fingerprint
    (``llm_advisor._cache``: shared with ``tritune advisor eval``)."""
    from tritune.llm_advisor import TLMAdvisor, TrainOptions
    from tritune.llm_advisor._cache import cached_train

    train_options = TrainOptions(**dict(options or {}))
    key = fingerprint(records, train_options)
    if key not in _TRAINED:
        _TRAINED[key] = TLMAdvisor(cached_train(records, train_options))
    return _TRAINED[key]


def fingerprint(records: Sequence[TuningRecord], options: Any) -> str:
    """Stable hash of the records and the training options (the cache key of a trained advisor)."""
    from tritune.llm_advisor._cache import fingerprint as _fingerprint

    return _fingerprint(records, options)


# --- base strategies -------------------------------------------------------------------------
_PREFERRED_BASES = ("cost-model", "tpe")


def default_base() -> str:
    """The cost-model-guided strategy when it is registered, else TPE."""
    from tritune.tuner._strategies import STRATEGIES

    return next((name for name in _PREFERRED_BASES if name in STRATEGIES), "tpe")


def make_base(name: str, space: SearchSpace, context: StrategyContext, seed: int) -> Strategy:
    from tritune.tuner._strategies import make_strategy

    if name == AdvisorSeededStrategy.name:
        raise ValueError("advisor_base='advisor' would seed itself; choose e.g. 'tpe' or 'cost-model'")
    return make_strategy(name, space, context, seed=seed)
