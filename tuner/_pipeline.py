"""The learned pipeline (the default strategy): the cost-model search with the advisor as a member.

What runs (``tritune tune`` with no ``--strategy``):
1. a candidate pool of valid configs is ranked by the cost model (``_model_guided``): per-device
   tree models mixed by hardware similarity, refit on the target's measurements as they arrive;
2. the language-model advisor's expected quality of every candidate joins that ranking as one
   more member of the mixture (``GBTCostModel.set_prior``): it starts at ``advisor_share`` times
   the best device member's weight and, like every member, loses weight by the share of the
   target's measured pairs it misorders. So the advisor steers where it knows the target and
   fades where it does not, instead of spending forced measurements on its own picks;
3. ``advisor_recondition``: after that many of the target's measurements (a tuple, e.g. (6, 12)),
   the advisor is asked again *knowing* them (its hypotheses about which known device the target
   behaves like are reweighted, see ``TLMAdvisor``) and its member is replaced;
4. an advisor that cannot score (a prompt advisor) or a kernel it never saw measured (grammar
   only) contributes ``advisor_k`` proposals as seeds instead: its default config first, then
   its likeliest valid configs, and the cost model explores from there (a kernel the learned
   parts have never seen still gets the cost-model search's random-then-diverse exploration).

Where the learned parts come from (``context.options``):
- ``cost_model`` / ``advisor`` (instances or a saved model path / an ``advisor_checkpoint``):
  used as given;
- ``leave_one_out`` (bench-search sets it: the shipped parts were trained on the recorded
  landscapes, the held-out one included): only ``context.train_records`` may be learned from,
  so both are trained on them (the advisor cached like the ``advisor`` strategy's), or left out;
- otherwise (``tune``): the shipped cost model and the shipped advisor checkpoint; the cost
  model is fitted on ``context.train_records`` instead when the shipped one has no data on the
  kernel (a new family tuned before on this machine).
``advisor_off`` True runs the same pipeline without the advisor (the ablation of bench-search).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from tritune.search_space import SearchSpace, Value

from ._backend import MeasureResult
from ._model_guided import ModelGuidedStrategy, fitted_model
from ._strategy import StrategyContext

log = logging.getLogger("tritune.tuner")

_SHIPPED: dict[str, Any] = {}  # "advisor" / "cost_model" -> the loaded shipped part (None: unusable)
# The advisor's scores of a target's configs before any measurement, reused by later runs on the
# same target (bench-search repeats; a resumed job): (advisor id, target) -> config key -> score.
# The advisor itself is kept with its scores, so a recycled id() never matches another advisor.
_PRIOR_SCORES: dict[tuple[int, str], tuple[Any, dict[str, float]]] = {}
_PRIOR_TARGETS_MAX = 8


class PipelineStrategy(ModelGuidedStrategy):
    """Cost-model search with the advisor's opinion as one reweighted member (see the module doc)."""

    name: ClassVar[str] = "pipeline"
    learns: ClassVar[bool] = True

    def __init__(self, space: SearchSpace, context: StrategyContext, *, seed: int = 0) -> None:
        opts = context.options
        self.advisor_share = float(opts.get("advisor_share", 1.0))
        self.advisor_k = int(opts.get("advisor_k", 4))
        self.recondition = tuple(int(n) for n in (opts.get("advisor_recondition") or ()))
        if self.advisor_share <= 0:
            raise ValueError(f"advisor_share={self.advisor_share} must be positive (advisor_off=True leaves it out)")
        self.advisor: Any = None if opts.get("advisor_off") else self._advisor(context)
        self.advisor_role = "off" if opts.get("advisor_off") else "none"
        seeds: list[dict[str, Value]] = []
        scorable = False
        if self.advisor is not None:
            scorable = self._can_score(context, space)
            if not scorable:
                seeds = self._proposals(context, space)
                self.advisor_role = "seeds" if seeds else "none"
        if seeds:
            context = _with_seeds(context, seeds)
        super().__init__(space, context, seed=seed)
        self._measured_pairs: list[tuple[dict[str, Value], float | None]] = []
        self._conditioned_at: set[int] = set()
        if scorable and hasattr(self.model, "set_prior"):
            self._set_prior([])
            self.advisor_role = "prior"
        elif scorable:
            from tritune.search_space import config_key

            self.context = _with_seeds(self.context, self._proposals(self.context, space))
            self._seeds = [dict(s) for s in self.context.seeds]
            self._seed_keys = {config_key(c) for c in self._seeds}
            self.advisor_role = "seeds"

    # --- the learned parts ---------------------------------------------------------------------
    def _model(self, given: Any) -> Any:
        from tritune.cost_model import GBTCostModel

        if given:
            return super()._model(given)
        records = [r for r in self.context.train_records if r.kernel == self.context.kernel]
        if self.context.options.get("leave_one_out"):
            return fitted_model(records) if records else GBTCostModel()
        shipped = shipped_cost_model()
        if shipped is not None and shipped.knows(self.context.kernel):
            return shipped
        return fitted_model(records) if records else (shipped if shipped is not None else GBTCostModel())

    def _advisor(self, context: StrategyContext) -> Any:
        opts = context.options
        if opts.get("advisor") is not None:
            return opts["advisor"]
        try:
            if opts.get("advisor_checkpoint"):
                from tritune.llm_advisor import TLMAdvisor

                return TLMAdvisor.load(opts["advisor_checkpoint"])
            if opts.get("leave_one_out"):
                from ._advisor_seeded import trained_advisor

                records = [r for r in context.train_records if r.kernel == context.kernel]
                return trained_advisor(records, options=opts.get("advisor_train")) if records else None
            return shipped_advisor()
        except Exception as exc:  # noqa: BLE001 -- a broken advisor must not stop the search
            log.warning("pipeline: advisor unavailable (%s: %s); searching with the cost model alone",
                        type(exc).__name__, exc)
            return None

    def _can_score(self, context: StrategyContext, space: SearchSpace) -> bool:
        try:
            probe = self.advisor.score(context.hardware, context.kernel, context.problem, space, [space.default()])
        except Exception as exc:  # noqa: BLE001
            log.warning("pipeline: advisor cannot score (%s: %s); using its proposals as seeds", type(exc).__name__, exc)
            return False
        return probe is not None

    def _proposals(self, context: StrategyContext, space: SearchSpace) -> list[dict[str, Value]]:
        if self.advisor_k <= 0:
            return []
        try:
            found = self.advisor.propose(context.hardware, context.kernel, context.problem, space, self.advisor_k)
        except Exception as exc:  # noqa: BLE001
            log.warning("pipeline: advisor failed (%s: %s); searching on without it", type(exc).__name__, exc)
            return []
        return [dict(p.config) for p in found if space.is_valid(p.config)]

    def _set_prior(self, measured: Sequence[tuple[Mapping[str, Value], float | None]]) -> None:
        ctx, space, advisor = self.context, self.space, self.advisor
        known = list(measured)
        memo: dict[str, float] | None = None
        if not known:
            import json

            target = f"{ctx.hardware.key}|{ctx.kernel}|{json.dumps(dict(ctx.problem), sort_keys=True, default=str)}"
            entry = _PRIOR_SCORES.get((id(advisor), target))
            if entry is None or entry[0] is not advisor:
                entry = _PRIOR_SCORES[(id(advisor), target)] = (advisor, {})
            memo = entry[1]
            while len(_PRIOR_SCORES) > _PRIOR_TARGETS_MAX:
                _PRIOR_SCORES.pop(next(iter(_PRIOR_SCORES)))

        def scorer(configs: Sequence[Mapping[str, Value]]) -> np.ndarray:
            from tritune.search_space import config_key

            keys = [config_key(c) for c in configs]
            todo = [i for i, k in enumerate(keys) if memo is None or k not in memo]
            got: dict[str, float] = {}
            if todo:
                values = advisor.score(ctx.hardware, ctx.kernel, ctx.problem, space, [configs[i] for i in todo],
                                       measured=known)
                got = {keys[i]: float(v) for i, v in zip(todo, values, strict=True)}
                if memo is not None:
                    memo.update(got)
            source = memo if memo is not None else got
            # Negated expected band value: lower = faster, in the members' log-quantile units.
            return -np.array([source[k] for k in keys], dtype=np.float64)

        self.model.set_prior(ctx.hardware, ctx.kernel, ctx.problem, "advisor", scorer, share=self.advisor_share)
        self._scores = None

    # --- ask/tell ------------------------------------------------------------------------------
    def _ranking(self) -> np.ndarray:
        try:
            return super()._ranking()
        except Exception as exc:  # noqa: BLE001 -- e.g. a shipped model pickled by another scikit-learn
            from tritune.cost_model import GBTCostModel

            if isinstance(self.model, GBTCostModel) and not self.model.kernels:
                raise  # already the model without training data: a real bug, not a stale file
            log.warning("pipeline: the cost model failed to rank (%s: %s); continuing with one that learns "
                        "from the target's measurements only", type(exc).__name__, exc)
            self.model = GBTCostModel()
            ctx = self.context
            for config, time_ms in self._measured_pairs:
                self.model.update(ctx.hardware, ctx.kernel, ctx.problem, self.space, [config], [time_ms])
            if self.advisor_role == "prior":
                self._set_prior([])
            self._scores = None
            return super()._ranking()

    def _learn(self, config: Mapping[str, Value], result: MeasureResult, *, given: bool = False) -> None:
        super()._learn(config, result, given=given)
        if result.status.costs_evaluation:
            self._measured_pairs.append((dict(config), result.time_ms if result.ok else None))
        n = len(self._measured_pairs)
        if self.advisor_role == "prior" and n in self.recondition and n not in self._conditioned_at:
            self._conditioned_at.add(n)
            self._set_prior(self._measured_pairs)

    def describe(self) -> str:
        """One line for summaries: what the pipeline ran with."""
        model = "cost model" if getattr(self.model, "kernels", {}).get(self.context.kernel) is not None \
            else "cost model (target measurements only)"
        advisor = {"prior": "advisor as a ranking member", "seeds": "advisor proposals as seeds",
                   "off": "no advisor (ablation)", "none": "no advisor available"}[self.advisor_role]
        return f"{model} + {advisor}"


def _with_seeds(context: StrategyContext, seeds: Sequence[Mapping[str, Value]]) -> StrategyContext:
    import dataclasses

    from tritune.search_space import config_key

    merged = list({config_key(c): dict(c) for c in [*seeds, *context.seeds]}.values())
    return dataclasses.replace(context, seeds=tuple(merged))


def shipped_cost_model() -> Any:
    """The cost model shipped with the package (loaded once per process); None when unusable."""
    if "cost_model" not in _SHIPPED:
        from tritune.cost_model import load_shipped

        _SHIPPED["cost_model"] = load_shipped()
    return _SHIPPED["cost_model"]


def shipped_advisor() -> Any:
    """The advisor checkpoint shipped with the package (loaded once per process)."""
    if "advisor" not in _SHIPPED:
        from tritune.llm_advisor import TLMAdvisor

        _SHIPPED["advisor"] = TLMAdvisor.load()
    return _SHIPPED["advisor"]
