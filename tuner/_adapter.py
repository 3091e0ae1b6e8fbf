"""Runs any ask/tell ``Strategy`` as an Optuna sampler, so ``tune`` keeps one persistent study
(trial numbers, resume, many workers) whatever proposes the configs."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from tritune.search_space import Value
from tritune.tuner._backend import MeasureResult, Status
from tritune.tuner._strategy import Strategy
from tritune.tuner._study import SpaceCodec, config_from_trial, result_from_trial


class StrategySampler(optuna.samplers.BaseSampler):
    """An Optuna sampler whose relative proposals are ``strategy.ask()``.

    Results reach the strategy through ``after_trial`` (``tell`` for its own proposals,
    ``observe`` for trials finished by other workers or earlier runs). When the strategy has
    nothing left, ``exhausted`` turns True and the driver stops asking.
    """

    def __init__(self, strategy: Strategy, codec: SpaceCodec, *, seed: int = 0) -> None:
        self.strategy = strategy
        self.codec = codec
        self.exhausted = False
        self._asked: dict[int, dict[str, Value]] = {}
        self._synced: set[int] = set()
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self.codec.distributions)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs:  # an enqueued config (seed): not the strategy's proposal
            return {}
        self._sync(study)
        config = self.strategy.ask()
        if config is None:
            self.exhausted = True
            return {}
        self._asked[trial.number] = dict(config)
        return self.codec.encode(config)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        config = self._asked.pop(trial.number, None)
        self._synced.add(trial.number)
        if config is None:
            return
        result = result_from_trial(trial)
        if result is None:  # told without our attributes (e.g. a FAIL for a busy config)
            result = MeasureResult(Status.FAILED, error="not measured: another worker had it in flight")
        self.strategy.tell(config, result)

    def _sync(self, study: optuna.Study) -> None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number in self._synced:
                continue
            self._synced.add(t.number)
            config, result = config_from_trial(t), result_from_trial(t)
            if config is not None and result is not None and t.number not in self._asked:
                self.strategy.observe(config, result)
