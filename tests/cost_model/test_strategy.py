"""The model-guided strategy on replayed landscapes (bench-search's loop, no GPU)."""

import pytest
from tritune.cost_model import GBTCostModel
from tritune.search_space import config_key
from tritune.tuner import _model_guided
from tritune.tuner._backend import MeasureResult, Status
from tritune.tuner._bench import random_expectation, run_strategy
from tritune.tuner._strategies import get_strategy
from tritune.tuner._strategy import StrategyContext

SMALL = {"max_iter": 30, "max_records_per_group": 800}


@pytest.fixture(scope="module")
def conv_model(conv_landscapes):
    """Trained on every convolution GPU but A4000 (the target below)."""
    return GBTCostModel(**SMALL).fit([r for ls in conv_landscapes if ls.name != "convolution_milo/A4000"
                                      for r in ls.records()])


def test_registered_and_learning():
    cls = get_strategy("cost-model")
    assert cls is _model_guided.ModelGuidedStrategy and cls.learns


def test_finds_a_near_optimum_fast_on_an_unseen_gpu(conv_landscapes, conv_model):
    a4000 = conv_landscapes[1]
    run = run_strategy(a4000, "cost-model", 20, seed=0, options={"cost_model": conv_model})
    assert len(run.best_curve) == 20
    assert run.fraction_at(20) >= 0.95
    assert run.fraction_at(20) > random_expectation(a4000, 20) + 0.2


def test_fits_on_the_training_records_it_is_given(conv_landscapes):
    w6600 = conv_landscapes[4]
    train = [r for ls in conv_landscapes if ls is not w6600 for r in ls.records()][::6]
    _model_guided._FITTED.clear()
    run = run_strategy(w6600, "cost-model", 10, seed=0, train_records=train)
    assert len(_model_guided._FITTED) == 1
    assert run.fraction_at(10) > random_expectation(w6600, 10)


def test_same_seed_same_sequence(conv_landscapes, conv_model):
    a100 = conv_landscapes[0]
    opts = {"cost_model": conv_model, "cost_model_explore": 0.5}
    runs = [run_strategy(a100, "cost-model", 12, seed=3, options=opts) for _ in range(2)]
    assert runs[0].best_curve == runs[1].best_curve


def test_learns_from_the_target_alone(conv_landscapes):
    mi250x = conv_landscapes[3]
    run = run_strategy(mi250x, "cost-model", 25, seed=0)  # no training records at all
    assert len(run.best_curve) == 25 and run.fraction_at(25) > 0


def test_seeds_first_and_every_config_once(conv_landscapes, conv_model):
    a6000 = conv_landscapes[2]
    entries = list(a6000)
    seed_cfg = dict(entries[123].values)
    bad_seed = {**seed_cfg, "block_size_x": 999}
    ctx = StrategyContext(hardware=a6000.hardware, kernel=a6000.kernel, problem={"problem_size": a6000.problem_size},
                          seeds=[bad_seed, seed_cfg], options={"cost_model": conv_model, "cost_model_explore": 0.3})
    strat = get_strategy("cost-model")(a6000.space, ctx, seed=0)
    seen = []
    for i in range(30):
        cfg = strat.ask()
        assert a6000.space.is_valid(cfg)
        if i == 0:
            assert cfg == seed_cfg  # the invalid seed is skipped, the valid one comes first
        entry = a6000.lookup(cfg)
        result = (MeasureResult(Status.OK, time_ms=entry.time_ms) if entry.time_ms is not None
                  else MeasureResult(Status.FAILED, error="failed"))
        strat.tell(cfg, result)
        seen.append(config_key(cfg))
    assert len(set(seen)) == 30


def test_bad_options_are_named(conv_landscapes, conv_model):
    ls = conv_landscapes[1]
    ctx = StrategyContext(hardware=ls.hardware, kernel=ls.kernel, options={"cost_model": conv_model,
                                                                            "cost_model_explore": 2})
    with pytest.raises(ValueError, match="cost_model_explore=2"):
        get_strategy("cost-model")(ls.space, ctx)
    ctx = StrategyContext(hardware=ls.hardware, kernel=ls.kernel, options={"cost_model": conv_model,
                                                                            "cost_model_diverse_until": -1})
    with pytest.raises(ValueError, match="cost_model_diverse_until=-1"):
        get_strategy("cost-model")(ls.space, ctx)


def _picks(landscape, model, n, **options):
    ctx = StrategyContext(hardware=landscape.hardware, kernel=landscape.kernel,
                          problem={"problem_size": landscape.problem_size},
                          options={"cost_model": model, "cost_model_explore": 0.0, **options})
    strat = get_strategy("cost-model")(landscape.space, ctx, seed=0)
    picks = []
    for _ in range(n):
        cfg = strat.ask()
        entry = landscape.lookup(cfg)
        strat.tell(cfg, MeasureResult(Status.OK, time_ms=entry.time_ms) if entry.time_ms is not None
                   else MeasureResult(Status.FAILED, error="failed"))
        picks.append(cfg)
    return picks


def test_diverse_picks_differ_from_everything_measured(conv_landscapes, conv_model):
    a4000 = conv_landscapes[1]
    varying = [p.name for p in a4000.space.params if len(p.values) > 1]
    picks = _picks(a4000, conv_model, 6)
    for i in (1, 3, 5):  # every other measurement among the first ten
        distance = min(sum(picks[i][k] != earlier[k] for k in varying) for earlier in picks[:i])
        assert distance >= -(-len(varying) // 3), (i, picks[i], picks[:i])
    # Off, the second pick is the model's runner-up, a near-copy of the first on this GPU.
    plain = _picks(a4000, conv_model, 2, cost_model_diverse_until=0)
    assert plain[0] == picks[0]
    assert sum(plain[1][k] != plain[0][k] for k in varying) < -(-len(varying) // 3)
