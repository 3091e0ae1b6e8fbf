"""The claim protocol of workers sharing a study (tuner/_study.py), without a database server."""

from __future__ import annotations

import optuna
from tritune.search_space import Constraint, Param, SearchSpace
from tritune.tuner import MeasureResult, Status
from tritune.tuner._study import StudyDriver

SPACE = SearchSpace("claims", (Param("x", (1, 2, 3, 4)), Param("y", (1, 2))), (Constraint("any", lambda v: None),))


def _drivers() -> tuple[StudyDriver, StudyDriver]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return StudyDriver(study, SPACE, worker="a"), StudyDriver(study, SPACE, worker="b")


def test_a_claim_whose_trial_finished_meanwhile_still_counts():
    # Worker b claimed a config and refreshed its finished trials before worker a's trial of the
    # same config finished; its claim check comes after. A check of running trials alone missed
    # a's claim (finished by then, and unseen by b's refresh): both measured the config.
    a, b = _drivers()
    first = a.ask()
    assert first is not None
    a.tell(first, MeasureResult(Status.OK, time_ms=1.0))
    assert b._claimed_elsewhere(first.number + 1000, first.key)


def test_no_claim_on_an_unmeasured_config_or_on_ones_own_trial():
    a, b = _drivers()
    first = a.ask()
    assert first is not None
    assert not a._claimed_elsewhere(first.number, first.key)  # its own claim
    assert b._claimed_elsewhere(first.number + 1000, first.key)  # running, claimed by a
    other = next(c for c in SPACE if c != first.config)
    from tritune.search_space import config_key

    assert not b._claimed_elsewhere(first.number + 1000, config_key(other))
