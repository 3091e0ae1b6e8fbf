"""Training sentences from tuning records: the TLM recipe's two corpora.

Records are grouped by problem instance (``TuningRecord.group``: one device, kernel, shape).
- Pre-training: configs sampled uniformly from each group's valid set, quality ``q=any``: the
  grammar (which values go together) without any claim about speed.
- Fine-tuning: the measured configs, each with the quality word of its rank band in its group
  (``q=0`` is the best half percent, at least one config); the best 5% are all kept and weighted
  by how close they are to the optimum, the other bands and the failures are subsampled, so the
  model also learns what to avoid.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tritune.llm_advisor._language import ANY, FAIL, LEVELS, Sentence, sentence
from tritune.llm_advisor._options import CorpusOptions
from tritune.search_space import (
    KERNELS,
    Hardware,
    SearchSpace,
    TuningRecord,
    Value,
    space_for,
    spec_from_dict,
)


@dataclass
class Group:
    """The records of one problem instance, with what the language needs to write them."""

    key: str
    hardware: Hardware
    kernel: str
    problem: Mapping[str, Any]
    names: tuple[str, ...]
    measured: list[tuple[dict[str, Value], float | None]] = field(default_factory=list)

    @property
    def optimum(self) -> float | None:
        times = [t for _, t in self.measured if t is not None]
        return min(times) if times else None


def group_records(records: Iterable[TuningRecord]) -> list[Group]:
    """Records -> groups, parameter order taken from the kernel's space when tritune knows it."""
    groups: dict[str, Group] = {}
    for r in records:
        g = groups.get(r.group)
        if g is None:
            g = groups[r.group] = Group(r.group, r.hardware, r.kernel, dict(r.problem), _param_order(r))
        ok = r.status == "ok" and r.time_ms is not None and math.isfinite(r.time_ms)
        g.measured.append((dict(r.config), float(r.time_ms) if ok else None))
    return list(groups.values())


def _param_order(r: TuningRecord) -> tuple[str, ...]:
    space = record_space(r.kernel, r.problem, r.hardware)
    return space.names if space is not None else tuple(r.config)


def record_space(kernel: str, problem: Mapping[str, Any], hw: Hardware) -> SearchSpace | None:
    """The space of a tritune kernel's problem, or None for other kernels (recorded landscapes)."""
    if kernel not in KERNELS:
        return None
    try:
        return space_for(spec_from_dict(kernel, problem), hw)
    except (ValueError, TypeError):
        return None


def quality_words(group: Group, options: CorpusOptions) -> list[tuple[dict[str, Value], str, float]]:
    """(config, quality word, weight) for every measured config of ``group``."""
    if len(options.quality_cuts) >= len(LEVELS):
        raise ValueError(f"quality_cuts has {len(options.quality_cuts)} bands; at most {len(LEVELS) - 1} fit the vocabulary")
    ok = sorted(((c, t) for c, t in group.measured if t is not None), key=lambda ct: ct[1])
    out: list[tuple[dict[str, Value], str, float]] = []
    if ok:
        best, n = ok[0][1], len(ok)
        cuts = [max(1, math.ceil(f * n)) for f in options.quality_cuts]
        keep = max(1, math.ceil(options.keep_all_below * n))
        for rank, (config, t) in enumerate(ok):
            weight = (best / t) ** options.top_weight_power if rank < keep else 1.0
            out.append((config, LEVELS[sum(rank >= c for c in cuts)], weight))
    out.extend((c, FAIL, 1.0) for c, t in group.measured if t is None)
    return out


def band_values(options: CorpusOptions) -> dict[str, float]:
    """How good a quality word is: -ln of its band's middle rank fraction (failures: 0)."""
    edges = [0.0, *options.quality_cuts, 1.0]
    values = {LEVELS[i]: -math.log((edges[i] + edges[i + 1]) / 2) for i in range(len(edges) - 1)}
    values[FAIL] = 0.0
    return values


def finetune_sentences(groups: Sequence[Group], options: CorpusOptions) -> list[tuple[Sentence, float]]:
    rng = random.Random(options.seed)
    out: list[tuple[Sentence, float]] = []
    for g in groups:
        ok = sum(t is not None for _, t in g.measured)
        keep = max(1, math.ceil(options.keep_all_below * ok))
        kept: list[tuple[dict[str, Value], str, float]] = []
        rest: dict[str, list[tuple[dict[str, Value], str, float]]] = defaultdict(list)
        for i, item in enumerate(quality_words(g, options)):
            (kept if i < keep else rest[item[1]]).append(item)
        for items in rest.values():
            kept.extend(rng.sample(items, min(len(items), options.per_band)))
        out.extend((sentence(g.hardware, g.kernel, g.problem, c, g.names, word), w) for c, word, w in kept)
    return out


def pretrain_sentences(groups: Sequence[Group], options: CorpusOptions,
                       extra: Sequence[tuple[Hardware, str, Mapping[str, Any], SearchSpace]] = ()) -> list[tuple[Sentence, float]]:
    """Sampled valid configs of every group (its recorded configs, or its space) and of ``extra``."""
    rng = random.Random(options.seed + 1)
    out: list[tuple[Sentence, float]] = []
    for g in groups:
        space = record_space(g.kernel, g.problem, g.hardware)
        pool = [c for c, _ in g.measured] if space is None else space.enumerate(limit=50_000)
        for c in rng.sample(pool, min(len(pool), options.pretrain_per_group)):
            out.append((sentence(g.hardware, g.kernel, g.problem, c, g.names, ANY), 1.0))
    for hw, kernel, problem, space in extra:
        pool = space.enumerate(limit=50_000)
        for c in rng.sample(pool, min(len(pool), options.pretrain_per_group)):
            out.append((sentence(hw, kernel, problem, c, space.names, ANY), 1.0))
    return out
