"""bench-search: how close each strategy gets to a landscape's optimum within N real evaluations.

Counting follows the landscapes' README: an evaluation is a real measurement; configs the space
rejects (absent from the recording) are free; configs that failed on the GPU cost one and yield
nothing. A config proposed twice is answered from memory at no cost (the tuner never measures a
config twice). Fraction of optimum = optimum time / best time found (1.0 = found it; 0 when
nothing valid was found).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tritune.search_space import Landscape, config_key
from tritune.tuner._backend import MeasureResult
from tritune.tuner._replay import ReplayBackend, landscape_problem
from tritune.tuner._strategies import get_strategy
from tritune.tuner._strategy import StrategyContext

BUDGETS = (10, 20, 50, 100)


def random_expectation(landscape: Landscape, n: int) -> float:
    """Expected fraction of optimum of the best of ``n`` distinct uniform draws among valid configs.

    Valid configs are the recorded ones (failed ones included: they are drawn and yield nothing).
    With the K timed configs sorted fastest first among N valid ones, the best draw is the i-th
    fastest with probability ``[C(N-i+1, n) - C(N-i, n)] / C(N, n)``; if every draw failed the
    fraction is 0.
    """
    times = sorted(e.time_ms for e in landscape if e.time_ms is not None)
    total = len(landscape)
    n = min(n, total)
    if n <= 0:
        return 0.0
    best = times[0]
    # q(i) = C(N - i, n) / C(N, n): probability that none of the i fastest configs is drawn.
    expectation, q_prev = 0.0, 1.0
    for i, t in enumerate(times, start=1):
        remaining = total - i
        q = q_prev * max(remaining - n + 1, 0) / (remaining + 1) if remaining + 1 > 0 else 0.0
        expectation += (best / t) * (q_prev - q)
        q_prev = q
        if q_prev == 0.0:
            break
    return expectation


@dataclass(frozen=True)
class Run:
    """One strategy run on one landscape: best time after each evaluation."""

    landscape: str
    strategy: str
    repeat: int
    best_curve: tuple[float | None, ...]
    asks: int
    optimum_ms: float

    def fraction_at(self, budget: int) -> float:
        if not self.best_curve:
            return 0.0
        best = self.best_curve[min(budget, len(self.best_curve)) - 1]
        return 0.0 if best is None else self.optimum_ms / best


def run_strategy(landscape: Landscape, strategy: str, budget: int, *, seed: int = 0,
                 train_records: Sequence[Any] = (), options: Mapping[str, Any] | None = None,
                 repeat: int = 0, label: str | None = None) -> Run:
    """Run ``strategy`` on ``landscape`` for ``budget`` real evaluations.

    ``leave_one_out`` is set in the strategy's options: the parts shipped with the package were
    trained on the recorded landscapes, this one included, so a learning strategy must learn from
    ``train_records`` only.
    """
    problem = landscape_problem(landscape)
    cls = get_strategy(strategy)
    context = StrategyContext(
        hardware=landscape.hardware, kernel=landscape.kernel,
        problem=dict(landscape.spec) if landscape.spec else {"problem_size": landscape.problem_size},
        train_records=tuple(train_records) if cls.learns else (),
        options={"leave_one_out": True, **dict(options or {})},
    )
    strat = cls(landscape.space, context, seed=seed)
    backend = ReplayBackend([landscape])
    known: dict[str, MeasureResult] = {}
    curve: list[float | None] = []
    best: float | None = None
    asks = 0
    max_asks = 50 * budget + 1000  # a strategy stuck on free proposals must not spin forever
    while len(curve) < budget and asks < max_asks:
        config = strat.ask()
        if config is None:
            break
        asks += 1
        key = config_key(config)
        result = known.get(key)
        fresh = result is None
        if result is None:
            result = backend.measure(problem, [config])[0]
            known[key] = result
        strat.tell(config, result)
        if fresh and result.status.costs_evaluation:
            if result.ok and (best is None or result.time_ms < best):  # type: ignore[operator]
                best = result.time_ms
            curve.append(best)
    if label is None:
        label = "default" if strategy == "default" else cls.name
    return Run(landscape.name, label, repeat, tuple(curve), asks, landscape.optimum_ms)


# The ablation's second arm: the default pipeline run with the same seeds, without the advisor.
ABLATION_LABEL = "default-no-advisor"


@dataclass
class BenchReport:
    """Every run plus the per (landscape, strategy, budget) summary."""

    budgets: tuple[int, ...]
    runs: list[Run] = field(default_factory=list)
    random_expected: dict[str, dict[int, float]] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        groups: dict[tuple[str, str], list[Run]] = {}
        for r in self.runs:
            groups.setdefault((r.landscape, r.strategy), []).append(r)
        for (landscape, strategy), runs in groups.items():
            for b in self.budgets:
                fr = [r.fraction_at(b) for r in runs]
                rows.append({
                    "landscape": landscape, "strategy": strategy, "budget": b,
                    "fraction_mean": statistics.fmean(fr), "fraction_std": statistics.pstdev(fr) if len(fr) > 1 else 0.0,
                    "fraction_min": min(fr), "fraction_max": max(fr), "repeats": len(fr),
                    "random_expected_fraction": self.random_expected.get(landscape, {}).get(b),
                })
        return rows

    def means(self) -> list[dict[str, Any]]:
        """Mean over landscapes of the per-landscape mean fraction, per (strategy, budget)."""
        out = []
        rows = self.summary()
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            for b in self.budgets:
                sel = [r for r in rows if r["strategy"] == strategy and r["budget"] == b]
                rnd = [r["random_expected_fraction"] for r in sel if r["random_expected_fraction"] is not None]
                out.append({"strategy": strategy, "budget": b,
                            "fraction_mean": statistics.fmean(r["fraction_mean"] for r in sel),
                            "random_expected_fraction": statistics.fmean(rnd) if rnd else None,
                            "landscapes": len(sel)})
        return out

    def ablation(self) -> list[dict[str, Any]]:
        """Per budget: the default pipeline with and without the advisor (same seeds) and the
        advisor's share of the pipeline's gain over random search (exact expectation):
        ``(with - without) / (with - random)``; None when the pipeline gains nothing."""
        means = {(m["strategy"], m["budget"]): m for m in self.means()}
        out = []
        for b in self.budgets:
            with_, without = means.get(("default", b)), means.get((ABLATION_LABEL, b))
            if with_ is None or without is None:
                continue
            rnd = with_["random_expected_fraction"]
            gain = with_["fraction_mean"] - (rnd if rnd is not None else 0.0)
            out.append({"budget": b, "with_advisor": with_["fraction_mean"], "without_advisor": without["fraction_mean"],
                        "random_expected_fraction": rnd,
                        "advisor_share_of_gain": (with_["fraction_mean"] - without["fraction_mean"]) / gain
                        if gain > 1e-12 else None})
        return out

    def to_json(self) -> dict[str, Any]:
        from tritune.tuner._strategies import DEFAULT_STRATEGY

        return {
            "default_strategy": DEFAULT_STRATEGY,
            "ablation": self.ablation(),
            "counting": "fraction = optimum time / best time found after N real evaluations (invalid configs "
                        "free, failed ones cost one, repeats answered from memory); mean and population std "
                        "over repeats; random_expected_fraction is the exact expectation of uniform random "
                        "search without replacement among valid configs",
            "budgets": list(self.budgets),
            "rows": self.summary(),
            "mean_over_landscapes": self.means(),
        }


def bench_search(landscapes: Sequence[Landscape], strategies: Sequence[str], *, budgets: Sequence[int] = BUDGETS,
                 repeats: int = 5, seed: int = 0, options: Mapping[str, Any] | None = None,
                 on_run: Callable[[Run], None] | None = None, ablation: bool = False) -> BenchReport:
    """Run every strategy ``repeats`` times on every landscape, up to the largest budget.

    Strategies that learn get leave-one-out training records: the other landscapes of the same
    ``kernel_name`` in this call, never the target itself. ``ablation`` adds the default pipeline
    without its advisor (``advisor_off``, same seeds, labelled ``default-no-advisor``; "default"
    is added when missing), summarized by ``BenchReport.ablation``.
    """
    strategies = list(strategies)
    if ablation and "default" not in strategies:
        strategies.insert(0, "default")
    budgets = tuple(sorted(set(int(b) for b in budgets)))
    if not budgets or budgets[0] < 1:
        raise ValueError(f"budgets must be positive integers, got {list(budgets)}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1")
    for s in strategies:
        get_strategy(s)  # fail before running anything
    report = BenchReport(budgets)
    for landscape in landscapes:
        report.random_expected[landscape.name] = {b: random_expectation(landscape, b) for b in budgets}
    for landscape in landscapes:
        others = [rec for other in landscapes if other is not landscape and other.kernel_name == landscape.kernel_name
                  for rec in other.records()] if any(get_strategy(s).learns for s in strategies) else []
        arms = [(s, s, options) for s in strategies]
        if ablation:
            arms.append(("default", ABLATION_LABEL, {**dict(options or {}), "advisor_off": True}))
        for strategy, label, opts in arms:
            for r in range(repeats):
                run = run_strategy(landscape, strategy, budgets[-1], seed=seed + r, train_records=others,
                                   options=opts, repeat=r, label=label)
                report.runs.append(run)
                if on_run is not None:
                    on_run(run)
    return report


def fmt_fraction(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
