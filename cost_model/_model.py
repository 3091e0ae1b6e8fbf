"""The cost model: gradient-boosted trees per device, mixed by learned hardware similarity.

Why this shape (``tritune cost-model eval`` reproduces the figures): within one device, configs
and problems are plentiful and one gradient-boosted tree model (scikit-learn's
``HistGradientBoostingRegressor``) learns their interactions well. Across devices there are only
a handful of training points (five in a leave-one-GPU-out fold of the shared landscapes), and a
single tree model given hardware columns (``--model pooled``) splits on device identity and
routes an unseen device arbitrarily: leave-one-GPU-out on the 12 landscapes it reached pairwise
accuracy 0.790 / peak@1 0.855 / peak@5 0.904 (naive transfer: 0.758 / 0.874 / 0.893), this model
0.838 / 0.917 / 0.940. Its limit is the mixture: the best weights for each held-out GPU, chosen
with that GPU's own times (an oracle), reach 0.848, because the AMD targets rank configs unlike
any other GPU (convolution W7800: 0.76 at best from any one member). So:

1. one *member* model per (kernel, device), trained on every problem of that device with targets
   normalized per problem (``log(rank / n)``: only the order within a problem matters, failed
   configs tie at the bottom);
2. how well member j ranks member i's measurements is measured on the training data, and a
   non-negative linear model learns which hardware differences (vendor, register file, shared
   memory, ...) predict that agreement (metric learning: 10 pairs for five devices);
3. for a target device, members are weighted by the agreement predicted from its hardware
   features (softmax with ``temperature``), and their per-problem log-quantiles are averaged;
4. ``update`` adds the target's own measurements: each member's weight is multiplied by
   ``exp(-n * error)`` (``error`` = share of observed pairs it misorders), and a small Gaussian
   process fitted on the target's measurements (the prior as one of its inputs, ``_target``)
   joins as one more member, weighted the same way by its leave-one-out error;
5. ``set_prior`` adds an outside opinion about the target (the language-model advisor's
   expected quality of each config) as one more member: it starts at a chosen share of the best
   member's weight and is reweighted by the target's measurements like every other member, so it
   steers the ranking where it orders the target's measurements well and fades where it does not.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls
from scipy.stats import rankdata
from tritune.search_space import Hardware, SearchSpace, TuningRecord, Value, config_key

from ._base import CostModel
from ._features import Featurizer, hardware_vector
from ._metrics import pairwise_accuracy
from ._target import TargetGP

MIN_TARGET_OK = 4  # target measurements (OK ones) before a target member is fitted


def group_targets(times: Sequence[float | None]) -> np.ndarray:
    """Per-problem training target: ``log(rank / n)`` with failed configs tied at the bottom."""
    t = np.array([np.inf if x is None else float(x) for x in times], dtype=np.float64)
    return np.log(rankdata(t) / len(t))


@dataclass
class Member:
    """A tree model of one kernel on one device (every problem measured there)."""

    hardware: Hardware
    vector: np.ndarray
    estimator: Any
    records: int
    groups: int


@dataclass
class KernelModel:
    """Everything the model knows about one kernel."""

    featurizer: Featurizer
    members: list[Member]
    coef: np.ndarray  # weight of each |hardware difference| in the predicted agreement
    intercept: float
    scale: np.ndarray
    center: np.ndarray
    agreement: np.ndarray  # measured: agreement[i, j] = member j ranking member i's problems

    def similarity(self, hardware: Hardware) -> np.ndarray:
        """Predicted ranking agreement of each member with ``hardware``."""
        v = _impute(hardware_vector(hardware), self.center)
        return np.array([self.intercept - float(self.coef @ (np.abs(v - m.vector) / self.scale)) for m in self.members])


@dataclass
class TargetState:
    """Measurements of one target problem passed to ``update``."""

    configs: list[dict[str, Value]] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    fitted: TargetGP | None = None  # the target member, once enough measurements arrived
    # (measurements, pool) the target member was fitted for: the pool sets its feature scaling,
    # so ranking another list of configs (an explain() between two asks) must not reuse it.
    fitted_on: tuple[int, Any] = (-1, None)
    featurizer: Featurizer | None = None  # only for kernels the model has no training data on
    priors: list[Prior] = field(default_factory=list)  # outside opinions (set_prior)


PriorScorer = Callable[[Sequence[Mapping[str, Value]]], np.ndarray]


@dataclass
class Prior:
    """An outside ranking of the target's configs (lower = predicted faster), in log-quantile units.

    ``share``: its starting weight as a multiple of the best member's. Scores of the last pool
    asked for are cached (the strategy ranks the same pool after every measurement).
    """

    name: str
    scorer: PriorScorer
    share: float
    _pool: tuple[Any, int, np.ndarray] | None = None
    _memo: dict[str, float] = field(default_factory=dict)

    def scores(self, configs: Sequence[Mapping[str, Value]]) -> np.ndarray:
        if self._pool is not None and self._pool[0] is configs and self._pool[1] == len(configs):
            return self._pool[2]
        keys = [config_key(c) for c in configs]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        if todo:
            got = np.asarray(self.scorer([configs[i] for i in todo]), dtype=np.float64)
            if got.shape != (len(todo),):
                raise ValueError(f"prior {self.name!r} returned {got.shape} scores for {len(todo)} configs")
            self._memo.update((keys[i], float(v)) for i, v in zip(todo, got, strict=True))
        out = np.array([self._memo[k] for k in keys], dtype=np.float64)
        if len(configs) > 64:
            self._pool = (configs, len(configs), out)
        return out


class GBTCostModel(CostModel):
    """Hardware-similarity-weighted gradient-boosted trees, refit online (see the module doc).

    ``threads`` caps the OpenMP threads scikit-learn's tree code uses: on a machine shared with
    other work, two spinning OpenMP threads per fit made training ~20x slower than one.
    ``temperature`` is in units of pairwise accuracy: a member predicted to agree 0.03 less than
    the best one gets e^-1 of its weight (0.03 against 0.02: leave-one-GPU-out pairwise accuracy
    0.836 -> 0.838, both kernels up, peaks unchanged; 0.05 mixes in dissimilar devices). ``max_records_per_group`` subsamples large problems
    (for quick experiments; None keeps all).
    """

    def __init__(self, *, max_iter: int = 100, learning_rate: float = 0.2, max_leaf_nodes: int = 31,
                 temperature: float = 0.03, evidence: float = 1.0, compile_features: bool = False,
                 max_records_per_group: int | None = None, threads: int = 1, random_state: int = 0) -> None:
        self.params = {"max_iter": max_iter, "learning_rate": learning_rate, "max_leaf_nodes": max_leaf_nodes}
        self.temperature = temperature
        self.evidence = evidence
        self.compile_features = compile_features
        self.max_records_per_group = max_records_per_group
        self.random_state = random_state
        self.threads = threads
        self.kernels: dict[str, KernelModel] = {}
        self._targets: dict[str, TargetState] = {}
        # Per target: the candidate pool last ranked, its member predictions and its features on
        # the target device (the strategy ranks the same pool after every measurement).
        self._pool_cache: dict[str, tuple[Sequence[Mapping[str, Value]], int, np.ndarray | None, np.ndarray | None]] = {}

    # --- training --------------------------------------------------------------------------
    def fit(self, records: Sequence[TuningRecord]) -> GBTCostModel:
        by_kernel: dict[str, list[TuningRecord]] = {}
        for r in records:
            by_kernel.setdefault(r.kernel, []).append(r)
        if not by_kernel:
            raise ValueError("no training records; pass measurements from landscapes or a tuning database")
        with _threads(self.threads):
            self.kernels = {k: self._fit_kernel(k, recs) for k, recs in by_kernel.items()}
        self._targets.clear()
        self._pool_cache.clear()
        return self

    def _fit_kernel(self, kernel: str, records: list[TuningRecord]) -> KernelModel:
        rng = np.random.default_rng(self.random_state)
        by_hw: dict[str, dict[str, list[TuningRecord]]] = {}
        for r in records:
            by_hw.setdefault(r.hardware.key, {}).setdefault(r.group, []).append(r)
        kept: dict[str, dict[str, list[TuningRecord]]] = {}
        for hw_key, groups in by_hw.items():
            kept[hw_key] = {}
            for g, recs in groups.items():
                if not any(r.time_ms is not None for r in recs) or len(recs) < 2:
                    continue  # nothing to rank within this problem
                if self.max_records_per_group and len(recs) > self.max_records_per_group:
                    idx = rng.choice(len(recs), self.max_records_per_group, replace=False)
                    recs = [recs[i] for i in sorted(idx)]
                kept[hw_key][g] = recs
            if not kept[hw_key]:
                del kept[hw_key]
        if not kept:
            raise ValueError(f"kernel {kernel!r}: no problem has two or more measurements with a success among them")
        featurizer = Featurizer.from_records(kernel, [r for gs in kept.values() for rs in gs.values() for r in rs],
                                             compile=self.compile_features)
        members: list[Member] = []
        data: list[list[tuple[Mapping[str, Any], list[Mapping[str, Value]], np.ndarray]]] = []
        for groups in kept.values():
            xs, ys, ws, per_group = [], [], [], []
            for recs in groups.values():
                x = _features_of(featurizer, recs)
                y = group_targets([r.time_ms for r in recs])
                xs.append(x)
                ys.append(y)
                ws.append(np.full(len(y), 1.0 / len(y)))
                per_group.append((recs[0].problem, [r.config for r in recs],
                                  np.array([np.inf if r.time_ms is None else r.time_ms for r in recs])))
            x = np.vstack(xs)
            # A column with no value at all (hardware figures of the CPU interpreter) breaks the
            # tree code's binning; as a constant it is simply never split on.
            x[:, np.isnan(x).all(axis=0)] = 0.0
            est = self._estimator()
            est.fit(x, np.concatenate(ys), sample_weight=np.concatenate(ws) * len(groups))
            hw = next(iter(groups.values()))[0].hardware
            members.append(Member(hw, hardware_vector(hw), est, sum(len(y) for y in ys), len(groups)))
            data.append(per_group)
        agreement = _agreement(featurizer, members, data, rng)
        coef, intercept, scale, center = _fit_metric(members, agreement)
        return KernelModel(featurizer, members, coef, intercept, scale, center, agreement)

    def _estimator(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(**self.params, early_stopping=False, random_state=self.random_state)

    # --- ranking ---------------------------------------------------------------------------
    def knows(self, kernel: str) -> bool:
        return kernel in self.kernels

    def prior_weights(self, hardware: Hardware, kernel: str) -> dict[str, float]:
        """Each member's zero-shot weight for ``hardware`` (device name -> weight)."""
        km = self._kernel(kernel)
        w = _softmax(km.similarity(hardware), self.temperature)
        return {m.hardware.name: float(x) for m, x in zip(km.members, w, strict=True)}

    def predict(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
                configs: Sequence[Mapping[str, Value]]) -> np.ndarray:
        scores, _ = self.explain(hardware, kernel, problem, space, configs)
        return scores

    def acquire(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
                configs: Sequence[Mapping[str, Value]]) -> np.ndarray:
        """Which config to measure next (lower = sooner): ``predict`` with the target member ranking
        by expected improvement instead of its mean, so configs it is unsure about get their turn."""
        scores, _ = self.explain(hardware, kernel, problem, space, configs, acquisition=True)
        return scores

    def explain(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
                configs: Sequence[Mapping[str, Value]], *, acquisition: bool = False) -> tuple[np.ndarray, dict[str, float]]:
        """Scores (lower = predicted faster) and the weight each member got."""
        with _threads(self.threads):
            return self._explain(hardware, kernel, problem, configs, acquisition)

    def _explain(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any],
                 configs: Sequence[Mapping[str, Value]], acquisition: bool) -> tuple[np.ndarray, dict[str, float]]:
        if not configs:
            return np.zeros(0), {}
        state = self._targets.get(_target_key(hardware, kernel, problem))
        if kernel not in self.kernels and (state is None or not (state.times or state.priors)):
            known = ", ".join(self.kernels) or "none"
            raise ValueError(f"the cost model has no data for kernel {kernel!r} (trained on: {known}); "
                             "train it on measurements of this kernel or update() it with target measurements")
        km = self.kernels.get(kernel)
        names: list[str] = []
        preds: list[np.ndarray] = []
        log_w = np.zeros(0)
        raw = None
        if km is not None:
            raw = self._member_predictions(km, hardware, kernel, problem, configs)
            names = [m.hardware.name for m in km.members]
            preds = list(raw)
            log_w = np.log(_softmax(km.similarity(hardware), self.temperature) + 1e-300)
        priors = state.priors if state is not None else []
        if priors:
            # An outside opinion starts at ``share`` times the best member's weight (the members'
            # own weights are unchanged relative to each other).
            top = float(log_w.max()) if len(log_w) else 0.0
            names.extend(p.name for p in priors)
            preds.extend(p.scores(configs) for p in priors)
            log_w = np.append(log_w, [top + np.log(max(p.share, 1e-12)) for p in priors])
        if state is not None and state.times:
            log_w, target = self._with_evidence(km, state, hardware, kernel, problem, configs, raw, log_w, acquisition)
            if target is not None:
                names.append("target")
                preds.append(target[0])
                log_w = np.append(log_w, target[1])
        weights = np.exp(log_w - log_w.max())
        weights /= weights.sum()
        n = len(configs)
        scores = np.zeros(n)
        for p, w in zip(preds, weights, strict=True):
            scores += w * np.log(rankdata(p) / n)
        return scores, {name: float(w) for name, w in zip(names, weights, strict=True)}

    def _member_predictions(self, km: KernelModel, hardware: Hardware, kernel: str, problem: Mapping[str, Any],
                            configs: Sequence[Mapping[str, Value]]) -> np.ndarray:
        """Raw predictions of every member (members x configs), cached for a repeated pool.

        A member is a model of *its* device: its features (occupancy, waves, ...) are computed
        with its own hardware and the target's problem, so it answers "how would these configs
        rank on my device"; the target's hardware enters through the member weights. (Computing
        them with the target's hardware put the derived features out of the member's training
        range and lost a third of the peak@5 in leave-one-GPU-out.)
        """
        tkey = _target_key(hardware, kernel, problem)
        cached = self._pool_cache.get(tkey)
        if cached is not None and cached[0] is configs and cached[1] == len(configs) and cached[2] is not None:
            return cached[2]
        xs = km.featurizer.transform_many([m.hardware for m in km.members], problem, configs)
        raw = np.vstack([m.estimator.predict(x) for m, x in zip(km.members, xs, strict=True)])
        if len(configs) > 64:  # a candidate pool the caller ranks again after each measurement
            self._pool_cache[tkey] = (configs, len(configs), raw, None)
        return raw

    def _target_features(self, featurizer: Featurizer, hardware: Hardware, kernel: str, problem: Mapping[str, Any],
                         configs: Sequence[Mapping[str, Value]]) -> np.ndarray:
        """Features of ``configs`` on the target device (cached for a repeated pool)."""
        tkey = _target_key(hardware, kernel, problem)
        cached = self._pool_cache.get(tkey)
        if cached is not None and cached[0] is configs and cached[1] == len(configs) and cached[3] is not None:
            return cached[3]
        x = featurizer.transform(hardware, problem, configs)
        if len(configs) > 64:
            raw = cached[2] if cached is not None and cached[0] is configs and cached[1] == len(configs) else None
            self._pool_cache[tkey] = (configs, len(configs), raw, x)
        return x

    # --- online ----------------------------------------------------------------------------
    def update(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
               configs: Sequence[Mapping[str, Value]], times_ms: Sequence[float | None]) -> None:
        """Add target measurements (None = the config failed); a repeated config is ignored."""
        if len(configs) != len(times_ms):
            raise ValueError(f"update: {len(configs)} configs but {len(times_ms)} times")
        state = self._targets.setdefault(_target_key(hardware, kernel, problem), TargetState())
        for c, t in zip(configs, times_ms, strict=True):
            key = config_key(c)
            if key in state.keys:
                continue
            state.keys.add(key)
            state.configs.append(dict(c))
            state.times.append(None if t is None else float(t))

    def fresh(self) -> GBTCostModel:
        """A copy sharing the trained members, without any target measurements.

        Each tuning run (and each bench-search repeat) ranks with its own copy, so the
        measurements of one run never leak into another's ranking.
        """
        twin = copy.copy(self)
        twin._targets = {}
        twin._pool_cache = {}
        return twin

    def set_prior(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], name: str,
                  scorer: PriorScorer, *, share: float = 1.0) -> None:
        """Add an outside ranking of this target's configs as one more member (see the module doc).

        ``scorer(configs)`` returns one score per config, lower = predicted faster, in the
        members' units (log of the rank quantile, 0 = best: the advisor's negated expected band
        value is one). ``share`` is its starting weight relative to the best member; measurements
        of the target then reweight it by the share of their pairs it misorders. A later call with
        the same ``name`` replaces it (e.g. an advisor re-asked knowing the measurements).
        """
        if share <= 0:
            raise ValueError(f"set_prior share={share} must be positive (leave the prior out instead)")
        state = self._targets.setdefault(_target_key(hardware, kernel, problem), TargetState())
        state.priors = [p for p in state.priors if p.name != name] + [Prior(name, scorer, float(share))]
        state.fitted, state.fitted_on = None, (-1, None)  # the target member's prior input changes with it

    def forget(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any]) -> None:
        """Drop the target measurements of one problem."""
        self._targets.pop(_target_key(hardware, kernel, problem), None)

    def _with_evidence(self, km: KernelModel | None, state: TargetState, hardware: Hardware, kernel: str,
                       problem: Mapping[str, Any], configs: Sequence[Mapping[str, Value]], raw: np.ndarray | None,
                       log_w: np.ndarray, acquisition: bool = False) -> tuple[np.ndarray, tuple[np.ndarray, float] | None]:
        """Member log-weights after the target's measurements, and the target member if fitted.

        Each model loses ``evidence * n * (error - best error)`` nats of log-weight, where
        ``error`` is the share of the n observed configs' pairs it misorders (the target
        member's error is leave-one-out). The target member starts at the best prior weight.
        """
        times = _times(state.times)
        n = len(times)
        obs_raw = self._member_predictions(km, hardware, kernel, problem, state.configs) if km is not None else None
        if state.priors:  # outside opinions are members too: judged, and mixed into the target's input
            pool_priors = np.vstack([p.scores(configs) for p in state.priors])
            obs_priors = np.vstack([p.scores(state.configs) for p in state.priors])
            raw = pool_priors if raw is None else np.vstack([raw, pool_priors])
            obs_raw = obs_priors if obs_raw is None else np.vstack([obs_raw, obs_priors])
        errors = np.array([_pair_error(times, p) for p in obs_raw]) if obs_raw is not None else np.zeros(0)
        target = None
        if int(np.isfinite(times).sum()) >= MIN_TARGET_OK:
            weights = np.exp(log_w - log_w.max()) if len(log_w) else log_w
            mix = (weights / weights.sum()) if len(weights) else None
            featurizer = km.featurizer if km is not None else self._target_featurizer(kernel, hardware, problem, state,
                                                                                       configs)

            def inputs(cs: Sequence[Mapping[str, Value]], member_raw: np.ndarray | None) -> np.ndarray:
                x = self._target_features(featurizer, hardware, kernel, problem, cs)
                return x if member_raw is None or mix is None else np.column_stack([x, mix @ member_raw])

            x_pool = inputs(configs, raw)
            if state.fitted is None or state.fitted_on[0] != n or state.fitted_on[1] is not configs:
                gp = TargetGP.fit(inputs(state.configs, obs_raw), _target_log_times(times), times, x_pool)
                state.fitted, state.fitted_on = gp, (n, configs)
            gp = state.fitted
            est, t_error = gp, gp.loo_error
            t_prior = float(log_w.max()) if len(log_w) else 0.0
            ranking = -est.expected_improvement(x_pool) if acquisition else est.predict(x_pool)
            target = (ranking, t_prior, t_error)
        best = min([*errors.tolist(), *([target[2]] if target else [])], default=0.0)
        if n >= 2 and len(errors):
            log_w = log_w - self.evidence * n * (errors - best)
        if target is None:
            return log_w, None
        return log_w, (target[0], target[1] - self.evidence * n * (target[2] - best))

    def _target_featurizer(self, kernel: str, hardware: Hardware, problem: Mapping[str, Any], state: TargetState,
                           configs: Sequence[Mapping[str, Value]]) -> Featurizer:
        """Without training data: a layout from the pool and the measured configs (made once)."""
        if state.featurizer is None:
            records = [TuningRecord(hardware, kernel, dict(problem), c, None, "failed", "target")
                       for c in [*configs, *state.configs]]
            state.featurizer = Featurizer.from_records(kernel, records, compile=self.compile_features)
        return state.featurizer

    def _kernel(self, kernel: str) -> KernelModel:
        if kernel not in self.kernels:
            known = ", ".join(self.kernels) or "none"
            raise ValueError(f"the cost model has no data for kernel {kernel!r}; trained on: {known}")
        return self.kernels[kernel]

    def describe(self) -> dict[str, Any]:
        """What the model was trained on (for ``tritune cost-model train --json``)."""
        return {
            "kernels": {
                k: {"members": [{"hardware": m.hardware.name, "records": m.records, "problems": m.groups}
                                for m in km.members],
                    "features": list(km.featurizer.names)}
                for k, km in self.kernels.items()
            },
            "params": {**self.params, "temperature": self.temperature, "evidence": self.evidence,
                       "compile_features": self.compile_features},
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_targets"] = {}  # target measurements belong to a tuning run, not to the model file
        state["_pool_cache"] = {}
        return state


# --- helpers ---------------------------------------------------------------------------------
def _threads(n: int) -> Any:
    # threadpoolctl only limits OpenMP runtimes already loaded: import the tree code first.
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, int(n)), user_api="openmp")


