"""bench-search: the counting rules, the closed-form random expectation, leave-one-out training
records, and the default strategy against the README's TPE figures."""

from __future__ import annotations

import itertools
import json
import statistics

import pytest
from tritune.search_space import Hardware, Landscape, write_landscape
from tritune.tuner import STRATEGIES, Strategy, bench_search, random_expectation, run_strategy
from tritune.tuner._strategies import DEFAULT_STRATEGY
from tuner_helpers import CONV

# ../shared/datasets/kernel_tuner_cache/README.md, convolution rows (random is exact there too).
README = {
    "A100": {"random": (0.612, 0.673), "tpe": (0.664, 0.665)},
    "A4000": {"random": (0.696, 0.773), "tpe": (0.761, 0.916)},
    "A6000": {"random": (0.650, 0.727), "tpe": (0.699, 0.745)},
    "MI250X": {"random": (0.370, 0.547), "tpe": (0.370, 0.784)},
    "W6600": {"random": (0.623, 0.741), "tpe": (0.677, 0.766)},
    "W7800": {"random": (0.694, 0.801), "tpe": (0.652, 0.842)},
}


@pytest.mark.parametrize("gpu", ["A100", "MI250X"])
def test_random_expectation_matches_the_readme(gpu):
    landscape = Landscape.load(CONV / f"{gpu}.json.gz")
    assert round(random_expectation(landscape, 20), 3) == README[gpu]["random"][0]
    assert round(random_expectation(landscape, 50), 3) == README[gpu]["random"][1]


def test_random_expectation_is_the_mean_over_every_draw(small_landscape):
    entries = list(small_landscape)
    for n in (1, 2, 3):
        fractions = []
        for draw in itertools.combinations(entries, n):
            times = [e.time_ms for e in draw if e.time_ms is not None]
            fractions.append(small_landscape.optimum_ms / min(times) if times else 0.0)
        assert random_expectation(small_landscape, n) == pytest.approx(statistics.fmean(fractions))


class InvalidThenAll(Strategy):
    """Proposes every Cartesian config in order, invalid ones included."""

    name = "invalid_then_all"

    def __init__(self, space, context, *, seed=0):
        super().__init__(space, context, seed=seed)
        self._it = iter([dict(zip(space.names, combo, strict=True))
                         for combo in itertools.product(*(p.values for p in space.params))])

    def ask(self):
        return next(self._it, None)

    def tell(self, config, result):
        pass


def test_invalid_configs_are_free_and_failed_ones_cost_one(small_landscape, monkeypatch):
    monkeypatch.setitem(STRATEGIES, "invalid_then_all", InvalidThenAll)
    run = run_strategy(small_landscape, "invalid_then_all", 1000)
    assert len(run.best_curve) == len(small_landscape)  # 19 recorded (2 failed) of 24 Cartesian
    assert run.asks == small_landscape.space.cartesian_size
    assert run.fraction_at(1000) == 1.0
    failed_at = [i for i, e in enumerate(small_landscape) if e.time_ms is None]
    assert failed_at and run.best_curve[0] is not None


class Learner(Strategy):
    """Records the training data it was given."""

    name = "learner"
    learns = True
    seen: list = []

    def __init__(self, space, context, *, seed=0):
        super().__init__(space, context, seed=seed)
        Learner.seen.append((space.name, {r.group for r in context.train_records}))
        self._configs = iter(space)

    def ask(self):
        return next(self._configs, None)

    def tell(self, config, result):
        pass


def _copy(landscape, tmp_path, gpu):
    results = [(e.values, e.time_ms, e.error, {"compile_time": e.cost_ms}) for e in landscape]
    path = write_landscape(tmp_path / f"{gpu}.json.gz", kernel="toy", kernel_name="toy_kernel", spec={"n": 1},
                           hardware=Hardware.from_spec(gpu, "any"),
                           params={p.name: p.values for p in landscape.space.params}, results=results)
    return Landscape.load(path)


def test_learning_strategies_get_leave_one_out_records(small_landscape, tmp_path, monkeypatch):
    monkeypatch.setitem(STRATEGIES, "learner", Learner)
    Learner.seen = []
    other = _copy(small_landscape, tmp_path, "H100")
    bench_search([small_landscape, other], ["learner", "random"], budgets=[5], repeats=1)
    assert len(Learner.seen) == 2
    for (name, groups), target, source in zip(Learner.seen, (small_landscape, other), (other, small_landscape),
                                              strict=True):
        assert name == target.space.name and groups == {source.group}


def test_report_json_names_fractions(small_landscape):
    report = bench_search([small_landscape], ["random"], budgets=[5, 10], repeats=2)
    data = json.loads(json.dumps(report.to_json()))
    row = data["rows"][0]
    assert {"fraction_mean", "fraction_std", "random_expected_fraction"} <= set(row)
    assert 0 < row["fraction_mean"] <= 1


@pytest.mark.slow
def test_tpe_matches_the_readme_tpe_row_on_convolution():
    # The learned default is measured with trained advisors (minutes each); TPE, the strategy
    # the landscapes' README measured, is checked here against its figures.
    from tritune.search_space import load_landscapes

    landscapes = load_landscapes([CONV])
    report = bench_search(landscapes, ["tpe"], budgets=[20, 50], repeats=5)
    means = {m["budget"]: m["fraction_mean"] for m in report.means()}
    for i, budget in enumerate((20, 50)):
        readme = statistics.fmean(README[g]["tpe"][i] for g in README)
        assert means[budget] >= readme, ("tpe", budget, means[budget], readme)


def test_default_is_the_learned_pipeline():
    assert DEFAULT_STRATEGY == "pipeline"
