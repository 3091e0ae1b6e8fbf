"""Train + propose smoke tests on toy landscapes, checkpoint round trips, the leave-one-out eval."""

from __future__ import annotations

import pytest
import torch
from tritune.llm_advisor import (
    TensorLM,
    TLMAdvisor,
    TrainOptions,
    evaluate,
    geomean,
    landscape_problem,
    naive_transfer,
)
from tritune.llm_advisor._corpus import group_records, quality_words
from tritune.llm_advisor._options import CorpusOptions
from tritune.search_space import config_key


def test_quality_bands_follow_rank(toy_landscapes):
    (group,) = group_records(toy_landscapes[0].records())
    words = quality_words(group, CorpusOptions(quality_cuts=(0.1, 0.5)))
    ok = [w for w in words if w[1] != "q=fail"]
    assert ok[0][1] == "q=0" and ok[0][2] == 1.0  # the optimum: best band, full weight
    assert [w[1] for w in ok] == sorted(w[1] for w in ok)  # bands never improve as time grows
    assert {w[1] for w in ok} == {"q=0", "q=1", "q=2"}
    assert sum(w[1] == "q=fail" for w in words) == sum(t is None for _, t in group.measured)


def test_train_propose_and_round_trip(tiny_lm, toy_landscapes, tmp_path):
    target = next(land for land in toy_landscapes if land.name.endswith("W6600"))  # unseen in training
    advisor = TLMAdvisor(tiny_lm)
    props = advisor.propose(target.hardware, target.kernel, landscape_problem(target), target.space, 8)
    assert len(props) == 8 and len({config_key(p.config) for p in props}) == 8
    assert all(target.lookup(p.config) is not None for p in props)  # valid = present in the recording
    assert tiny_lm.meta["training"]["finetune_loss"] < tiny_lm.meta["training"]["pretrain_loss"]
    tiny_lm.save(tmp_path / "ckpt")
    again = TLMAdvisor(TensorLM.load(tmp_path / "ckpt"))
    props2 = again.propose(target.hardware, target.kernel, landscape_problem(target), target.space, 8)
    assert [p.config for p in props2] == [p.config for p in props]
    assert [p.score for p in props2] == pytest.approx([p.score for p in props], abs=1e-4)