def _target_key(hardware: Hardware, kernel: str, problem: Mapping[str, Any]) -> str:
    return f"{hardware.key}|{kernel}|{json.dumps(dict(problem), sort_keys=True, default=str)}"


def _features_of(featurizer: Featurizer, recs: list[TuningRecord]) -> np.ndarray:
    first = recs[0]
    return featurizer.transform(first.hardware, first.problem, [r.config for r in recs])


def _times(times: Sequence[float | None]) -> np.ndarray:
    return np.array([np.inf if t is None else t for t in times], dtype=np.float64)


def _target_log_times(times: np.ndarray) -> np.ndarray:
    ok = np.isfinite(times)
    lt = np.log(np.where(ok, times, 1.0))
    best, worst = lt[ok].min(), lt[ok].max()
    return np.where(ok, lt - best, worst - best + 1.0)  # failed: an e-fold slower than the slowest


def _pair_error(times: np.ndarray, scores: np.ndarray) -> float:
    """Share of observed pairs ``scores`` misorders (0.5 when nothing can be compared)."""
    if len(times) < 2 or not np.isfinite(times).any():
        return 0.5
    acc = pairwise_accuracy(times, scores)
    return 0.5 if acc != acc else 1.0 - acc


def _softmax(s: np.ndarray, temperature: float) -> np.ndarray:
    if len(s) == 0:
        return s
    z = np.exp((s - s.max()) / max(temperature, 1e-9))
    return z / z.sum()


