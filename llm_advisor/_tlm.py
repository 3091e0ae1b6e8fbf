"""The tensor-language-model advisor: train from records, propose from a checkpoint."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tritune.llm_advisor._base import Advisor, Proposal
from tritune.llm_advisor._corpus import (
    band_priors,
    band_values,
    finetune_sentences,
    group_records,
    pretrain_sentences,
)
from tritune.llm_advisor._generate import propose
from tritune.llm_advisor._language import TOP, Vocabulary, sentence
from tritune.llm_advisor._model import TensorLM, sentence_length
from tritune.llm_advisor._options import CorpusOptions, TrainOptions
from tritune.search_space import Hardware, SearchSpace, TuningRecord, Value

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoint"


class TLMAdvisor(Advisor):
    """Proposes the configs its language model expects to be the fastest.

    ``ranking``: "expected" (default) ranks a config by its expected quality band, from the
    model's probability of the config under every band (Bayes with the bands' sizes as priors):
    a config that is good on every similar device beats one that is the best on one device and
    bad elsewhere. "likelihood" ranks by ``log P(config | q=0)`` alone (plain TLM decoding).
    ``Proposal.score`` is the ranking value. ``method``: "auto" (exhaustive when the valid set
    has at most ``max_exhaustive`` configs, else constrained beam search), "exhaustive", "beam".
    """

    def __init__(self, lm: TensorLM, *, method: str = "auto", ranking: str = "expected",
                 max_exhaustive: int = 20_000) -> None:
        if method not in ("auto", "exhaustive", "beam"):
            raise ValueError(f"method={method!r} is not one of auto, exhaustive, beam")
        if ranking not in ("expected", "likelihood"):
            raise ValueError(f"ranking={ranking!r} is not one of expected, likelihood")
        self.lm = lm
        self.method = method
        self.ranking = ranking
        self.max_exhaustive = max_exhaustive
        corpus = CorpusOptions(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in lm.meta.get("corpus_options", {}).items()})
        self.priors = band_priors(corpus)
        self.values = band_values(corpus)

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, **kwargs: Any) -> TLMAdvisor:
        """The advisor in ``checkpoint`` (default: the one shipped in the package)."""
        return cls(TensorLM.load(checkpoint or DEFAULT_CHECKPOINT), **kwargs)

    def propose(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace, k: int,
                *, measured: Sequence[tuple[Mapping[str, Value], float | None]] = ()) -> list[Proposal]:
        if k <= 0:
            return []
        context = sentence(hardware, kernel, problem, None, space.names, TOP).context
        found = propose(self.lm, context, space, k, self._ranker(context[:-1]), [c for c, _ in measured],
                        max_exhaustive=self.max_exhaustive, method=self.method)
        return [Proposal(config, score) for config, score in found]

    def _ranker(self, prefix: Sequence[str]) -> Callable[[Sequence[Sequence[int]]], torch.Tensor]:
        if self.ranking == "likelihood":
            return lambda ids: self.lm.score_qualities(prefix, [TOP], ids)[0]
        words = list(self.priors)
        log_prior = torch.tensor([math.log(self.priors[w]) for w in words]).unsqueeze(1)
        values = torch.tensor([self.values[w] for w in words]).unsqueeze(1)

        def expected(ids: Sequence[Sequence[int]]) -> torch.Tensor:
            joint = self.lm.score_qualities(prefix, words, ids) + log_prior
            return (torch.softmax(joint, dim=0) * values).sum(0)

        return expected


def train(records: Sequence[TuningRecord], *, corpus: CorpusOptions | None = None, options: TrainOptions | None = None,
          spaces: Sequence[tuple[Hardware, str, Mapping[str, Any], SearchSpace]] = (),
          progress: Callable[[str, int, int, float], None] | None = None) -> TensorLM:
    """Train a TensorLM from scratch on ``records`` (pre-train, then fine-tune).

    ``spaces`` adds (hardware, kernel, problem, space) for which there are no measurements yet:
    their values enter the vocabulary and their sampled configs the pre-training corpus, so the
    model writes their grammar (the attention kernels' spaces, before a GPU measured them).
    """
    corpus = corpus or CorpusOptions()
    options = options or TrainOptions()
    groups = group_records(records)
    if not groups and not spaces:
        raise ValueError("no training records and no spaces: nothing to train the advisor on")
    pre = pretrain_sentences(groups, corpus, spaces)
    fine = finetune_sentences(groups, corpus)
    vocab = Vocabulary.build([s for s, _ in (*pre, *fine)], [s for *_, s in spaces])
    lm = TensorLM.fresh(vocab, options, sentence_length([s for s, _ in (*pre, *fine)]))
    log.info("advisor: %d groups, %d pre-training and %d fine-tuning sentences, %d words",
             len(groups), len(pre), len(fine), len(vocab))
    lm.meta.update({
        "corpus_options": asdict(corpus),
        "groups": sorted({g.key for g in groups}),
        "sentences": {"pretrain": len(pre), "finetune": len(fine)},
    })
    lm.fit(pre, fine, options, progress)
    return lm


# Devices and shapes whose attention spaces the shipped checkpoint is pre-trained on: the grammar
# of the two attention kernels (which values go together, what shared memory allows) before any
# GPU measured them. Representative, not exhaustive: unseen shapes use their slots' unknown words.
_ATTENTION_DEVICES = ("H100", "A100", "L40S", "MI250X")
_ATTENTION_SHAPES = {
    "flash_attention": ("B=1,Hq=32,Hkv=8,seq=2048,D=128,dtype=bf16,causal=1",
                        "B=4,Hq=16,Hkv=16,seq=512,D=64,dtype=fp16,causal=0",
                        "B=1,Hq=8,Hkv=1,seq=8192,D=256,dtype=bf16,causal=1"),
    "paged_attention": ("S=16,Hq=32,Hkv=8,D=128,ctx=4096,block_size=16,dtype=bf16",
                        "S=64,Hq=8,Hkv=1,D=64,ctx=1024,block_size=32,dtype=fp16",
                        "S=1,Hq=32,Hkv=32,D=256,ctx=32768,block_size=16,dtype=bf16"),
}


def attention_spaces() -> list[tuple[Hardware, str, Mapping[str, Any], SearchSpace]]:
    """(hardware, kernel, problem, space) of the attention kernels for pre-training."""
    from tritune.search_space import space_for, spec_type

    out = []
    for device in _ATTENTION_DEVICES:
        hw = Hardware.from_spec(device)
        for kernel, shapes in _ATTENTION_SHAPES.items():
            for shape in shapes:
                spec = spec_type(kernel).parse(shape)
                out.append((hw, kernel, spec.to_dict(), space_for(spec, hw)))
    return out
