"""The single-model baseline: one gradient-boosted tree model over config, problem and hardware.

Kept as the comparison that justifies ``GBTCostModel``'s shape (``tritune cost-model eval
--model pooled``): with hardware columns among the inputs and only a handful of training
devices, the trees split on device identity and an unseen device falls into whichever branch
its figures happen to land in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tritune.search_space import Hardware, SearchSpace, TuningRecord, Value

from ._base import CostModel
from ._features import Featurizer


class PooledGBTCostModel(CostModel):
    """One ``HistGradientBoostingRegressor`` on every record, targets ``log(rank / n)`` per problem."""

    def __init__(self, *, max_iter: int = 100, learning_rate: float = 0.2, max_leaf_nodes: int = 31,
                 threads: int = 1, random_state: int = 0, **_: Any) -> None:
        self.params = {"max_iter": max_iter, "learning_rate": learning_rate, "max_leaf_nodes": max_leaf_nodes}
        self.threads = threads
        self.random_state = random_state
        self.kernels: dict[str, tuple[Featurizer, Any]] = {}

    def fit(self, records: Sequence[TuningRecord]) -> PooledGBTCostModel:
        from sklearn.ensemble import HistGradientBoostingRegressor

        from ._model import _threads, group_targets

        by_kernel: dict[str, dict[str, list[TuningRecord]]] = {}
        for r in records:
            by_kernel.setdefault(r.kernel, {}).setdefault(r.group, []).append(r)
        if not by_kernel:
            raise ValueError("no training records; pass measurements from landscapes or a tuning database")
        with _threads(self.threads):
            for kernel, groups in by_kernel.items():
                featurizer = Featurizer.from_records(kernel, [r for g in groups.values() for r in g])
                xs, ys, ws = [], [], []
                for recs in groups.values():
                    xs.append(featurizer.transform(recs[0].hardware, recs[0].problem, [r.config for r in recs]))
                    ys.append(group_targets([r.time_ms for r in recs]))
                    ws.append(np.full(len(recs), 1.0 / len(recs)))
                x = np.vstack(xs)
                x[:, np.isnan(x).all(axis=0)] = 0.0
                est = HistGradientBoostingRegressor(**self.params, early_stopping=False, random_state=self.random_state)
                est.fit(x, np.concatenate(ys), sample_weight=np.concatenate(ws))
                self.kernels[kernel] = (featurizer, est)
        return self

    def predict(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
                configs: Sequence[Mapping[str, Value]]) -> np.ndarray:
        from ._model import _threads

        if kernel not in self.kernels:
            raise ValueError(f"the cost model has no data for kernel {kernel!r}; trained on: {', '.join(self.kernels)}")
        featurizer, est = self.kernels[kernel]
        with _threads(self.threads):
            return est.predict(featurizer.transform(hardware, problem, configs))
