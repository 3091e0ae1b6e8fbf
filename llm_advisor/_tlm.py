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
    band_values,
    finetune_sentences,
    group_records,
    pretrain_sentences,
)
from tritune.llm_advisor._generate import diversify, propose
from tritune.llm_advisor._language import Vocabulary, config_word, sentence, unknown_word
from tritune.llm_advisor._model import TensorLM, sentence_length
from tritune.llm_advisor._options import CorpusOptions, TrainOptions
from tritune.search_space import Hardware, SearchSpace, TuningRecord, Value, config_key

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoint"
RANKINGS = ("blend", "expected", "likelihood")


class TLMAdvisor(Advisor):
    """Proposes the configs its language model expects to be the fastest.

    ``ranking``:
    - "expected": the config's expected quality band on this device, from the probabilities of
      the quality words the model writes after the config (band values: -ln of the band's
      middle rank fraction, so q=0 is worth ~6 and a failure 0);
    - "blend" (default): for a device the model never saw measured on this kernel, the mean of
      "expected" on this device and on an unknown device (every hardware word unknown: the
      consensus of all devices seen in training), a hedge against a new device that is unlike
      the devices its words make it resemble; for a device it was trained on, "expected";
    - "likelihood": ``log P(config | context)``, the plain TLM generator's score.
    ``Proposal.score`` is the ranking value. ``method``: "auto" (exhaustive when the valid set
    has at most ``max_exhaustive`` configs, else constrained beam search), "exhaustive", "beam".

    With ``min_evidence`` or more successful measurements of the target in ``measured``, the
    ranking conditions on them: each hypothesis about the target (its own words, an unknown
    device, or "like training device X") is weighted by how well its expected bands order the
    measured times (Spearman correlation, sharpened as evidence grows), and configs are ranked
    by the weighted mix. This is how the advisor keeps helping after the first measurements.

    ``diverse`` (default): the k proposals are a portfolio drawn from the ranking's top
    ``diverse_top`` share of the valid set (at least 2k; see ``diversify``): the first is the
    best, every second one after it differs from the others in a third of the parameters, so
    their scores are not monotone. From the top 2k alone, the candidates were near-copies and
    "a third of the parameters that vary among them" meant one or two flags (A100 convolution:
    all 16 proposals use_shmem=0, tile_size_y=4); from the top 5% a far pick leaves the region.
    """

    def __init__(self, lm: TensorLM, *, method: str = "auto", ranking: str = "blend",
                 max_exhaustive: int = 20_000, min_evidence: int = 3, diverse: bool = True,
                 diverse_top: float = 0.05) -> None:
        if method not in ("auto", "exhaustive", "beam"):
            raise ValueError(f"method={method!r} is not one of auto, exhaustive, beam")
        if ranking not in RANKINGS:
            raise ValueError(f"ranking={ranking!r} is not one of {', '.join(RANKINGS)}")
        self.lm = lm
        self.method = method
        self.ranking = ranking
        self.max_exhaustive = max_exhaustive
        self.min_evidence = min_evidence
        self.diverse = diverse
        self.diverse_top = diverse_top
        self.last_weights: dict[str, float] = {}  # hypothesis -> weight of the last conditioned ranking
        corpus = CorpusOptions(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in lm.meta.get("corpus_options", {}).items()})
        self.values = band_values(corpus)

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, **kwargs: Any) -> TLMAdvisor:
        """The advisor in ``checkpoint`` (default: the one shipped in the package)."""
        return cls(TensorLM.load(checkpoint or DEFAULT_CHECKPOINT), **kwargs)

    def propose(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace, k: int,
                *, measured: Sequence[tuple[Mapping[str, Value], float | None]] = ()) -> list[Proposal]:
        if k <= 0:
            return []
        context = sentence(hardware, kernel, problem, None, space.names).context
        ok = [(c, t) for c, t in measured if t is not None and t > 0 and space.is_valid(c)]
        self.last_weights = {}
        if not self.knows(kernel):
            return self._grammar_only(context, space, k, measured)
        rank = self._ranker(context, seen=self.seen(hardware, kernel))
        if len(ok) >= self.min_evidence and self.ranking != "likelihood":
            rank = self._conditioned(hardware, kernel, problem, space, context, measured)
        done = [c for c, _ in measured]
        found = propose(self.lm, context, space, 2 * k if self.diverse else k, rank, done,
                        max_exhaustive=self.max_exhaustive, method=self.method,
                        share=self.diverse_top if self.diverse else 0.0)
        if self.diverse:
            found = diversify(found, k, done)
        return [Proposal(config, score) for config, score in found]

    def score(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
              configs: Sequence[Mapping[str, Value]], *,
              measured: Sequence[tuple[Mapping[str, Value], float | None]] = ()) -> list[float] | None:
        """The ranking value ``propose`` would give each config (higher = faster; see the class doc).

        With ranking "expected"/"blend" it is an expected quality band value, about -ln of the
        config's rank fraction on the target (0 = a failure, ~6 = the best 0.5%). None for a
        kernel the model never saw measured (its likelihood says what is valid, not what is fast).
        """
        if not self.knows(kernel):
            return None
        if not configs:
            return []
        context = sentence(hardware, kernel, problem, None, space.names).context
        rank = self._ranker(context, seen=self.seen(hardware, kernel))
        ok = [(c, t) for c, t in measured if t is not None and t > 0 and space.is_valid(c)]
        if len(ok) >= self.min_evidence and self.ranking != "likelihood":
            rank = self._conditioned(hardware, kernel, problem, space, context, measured)
        ids = [[self.lm.vocab.id(config_word(n, c[n])) for n in space.names] for c in configs]
        with torch.no_grad():
            return [float(v) for v in rank(ids)]

    def knows(self, kernel: str) -> bool:
        """Whether the model was trained on measurements of ``kernel`` (on any device)."""
        return bool(self.lm.meta.get("devices", {}).get(kernel))

    def _grammar_only(self, context: Sequence[str], space: SearchSpace, k: int,
                      measured: Sequence[tuple[Mapping[str, Value], float | None]]) -> list[Proposal]:
        """A kernel never measured: the model knows its grammar, not its speed. The space's
        default (the config that always works) comes first, then the model's likeliest configs."""
        log.info("advisor: no measurements of %s in training; proposing its default, then likely configs", space.name)
        done = {config_key(c) for c, _ in measured}
        out: list[Proposal] = []
        default = space.default()
        if config_key(default) not in done and space.is_valid(default):
            out.append(Proposal(default, 0.0))
            done.add(config_key(default))
        found = propose(self.lm, context, space, k - len(out), lambda ids: self.lm.score(context, ids)[0],
                        [*(c for c, _ in measured), *(p.config for p in out)],
                        max_exhaustive=self.max_exhaustive, method=self.method)
        return out + [Proposal(c, s) for c, s in found]

    def _conditioned(self, hardware: Hardware, kernel: str, problem: Mapping[str, Any], space: SearchSpace,
                     context: Sequence[str], measured: Sequence[tuple[Mapping[str, Value], float | None]],
                     ) -> Callable[[Sequence[Sequence[int]]], torch.Tensor]:
        hypotheses = {"this device": list(context),
                      "any device": [unknown_word(w) if w.startswith("hw.") else w for w in context]}
        for hw in self.lm.meta.get("devices", {}).get(kernel, []):
            other = Hardware.from_dict(hw)
            if other.key != hardware.key:
                hypotheses[f"like {other.name}"] = list(sentence(other, kernel, problem, None, space.names).context)
        valid = [(c, t) for c, t in measured if space.is_valid(c)]
        ids = [[self.lm.vocab.id(config_word(n, c[n])) for n in space.names] for c, _ in valid]
        # Failed configs rank below every success.
        speed = torch.tensor([-math.log(t) if t is not None and t > 0 else -math.inf for _, t in valid])
        rho = {h: _spearman(self.expected(ctx, ids), speed) for h, ctx in hypotheses.items()}
        sharp = 2.0 * math.sqrt(len(valid))
        logits = torch.tensor([sharp * r for r in rho.values()])
        weights = dict(zip(rho, torch.softmax(logits, 0).tolist(), strict=True))
        used = {h: w for h, w in weights.items() if w >= 0.05}
        total = sum(used.values())
        self.last_weights = {h: w / total for h, w in used.items()}
        log.info("advisor: hypotheses %s", {h: round(w, 3) for h, w in self.last_weights.items()})
        return lambda cand: sum(w * self.expected(hypotheses[h], cand) for h, w in self.last_weights.items())

    def seen(self, hardware: Hardware, kernel: str) -> bool:
        """Whether the model was trained on measurements of ``kernel`` on this device."""
        return any(Hardware.from_dict(hw).key == hardware.key for hw in self.lm.meta.get("devices", {}).get(kernel, []))

    def _ranker(self, context: Sequence[str], *, seen: bool = False) -> Callable[[Sequence[Sequence[int]]], torch.Tensor]:
        if self.ranking == "likelihood":
            return lambda ids: self.lm.score(context, ids)[0]
        if self.ranking == "expected" or seen:
            return lambda ids: self.expected(context, ids)
        anonymous = [unknown_word(w) if w.startswith("hw.") else w for w in context]
        return lambda ids: (self.expected(context, ids) + self.expected(anonymous, ids)) / 2

    def expected(self, context: Sequence[str], ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Expected band value of each candidate (config word ids) after ``context``."""
        words = list(self.values)
        values = torch.tensor([self.values[w] for w in words])
        _, quality = self.lm.score(context, ids, words)
        return (torch.softmax(quality, dim=1) * values).sum(1)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation (ties broken by order); 0 when either side is constant."""
    ra = torch.argsort(torch.argsort(a, stable=True)).float()
    rb = torch.argsort(torch.argsort(b, stable=True)).float()
    if len(a) < 2 or float(ra.std()) == 0 or float(rb.std()) == 0:
        return 0.0
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def train(records: Sequence[TuningRecord], *, corpus: CorpusOptions | None = None, options: TrainOptions | None = None,
          spaces: Sequence[tuple[Hardware, str, Mapping[str, Any], SearchSpace]] = (),
          progress: Callable[[str, int, int, float], None] | None = None) -> TensorLM:
    """Train a TensorLM from scratch on ``records`` (pre-train, then fine-tune).

    ``spaces`` adds (hardware, kernel, problem, space) for which there are no measurements yet:
    their values enter the vocabulary and their sampled configs the pre-training corpus, so the
    model writes their grammar (the attention kernels' spaces, before a GPU measured them).
    """
    corpus = corpus or CorpusOptions()
    groups = group_records(records)
    options = (options or TrainOptions()).resolved(sum(g.optimum is not None for g in groups))
    if not groups and not spaces:
        raise ValueError("no training records and no spaces: nothing to train the advisor on")
    pre = pretrain_sentences(groups, corpus, spaces)
    fine = finetune_sentences(groups, corpus)
    vocab = Vocabulary.build([s for s, _ in (*pre, *fine)], [s for *_, s in spaces])
    lm = TensorLM.fresh(vocab, options, sentence_length([s for s, _ in (*pre, *fine)]))
    log.info("advisor: %d groups, %d pre-training and %d fine-tuning sentences, %d words",
             len(groups), len(pre), len(fine), len(vocab))
    devices: dict[str, dict[str, Hardware]] = {}
    for g in groups:
        devices.setdefault(g.kernel, {})[g.hardware.key] = g.hardware
    lm.meta.update({
        "corpus_options": asdict(corpus),
        "groups": sorted({g.key for g in groups}),
        # The measured devices per kernel: the hypotheses "the target behaves like device X" that
        # measurements on the target can confirm (see TLMAdvisor.propose).
        "devices": {k: [hw.to_dict() for hw in v.values()] for k, v in devices.items()},
        "sentences": {"pretrain": len(pre), "finetune": len(fine)},
    })
    lm.fit(pre, fine, options, progress)
    return lm


# Devices and shapes whose attention spaces the advisor is pre-trained on: the grammar of the
# attention kernels (which values go together, what shared memory allows) before any GPU
# measured them. Representative, not exhaustive: unseen shapes use their slots' unknown words.
# The shipped checkpoint predates varlen_attention: it proposes that family's default first and
# learns its words when retrained (``tritune advisor train``).
_ATTENTION_DEVICES = ("H100", "A100", "L40S", "MI250X")
_ATTENTION_SHAPES = {
    "flash_attention": ("B=1,Hq=32,Hkv=8,seq=2048,D=128,dtype=bf16,causal=1",
                        "B=4,Hq=16,Hkv=16,seq=512,D=64,dtype=fp16,causal=0",
                        "B=1,Hq=8,Hkv=1,seq=8192,D=256,dtype=bf16,causal=1"),
    "paged_attention": ("S=16,Hq=32,Hkv=8,D=128,ctx=4096,block_size=16,dtype=bf16",
                        "S=64,Hq=8,Hkv=1,D=64,ctx=1024,block_size=32,dtype=fp16",
                        "S=1,Hq=32,Hkv=32,D=256,ctx=32768,block_size=16,dtype=bf16"),
    # Serving steps: 64 decode rows + a 512-token chunk, pure decode, speculative rows with a
    # sliding window and sinks (gpt-oss style), a Gemma-2 style softcapped window on FP8 pages.
    "varlen_attention": ("S=65,T=576,Sq=512,ctx=8192,Hq=32,Hkv=8,D=128,block_size=16,dtype=bf16",
                         "S=8,T=8,Sq=1,ctx=4096,Hq=32,Hkv=8,D=128,block_size=16,dtype=bf16",
                         "S=16,T=64,Sq=4,ctx=2048,Hq=64,Hkv=8,D=64,block_size=16,dtype=bf16,left=127,sinks=1",
                         "S=4,T=1028,Sq=1024,ctx=4096,Hq=16,Hkv=8,D=256,block_size=32,dtype=bf16,"
                         "kv_dtype=fp8,left=4095,softcap=1"),
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
