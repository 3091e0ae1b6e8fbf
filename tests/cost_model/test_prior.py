"""Outside opinions as members of the cost model (``set_prior``): judged by the target's measurements."""

import numpy as np
import pytest
from tritune.cost_model import GBTCostModel
from tritune.search_space import Hardware, Param, SearchSpace

HW = Hardware.from_spec("A100", "any")
PROBLEM = {"n": 1}


def _space():
    return SearchSpace("toy", (Param("a", tuple(range(8))), Param("b", tuple(range(8)))))


def _time(c):
    return 1.0 + (c["a"] - 5) ** 2 + 0.5 * (c["b"] - 2) ** 2


def _good(configs):  # log-quantile-like scores, lower = faster: the true order
    return np.log(np.array([_time(c) for c in configs]))


def _bad(configs):  # the reverse order
    return -_good(configs)


def test_a_prior_ranks_a_kernel_the_model_has_no_data_on():
    space = _space()
    pool = space.enumerate()
    model = GBTCostModel()
    with pytest.raises(ValueError, match="no data for kernel"):
        model.predict(HW, "toy", PROBLEM, space, pool)
    model.set_prior(HW, "toy", PROBLEM, "advisor", _good)
    scores = model.predict(HW, "toy", PROBLEM, space, pool)
    assert pool[int(np.argmin(scores))] == {"a": 5, "b": 2}


def test_measurements_reweight_a_prior_by_how_well_it_orders_them():
    space = _space()
    pool = space.enumerate()
    model = GBTCostModel()
    model.set_prior(HW, "toy", PROBLEM, "good", _good)
    model.set_prior(HW, "toy", PROBLEM, "bad", _bad)
    _, weights = model.explain(HW, "toy", PROBLEM, space, pool)
    assert weights["good"] == pytest.approx(weights["bad"])  # no evidence yet: equal shares
    measured = pool[::9][:6]
    model.update(HW, "toy", PROBLEM, space, measured, [_time(c) for c in measured])
    _, weights = model.explain(HW, "toy", PROBLEM, space, pool)
    assert weights["good"] > 10 * weights["bad"]


def test_set_prior_replaces_by_name_and_fresh_drops_it():
    space = _space()
    pool = space.enumerate()
    model = GBTCostModel()
    model.set_prior(HW, "toy", PROBLEM, "advisor", _bad)
    model.set_prior(HW, "toy", PROBLEM, "advisor", _good)
    _, weights = model.explain(HW, "toy", PROBLEM, space, pool)
    assert list(weights) == ["advisor"]
    assert pool[int(np.argmin(model.predict(HW, "toy", PROBLEM, space, pool)))] == {"a": 5, "b": 2}
    with pytest.raises(ValueError):
        model.fresh().predict(HW, "toy", PROBLEM, space, pool)


def test_share_must_be_positive_and_scores_match_configs():
    space = _space()
    model = GBTCostModel()
    with pytest.raises(ValueError, match="share"):
        model.set_prior(HW, "toy", PROBLEM, "advisor", _good, share=0.0)
    model.set_prior(HW, "toy", PROBLEM, "advisor", lambda cs: np.zeros(len(cs) + 1))
    with pytest.raises(ValueError, match="returned"):
        model.predict(HW, "toy", PROBLEM, space, space.enumerate())
