"""Advisor-seeded search: proposals measured first, every result fed back, failures tolerated."""

from __future__ import annotations

import pytest
from tritune.llm_advisor import Advisor, Proposal, landscape_problem
from tritune.search_space import config_key
from tritune.tuner._advisor_seeded import AdvisorSeededStrategy
from tritune.tuner._backend import MeasureResult, Status
from tritune.tuner._strategy import StrategyContext


class FixedAdvisor(Advisor):
    """Proposes its configs in order, skipping measured ones; records what it was told."""

    def __init__(self, configs):
        self.configs = configs
        self.measured_seen = []

    def propose(self, hardware, kernel, problem, space, k, *, measured=()):
        self.measured_seen.append(list(measured))
        done = {config_key(c) for c, _ in measured}
        return [Proposal(c, -i) for i, c in enumerate(c for c in self.configs if config_key(c) not in done)][:k]


class BrokenAdvisor(Advisor):
    def propose(self, *args, **kwargs):
        raise RuntimeError("model file truncated")


def _measure(land, config) -> MeasureResult:
    entry = land.lookup(config)
    if entry is None:
        return MeasureResult(Status.INVALID, error="not recorded")
    if entry.time_ms is None:
        return MeasureResult(Status.FAILED, error=entry.error)
    return MeasureResult(Status.OK, time_ms=entry.time_ms)


def _run(land, options, budget=12, train_records=()):
    ctx = StrategyContext(hardware=land.hardware, kernel=land.kernel, problem=landscape_problem(land),
                          train_records=tuple(train_records), options=options)
    strat = AdvisorSeededStrategy(land.space, ctx, seed=1)
    asked = []
    while len(asked) < budget:
        config = strat.ask()
        assert config is not None
        asked.append(config)
        strat.tell(config, _measure(land, config))
    return strat, asked


def test_seeds_then_conditioned_rounds_then_base(toy_landscapes):
    land = toy_landscapes[1]
    ranked = [dict(e.values) for e in sorted((e for e in land if e.time_ms is not None), key=lambda e: e.time_ms)]
    configs = [ranked[i] for i in (5, 0, 9, 3, 7, 11, 2, 8)]
    advisor = FixedAdvisor(configs)
    strat, asked = _run(land, {"advisor": advisor, "advisor_k": 3, "advisor_rounds": 2, "advisor_round_k": 2,
                               "advisor_base": "tpe"}, budget=12)
    assert asked[:7] == configs[:7] and strat.proposals == configs[:7]
    # Round r is proposed knowing every measurement before it, with its time.
    assert [len(m) for m in advisor.measured_seen] == [0, 3, 5]
    assert advisor.measured_seen[1][0] == (configs[0], land.lookup(configs[0]).time_ms)
    keys = [config_key(c) for c in asked]
    assert len(set(keys)) == len(keys)  # nothing measured twice
    assert strat.base_name == "tpe"
    # The base strategy learnt all 12 results: the seeds it asked and the rounds it observed.
    assert len(strat.base.driver.study.trials) >= 12


def test_broken_advisor_does_not_stop_the_search(toy_landscapes, caplog):
    land = toy_landscapes[0]
    strat, asked = _run(land, {"advisor": BrokenAdvisor(), "advisor_base": "tpe"}, budget=12)
    assert len(asked) == 12 and strat.proposals == []
    assert "model file truncated" in caplog.text


def test_trains_on_leave_one_out_records_and_caches(toy_landscapes, tmp_path, monkeypatch):
    from tritune.tuner import _advisor_seeded

    monkeypatch.setenv("TRITUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_advisor_seeded, "_TRAINED", {})
    target, others = toy_landscapes[2], toy_landscapes[:2]
    records = [r for land in others for r in land.records()]
    opts = {"advisor_k": 4, "advisor_rounds": 0, "advisor_base": "tpe",
            "advisor_train": {"n_embd": 16, "n_layer": 1, "pretrain_steps": 5, "finetune_steps": 10}}
    strat, asked = _run(target, opts, budget=6, train_records=records)
    assert asked[:4] == strat.proposals and len(strat.proposals) == 4
    assert all(target.lookup(c) is not None for c in strat.proposals)
    cached = list((tmp_path / "advisor").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").exists()
    _advisor_seeded._TRAINED.clear()  # a fresh process: the disk cache gives the same advisor
    strat2, asked2 = _run(target, opts, budget=6, train_records=records)
    assert strat2.proposals == strat.proposals


def test_refuses_to_seed_itself(toy_landscapes):
    land = toy_landscapes[0]
    with pytest.raises(ValueError, match="seed itself"):
        _run(land, {"advisor": FixedAdvisor([]), "advisor_base": "advisor"}, budget=1)
