"""The model: leave-one-GPU-out beats random ranking, similarity weights, online updates, errors."""

import numpy as np
import pytest
from tritune.cost_model import GBTCostModel, evaluate_logo, pairwise_accuracy
from tritune.cost_model._model import group_targets
from tritune.search_space import Hardware, TuningRecord
from tritune.tuner._bench import random_expectation

SMALL = {"max_iter": 30, "max_records_per_group": 600}


def problem_of(landscape):
    return {"problem_size": landscape.problem_size}


def test_group_targets_rank_within_a_problem():
    y = group_targets([3.0, 1.0, None, 2.0, None])
    assert y[1] < y[3] < y[0] < y[2]
    assert y[2] == y[4] == pytest.approx(np.log(4.5 / 5))  # failed configs tie at the bottom (mean rank)


def test_leave_one_gpu_out_on_a_subset_beats_random(conv_landscapes):
    subset = [conv_landscapes[i] for i in (0, 1, 3, 4)]  # A100, A4000, MI250X, W6600
    result = evaluate_logo(subset, lambda: GBTCostModel(**SMALL))
    assert [r["file"] for r in result["results"]] == [ls.name for ls in subset]
    for r, ls in zip(result["results"], subset, strict=True):
        assert ls.name not in r["train_files"] and len(r["train_files"]) == 3
        assert r["pairwise_accuracy"] > 0.6, r
        assert set(r["naive_transfer"]) == {"pairwise_accuracy", "peak@1", "peak@5"}
    mean = result["mean"]
    # Random ranking: pairwise accuracy 0.5 and peak@5 = expected best of 5 random configs.
    random_peak5 = np.mean([random_expectation(ls, 5) for ls in subset])
    assert mean["pairwise_accuracy"] > 0.7
    assert mean["peak@5"] > random_peak5 + 0.2


def test_members_of_the_same_vendor_get_the_weight(conv_landscapes):
    mi250x = conv_landscapes[3]
    model = GBTCostModel(**SMALL).fit([r for ls in conv_landscapes if ls is not mi250x for r in ls.records()])
    weights = model.prior_weights(mi250x.hardware, mi250x.kernel)
    assert set(weights) == {ls.hardware.name for ls in conv_landscapes if ls is not mi250x}
    assert sum(w for name, w in weights.items() if name.startswith("AMD")) > 0.5
    assert sum(weights.values()) == pytest.approx(1.0)


def test_update_with_target_measurements_improves_the_ranking(conv_landscapes):
    a100, others = conv_landscapes[0], conv_landscapes[1:]
    model = GBTCostModel(**SMALL).fit([r for ls in others for r in ls.records()])
    entries = list(a100)
    rng = np.random.default_rng(1)
    told = set(rng.choice(len(entries), 60, replace=False).tolist())
    rest = [e for i, e in enumerate(entries) if i not in told]
    times = np.array([np.inf if e.time_ms is None else e.time_ms for e in rest])
    args = (a100.hardware, a100.kernel, problem_of(a100), a100.space)
    before = pairwise_accuracy(times, model.predict(*args, [e.values for e in rest]))
    model.update(*args, [entries[i].values for i in sorted(told)], [entries[i].time_ms for i in sorted(told)])
    scores, weights = model.explain(*args, [e.values for e in rest])
    assert "target" in weights and weights["target"] > 0
    after = pairwise_accuracy(times, scores)
    assert after > before
    model.forget(a100.hardware, a100.kernel, problem_of(a100))
    assert "target" not in model.explain(*args, [e.values for e in rest])[1]


def test_a_ranking_does_not_depend_on_what_was_ranked_before(conv_landscapes):
    # The target member's feature scaling comes from the list it ranks: ranking another list
    # between two rankings of a pool (an explain() for a summary) must not change the pool's order.
    a100, others = conv_landscapes[0], conv_landscapes[1:]
    model = GBTCostModel(**SMALL).fit([r for ls in others for r in ls.records()])
    entries = list(a100)
    args = (a100.hardware, a100.kernel, problem_of(a100), a100.space)
    pool = [e.values for e in entries[200:1200]]
    model.update(*args, [e.values for e in entries[:12]], [e.time_ms for e in entries[:12]])
    alone = model.fresh()
    alone.update(*args, [e.values for e in entries[:12]], [e.time_ms for e in entries[:12]])
    expected = alone.predict(*args, pool)
    model.predict(*args, [e.values for e in entries[1200:1300]])
    np.testing.assert_array_equal(model.predict(*args, pool), expected)


def test_a_repeated_measurement_is_ignored():
    hw = Hardware.from_spec("A100")
    model = GBTCostModel()
    cfgs = [{"w": 1}, {"w": 1}]
    model.update(hw, "toy", {}, None, cfgs, [1.0, 5.0])
    assert model._targets[next(iter(model._targets))].times == [1.0]


def test_target_only_model_learns_from_measurements():
    hw = Hardware.from_spec("A100")
    model = GBTCostModel()
    with pytest.raises(ValueError, match="no data for kernel 'toy'"):
        model.predict(hw, "toy", {}, None, [{"w": 1}])
    cfgs = [{"w": w} for w in (1, 2, 4, 8, 16, 32)]
    model.update(hw, "toy", {}, None, cfgs, [float(w) for w in (1, 2, 4, 8, 16, 32)])  # smaller w is faster
    scores = model.predict(hw, "toy", {}, None, [{"w": 3}, {"w": 24}, {"w": 1}])
    assert scores[2] < scores[1] and scores[0] < scores[1]


def test_errors_name_the_problem(conv_landscapes):
    with pytest.raises(ValueError, match="no training records"):
        GBTCostModel().fit([])
    hw = Hardware.from_spec("A100")
    only_failed = [TuningRecord(hw, "toy", {}, {"w": w}, None, "failed", "g") for w in (1, 2)]
    with pytest.raises(ValueError, match="no problem has two or more measurements"):
        GBTCostModel().fit(only_failed)
    model = GBTCostModel(**SMALL).fit(conv_landscapes[1].records())
    with pytest.raises(ValueError, match="trained on: convolution_kernel"):
        model.predict(hw, "dedispersion_kernel", {}, None, [{"w": 1}])


def test_pooled_baseline_ranks_too(conv_landscapes):
    from tritune.cost_model import PooledGBTCostModel

    a4000 = conv_landscapes[1]
    model = PooledGBTCostModel(max_iter=20).fit([r for ls in conv_landscapes[2:5] for r in ls.records()][::4])
    entries = list(a4000)
    scores = model.predict(a4000.hardware, a4000.kernel, problem_of(a4000), a4000.space, [e.values for e in entries])
    times = np.array([np.inf if e.time_ms is None else e.time_ms for e in entries])
    assert scores.shape == (len(entries),) and pairwise_accuracy(times, scores) > 0.6
