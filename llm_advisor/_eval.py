"""Leave-one-out evaluation of the advisor on recorded landscapes (unseen-GPU transfer).

For each landscape file in turn, a model is trained from scratch on every *other* file and asked
for its top-k configs on the held-out one; the held-out recording says how fast they are.
``first_fraction`` is the fraction of optimum (optimum time / time) of the first proposal (0 if
it failed on the GPU), ``top10_fraction`` the best of the first ten. Next to it, the naive
transfer baseline of the landscapes' README: configs ranked by their mean log-rank on the other
GPUs of the same kernel; and the cost-model baseline: the leave-one-out cost model's (trained on
the same files) ten best predicted configs, as the same portfolio (``diversify`` over its top
5%), so whether the language model adds to the cost model zero-shot is one command away.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tritune.llm_advisor._cache import cached_train
from tritune.llm_advisor._options import CorpusOptions, TrainOptions
from tritune.llm_advisor._tlm import TLMAdvisor, train
from tritune.search_space import Landscape, config_key


@dataclass(frozen=True)
class TargetResult:
    target: str  # landscape name, e.g. "convolution_milo/A100"
    kernel: str
    device: str
    first_fraction: float
    top10_fraction: float
    fractions: tuple[float, ...]  # fraction of optimum of each proposal, in order
    naive_first_fraction: float
    naive_top10_fraction: float
    train_files: int
    train_seconds: float
    propose_seconds: float
    proposals: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    cost_model_top10_fraction: float | None = None  # None: not computed (cost_model_baseline False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def geomean(xs: Sequence[float]) -> float:
    """Geometric mean; a zero (a failed first proposal) makes it zero, as it should."""
    if not xs or min(xs) <= 0:
        return 0.0
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def naive_transfer(target: Landscape, others: Sequence[Landscape], k: int = 10) -> list[dict[str, Any]]:
    """The README's baseline: the target's configs by mean log-rank on ``others`` (failed = last)."""
    ranks: dict[str, float] = {}
    for other in others:
        order = sorted(other.entries, key=lambda key: (other.entries[key].time_ms is None, other.entries[key].time_ms or 0.0))
        n = len(order)
        pos = {key: i for i, key in enumerate(order)}
        for key in target.entries:
            ranks[key] = ranks.get(key, 0.0) + math.log(1 + pos.get(key, n))
    best = sorted(target.entries, key=lambda key: (ranks.get(key, math.inf), key))[:k]
    return [dict(target.entries[key].values) for key in best]


def cost_model_portfolio(target: Landscape, records: Sequence[Any], k: int = 10, share: float = 0.05) -> list[dict[str, Any]]:
    """The leave-one-out cost model's k proposals for ``target``: its best predicted config, then
    the advisor's portfolio rule (``diversify``) over its predicted top ``share`` of the space."""
    from tritune.cost_model import GBTCostModel
    from tritune.llm_advisor._generate import diversify

    configs = target.space.enumerate()
    scores = GBTCostModel().fit(records).predict(target.hardware, target.kernel, _problem(target), target.space, configs)
    order = sorted(range(len(configs)), key=lambda i: (scores[i], i))[:max(2 * k, round(share * len(configs)))]
    return [c for c, _ in diversify([(configs[i], -float(scores[i])) for i in order], k)]


def _fractions(target: Landscape, configs: Sequence[dict[str, Any]]) -> list[float]:
    out = []
    for c in configs:
        entry = target.lookup(c)
        out.append(target.fraction_of_optimum(entry.time_ms if entry else None))
    return out


def evaluate(landscapes: Sequence[Landscape], *, k: int = 10, corpus: CorpusOptions | None = None,
             options: TrainOptions | None = None, same_kernel_only: bool = True,
             targets: Sequence[str] | None = None, cost_model_baseline: bool = False,
             progress: Callable[[str], None] | None = None) -> list[TargetResult]:
    """Leave-one-out over ``landscapes`` (``targets``: only these names are held out in turn).

    ``cost_model_baseline``: also the cost model's top 10 (``cost_model_portfolio``), trained
    on the same records as the advisor.

    Training uses the other files of the held-out file's kernel (its other GPUs); with
    ``same_kernel_only`` False also the other kernels' files (the held-out GPU's included: the
    held-out file itself is never used).
    """
    if len(landscapes) < 2:
        raise ValueError("leave-one-out needs at least two landscape files (one kernel on several GPUs)")
    names = [land.name for land in landscapes]
    if len(set(names)) != len(names):
        raise ValueError(f"landscape names repeat: {names}; pass each file once")
    results = []
    for target in landscapes:
        if targets and target.name not in targets:
            continue
        train_on = [land for land in landscapes if land is not target and (not same_kernel_only or land.kernel == target.kernel)]
        peers = [land for land in landscapes if land is not target and land.kernel == target.kernel]
        if progress:
            progress(f"{target.name}: training on {len(train_on)} files")
        t0 = time.perf_counter()
        records = [r for land in train_on for r in land.records()]
        # The same records and options as a search strategy's leave-one-out model: shared cache.
        lm = train(records, corpus=corpus, options=options) if corpus is not None else cached_train(records, options)
        t1 = time.perf_counter()
        advisor = TLMAdvisor(lm)
        proposals = advisor.propose(target.hardware, target.kernel, _problem(target), target.space, k)
        t2 = time.perf_counter()
        fr = _fractions(target, [p.config for p in proposals])
        naive = _fractions(target, naive_transfer(target, peers, k)) if peers else [0.0]
        cost_model = max(_fractions(target, cost_model_portfolio(target, records, 10))) if cost_model_baseline else None
        if len({config_key(p.config) for p in proposals}) != len(proposals):
            raise AssertionError(f"advisor proposed duplicates for {target.name}")  # the contract; never expected
        results.append(TargetResult(
            target=target.name, kernel=target.kernel, device=target.device_label,
            first_fraction=fr[0] if fr else 0.0, top10_fraction=max(fr[:10], default=0.0), fractions=tuple(fr),
            naive_first_fraction=naive[0], naive_top10_fraction=max(naive[:10]),
            train_files=len(train_on), train_seconds=t1 - t0, propose_seconds=t2 - t1,
            proposals=tuple({"config": dict(p.config), "score": p.score} for p in proposals),
            cost_model_top10_fraction=cost_model,
        ))
    return results


def landscape_problem(landscape: Landscape) -> dict[str, Any]:
    """The problem mapping a landscape's records carry (the advisor's problem words)."""
    return dict(landscape.spec) if landscape.spec else {"problem_size": landscape.problem_size}


_problem = landscape_problem
