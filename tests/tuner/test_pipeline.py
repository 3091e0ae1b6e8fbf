"""The learned pipeline (the default strategy) on replayed landscapes, with stand-in advisors."""

import math

import pytest
from tritune.llm_advisor import Advisor, Proposal
from tritune.search_space import config_key
from tritune.tuner import bench_search, get_strategy, run_strategy
from tritune.tuner._bench import ABLATION_LABEL
from tritune.tuner._pipeline import PipelineStrategy
from tritune.tuner._strategy import StrategyContext


class Oracle(Advisor):
    """Knows the landscape: scores are -ln(time) (higher = faster), proposals the fastest configs."""

    def __init__(self, landscape, *, scores=True):
        self.land, self.scores, self.scored = landscape, scores, 0

    def _speed(self, c):
        e = self.land.lookup(c)
        return -math.log(e.time_ms) if e is not None and e.time_ms else -10.0

    def score(self, hardware, kernel, problem, space, configs, *, measured=()):
        if not self.scores:
            return None
        self.scored += len(configs)
        return [self._speed(c) for c in configs]

    def propose(self, hardware, kernel, problem, space, k, *, measured=()):
        done = {config_key(c) for c, _ in measured}
        ranked = sorted((c for c in space if config_key(c) not in done), key=self._speed, reverse=True)
        return [Proposal(c, self._speed(c)) for c in ranked[:k]]


class Broken(Advisor):
    def score(self, *args, **kwargs):
        raise RuntimeError("no model")

    def propose(self, *args, **kwargs):
        raise RuntimeError("no model")


def _strategy(land, options):
    context = StrategyContext(hardware=land.hardware, kernel=land.kernel, problem={"n": 1},
                              options={"leave_one_out": True, **options})
    return PipelineStrategy(land.space, context, seed=0)


def test_is_the_default_and_learns():
    assert get_strategy("default") is PipelineStrategy and PipelineStrategy.learns


def test_a_scoring_advisor_joins_the_ranking_and_finds_the_optimum_first(small_landscape):
    oracle = Oracle(small_landscape)
    strat = _strategy(small_landscape, {"advisor": oracle})
    assert strat.advisor_role == "prior" and "advisor as a ranking member" in strat.describe()
    run = run_strategy(small_landscape, "default", 3, options={"advisor": oracle})
    assert run.strategy == "default" and run.fraction_at(1) == 1.0
    assert oracle.scored > 0


def test_without_a_speed_opinion_the_proposals_become_seeds(small_landscape):
    oracle = Oracle(small_landscape, scores=False)
    strat = _strategy(small_landscape, {"advisor": oracle, "advisor_k": 2})
    assert strat.advisor_role == "seeds"
    first = strat.ask()
    assert small_landscape.lookup(first).time_ms == small_landscape.optimum_ms


def test_a_broken_advisor_or_none_leaves_a_sound_search(small_landscape):
    for options in ({"advisor": Broken()}, {"advisor_off": True}, {}):  # {}: leave-one-out, no records
        run = run_strategy(small_landscape, "default", 12, options=options)
        assert len(run.best_curve) == 12 and run.fraction_at(12) > 0.5, options
    assert _strategy(small_landscape, {"advisor_off": True}).describe().endswith("no advisor (ablation)")
    assert _strategy(small_landscape, {}).advisor is None  # nothing learned may be used leave-one-out


def test_reconditioning_replaces_the_advisor_member(small_landscape):
    oracle = Oracle(small_landscape)
    strat = _strategy(small_landscape, {"advisor": oracle, "advisor_recondition": [3]})
    run_pairs = []
    for _ in range(5):
        config = strat.ask()
        entry = small_landscape.lookup(config)
        from tritune.tuner._backend import MeasureResult, Status

        result = (MeasureResult(Status.OK, time_ms=entry.time_ms) if entry and entry.time_ms
                  else MeasureResult(Status.FAILED, error="failed"))
        strat.tell(config, result)
        run_pairs.append(config_key(config))
    assert strat._conditioned_at == {3} and len(set(run_pairs)) == 5


def test_share_must_be_positive(small_landscape):
    with pytest.raises(ValueError, match="advisor_share"):
        _strategy(small_landscape, {"advisor": Oracle(small_landscape), "advisor_share": 0})


def test_ablation_runs_both_arms_with_the_same_seeds(small_landscape):
    report = bench_search([small_landscape], ["random"], budgets=[2, 5], repeats=2, ablation=True,
                          options={"advisor": Oracle(small_landscape)})
    labels = {r.strategy for r in report.runs}
    assert labels == {"default", ABLATION_LABEL, "random"}
    rows = {r["budget"]: r for r in report.ablation()}
    assert rows[2]["with_advisor"] == 1.0 and rows[2]["without_advisor"] <= 1.0
    r = rows[2]
    assert r["advisor_share_of_gain"] == pytest.approx(
        (r["with_advisor"] - r["without_advisor"]) / (r["with_advisor"] - r["random_expected_fraction"]))
    assert report.to_json()["ablation"] == report.ablation()
