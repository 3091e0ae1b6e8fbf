"""The cost-model search after configs it did not choose: its exploration schedule is its own."""

import os

import pytest
from tritune.cost_model import GBTCostModel
from tritune.search_space import Landscape
from tritune.tuner._backend import MeasureResult, Status
from tritune.tuner._strategies import get_strategy
from tritune.tuner._strategy import StrategyContext


@pytest.fixture(scope="module")
def a4000_and_model(kernel_tuner_cache):
    folder = os.path.join(kernel_tuner_cache, "convolution_milo")
    lands = [Landscape.load(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".json.gz")]
    target = next(ls for ls in lands if ls.name.endswith("A4000"))
    model = GBTCostModel(max_iter=30, max_records_per_group=800).fit(
        [r for ls in lands if ls is not target for r in ls.records()])
    return target, model


def _result(land, config):
    entry = land.lookup(config)
    return MeasureResult(Status.OK, time_ms=entry.time_ms) if entry.time_ms is not None \
        else MeasureResult(Status.FAILED, error="failed")


@pytest.mark.parametrize("how", ["seeds", "observe"])
def test_given_configs_do_not_use_up_the_diverse_picks(a4000_and_model, how):
    land, model = a4000_and_model
    varying = [p.name for p in land.space.params if len(p.values) > 1]
    need = -(-len(varying) // 3)
    # Ten near-copies of the fastest config, as a transferred prior would propose them.
    best = min((e for e in land if e.time_ms is not None), key=lambda e: e.time_ms)
    given = [dict(e.values) for e in land if e.time_ms is not None
             and sum(e.values[k] != best.values[k] for k in varying) <= 1][:10]
    assert len(given) == 10
    ctx = StrategyContext(hardware=land.hardware, kernel=land.kernel, problem={"problem_size": land.problem_size},
                          seeds=given if how == "seeds" else (),
                          options={"cost_model": model, "cost_model_explore": 0.0})
    strat = get_strategy("cost-model")(land.space, ctx, seed=0)
    for config in given:
        if how == "seeds":
            config = strat.ask()
            strat.tell(config, _result(land, config))
        else:
            strat.observe(config, _result(land, config))
    measured = list(given)
    own = []
    for _ in range(4):
        config = strat.ask()
        own.append(min(sum(config[k] != m[k] for k in varying) for m in measured))
        measured.append(config)
        strat.tell(config, _result(land, config))
    # Its own picks alternate best-predicted and far-from-everything-measured, as without the given ten.
    assert own[1] >= need and own[3] >= need, own