def test_trained_model_beats_chance_on_an_unseen_device(tiny_lm, toy_landscapes):
    """The toy optimum moves with SM count; W6600 (28 SMs) resembles A4000 (48) in training."""
    target = next(land for land in toy_landscapes if land.name.endswith("W6600"))
    props = TLMAdvisor(tiny_lm).propose(target.hardware, target.kernel, landscape_problem(target), target.space, 5)
    best = max(target.fraction_of_optimum(target.lookup(p.config).time_ms) for p in props)
    times = sorted(e.time_ms for e in target if e.time_ms is not None)
    median_fraction = target.optimum_ms / times[len(times) // 2]
    assert best > median_fraction


def test_leave_one_out_eval_reports_every_target(toy_landscapes):
    results = evaluate(toy_landscapes, k=5, options=TrainOptions(n_embd=16, n_layer=1, pretrain_steps=5, finetune_steps=10),
                       targets=[toy_landscapes[0].name, toy_landscapes[1].name])
    assert [r.target for r in results] == [toy_landscapes[0].name, toy_landscapes[1].name]
    for r in results:
        assert 0 < r.top10_fraction <= 1 and r.first_fraction <= r.top10_fraction
        assert len(r.fractions) == 5 and r.train_files == len(toy_landscapes) - 1
    assert geomean([1.0, 0.25]) == pytest.approx(0.5) and geomean([0.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="at least two"):
        evaluate(toy_landscapes[:1])


def test_naive_transfer_reproduces_the_readme(kernel_tuner_cache):
    """The baseline next to which the eval reports: README's convolution A4000 top1 is 0.985."""
    from tritune.search_space import load_landscapes

    lands = load_landscapes([f"{kernel_tuner_cache}/convolution_milo"])
    target = next(land for land in lands if land.name.endswith("A4000"))
    best = naive_transfer(target, [land for land in lands if land is not target], 10)
    fractions = [target.fraction_of_optimum(target.lookup(c).time_ms) for c in best]
    assert fractions[0] == pytest.approx(0.985, abs=0.002)
    assert max(fractions) == pytest.approx(0.987, abs=0.002)


def test_measurements_reweight_device_hypotheses(tiny_lm, toy_landscapes, monkeypatch):
    """With measurements of the target, the hypothesis whose expected bands order them best wins."""
    target = next(land for land in toy_landscapes if land.name.endswith("W6600"))
    advisor = TLMAdvisor(tiny_lm)
    ok = [e for e in target if e.time_ms is not None]
    measured = [(dict(e.values), e.time_ms) for e in ok[:6]]
    truth = {config_key(c): -t for c, t in measured}
    inverse = {config_key(c): t for c, t in measured}
    a4000 = next(land.hardware for land in toy_landscapes if land.name.endswith("A4000"))
    like_a4000 = list(advisor_context(a4000, target))

    def fake_expected(context, ids):
        # "like A4000" orders the measured configs exactly right, every other hypothesis backwards.
        keys = [_key_of(advisor, target, row) for row in ids]
        table = truth if list(context) == like_a4000 else inverse
        return torch.tensor([table.get(k, 0.0) for k in keys])

    monkeypatch.setattr(advisor, "expected", fake_expected)
    props = advisor.propose(target.hardware, target.kernel, landscape_problem(target), target.space, 3, measured=measured)
    assert max(advisor.last_weights, key=advisor.last_weights.get) == "like NVIDIA RTX A4000"
    assert advisor.last_weights["like NVIDIA RTX A4000"] > 0.9
    assert not {config_key(p.config) for p in props} & set(truth)  # measured configs are never re-proposed
    # Fewer than min_evidence successes: no conditioning.
    advisor.propose(target.hardware, target.kernel, landscape_problem(target), target.space, 3, measured=measured[:2])
    assert advisor.last_weights == {}


def advisor_context(hw, target):
    from tritune.llm_advisor import sentence

    return sentence(hw, target.kernel, landscape_problem(target), None, target.space.names).context


def _key_of(advisor, target, row):
    words = advisor.lm.vocab.decode(list(row))
    return config_key(advisor.lm.vocab.parse_config(words, target.space))


def test_finetune_steps_scale_with_the_problems():
    assert TrainOptions().resolved(5).finetune_steps == 5000
    assert TrainOptions().resolved(1).finetune_steps == 2000
    assert TrainOptions().resolved(500).finetune_steps == 20000
    assert TrainOptions(finetune_steps=7).resolved(12).finetune_steps == 7


def test_eval_reports_the_cost_model_baseline_with_the_same_portfolio(toy_landscapes):
    from tritune.cost_model import GBTCostModel
    from tritune.llm_advisor._eval import cost_model_portfolio

    target, others = toy_landscapes[0], toy_landscapes[1:]
    records = [r for land in others if land.kernel == target.kernel for r in land.records()]
    picks = cost_model_portfolio(target, records, k=5)
    keys = {tuple(sorted(c.items())) for c in picks}
    assert len(picks) == len(keys) == 5 and all(target.space.is_valid(c) for c in picks)
    configs = target.space.enumerate()
    scores = GBTCostModel().fit(records).predict(target.hardware, target.kernel, dict(target.spec) if target.spec
                                                 else {"problem_size": target.problem_size}, target.space, configs)
    best = min(range(len(configs)), key=lambda i: (scores[i], i))
    assert picks[0] == configs[best]  # the portfolio starts at the model's best prediction
    results = evaluate(toy_landscapes, k=3, options=TrainOptions(n_embd=16, n_layer=1, pretrain_steps=5, finetune_steps=10),
                       targets=[target.name], cost_model_baseline=True)
    assert 0 < results[0].cost_model_top10_fraction <= 1