def _impute(v: np.ndarray, center: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(v), v, center)


def _agreement(featurizer: Featurizer, members: list[Member],
               data: list[list[tuple[Mapping[str, Any], list[Mapping[str, Value]], np.ndarray]]],
               rng: np.random.Generator, max_rows: int = 2000) -> np.ndarray:
    """agreement[i, j]: pairwise accuracy of member j on member i's problems (mean over problems)."""
    m = len(members)
    out = np.full((m, m), np.nan)
    for i in range(m):
        samples = []
        for problem, configs, t in data[i]:
            if len(t) > max_rows:
                idx = np.sort(rng.choice(len(t), max_rows, replace=False))
                configs, t = [configs[k] for k in idx], t[idx]
            if np.isfinite(t).any() and len(t) >= 2:
                samples.append((problem, configs, t))
        for j in range(m):
            if i == j or not samples:
                continue
            accs = [pairwise_accuracy(t, members[j].estimator.predict(featurizer.transform(members[j].hardware, p, cs)))
                    for p, cs, t in samples]
            accs = [a for a in accs if a == a]
            out[i, j] = float(np.mean(accs)) if accs else np.nan
    return out


def _fit_metric(members: list[Member], agreement: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Non-negative weights on |hardware differences| that predict member agreement.

    Fits ``agree(i, j) ~ a - sum_k b_k |v_i - v_j|_k / scale_k`` with ``b >= 0`` on every pair of
    training devices. With fewer than three devices there is nothing to learn: all weights 0
    (every member counts the same).
    """
    vectors = np.vstack([m.vector for m in members])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature no device has: centered at 0
        center = np.nanmean(np.where(np.isfinite(vectors), vectors, np.nan), axis=0)
    center = np.where(np.isfinite(center), center, 0.0)
    vectors = np.where(np.isfinite(vectors), vectors, center)
    for m, v in zip(members, vectors, strict=True):
        m.vector = v
    scale = vectors.std(axis=0) if len(members) > 1 else np.ones(vectors.shape[1])
    scale = np.where(scale > 1e-9, scale, 1.0)
    d = vectors.shape[1]
    rows, ys = [], []
    for i in range(len(members)):
        for j in range(i + 1, len(members)):
            vals = [a for a in (agreement[i, j], agreement[j, i]) if a == a]
            if not vals:
                continue
            rows.append(np.abs(vectors[i] - vectors[j]) / scale)
            ys.append(float(np.mean(vals)))
    if len(rows) < 3:
        return np.zeros(d), float(np.mean(ys)) if ys else 0.5, scale, center
    a = np.array(rows)
    y = np.array(ys)
    # Variables (a+, a-, b_1..b_d) >= 0; agreement = a+ - a- - b . diff.
    design = np.column_stack([np.ones(len(y)), -np.ones(len(y)), -a])
    sol, _ = nnls(design, y)
    return sol[2:], float(sol[0] - sol[1]), scale, center
