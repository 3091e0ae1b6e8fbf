"""The causal language model: a small GPT-2 trained from scratch on tensor-language sentences.

The CONFIG words and the closing QUALITY word carry loss; the context (hardware, problem) is given
at query time, so the model learns ``P(config | context)`` and ``P(quality | context, config)``.
Context words are dropped to their slot's unknown word at random while training, so an unseen
device's unknown words mean "some device like the others" rather than noise the model never saw.

Training is cheap on a CPU because all sentences of one problem share their context: a batch
holds one problem's sentences, the context runs once and its keys/values are reused by every row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from tritune.llm_advisor._language import (
    ANY,
    PAD,
    QUALITIES,
    SPECIALS,
    Sentence,
    Vocabulary,
    unknown_word,
)
from tritune.llm_advisor._options import TrainOptions

log = logging.getLogger(__name__)


class TensorLM:
    """A GPT-2 LM plus its vocabulary; trains, scores and saves itself."""

    def __init__(self, vocab: Vocabulary, model: GPT2LMHeadModel, meta: dict[str, Any] | None = None) -> None:
        self.vocab = vocab
        self.model = model
        self.meta = dict(meta or {})
        self.model.eval()

    @classmethod
    def fresh(cls, vocab: Vocabulary, options: TrainOptions, max_len: int) -> TensorLM:
        torch.manual_seed(options.seed)
        config = GPT2Config(
            vocab_size=len(vocab), n_positions=max(64, max_len), n_embd=options.n_embd, n_layer=options.n_layer,
            n_head=options.n_head, resid_pdrop=options.dropout, embd_pdrop=options.dropout,
            attn_pdrop=options.dropout, bos_token_id=vocab.id("<bos>"), eos_token_id=vocab.id("<eos>"),
            pad_token_id=vocab.id(PAD), activation_function="relu",
        )
        return cls(vocab, GPT2LMHeadModel(config), {"train_options": asdict(options)})

    # --- training ---------------------------------------------------------------------------
    def fit(self, pretrain: Sequence[tuple[Sentence, float]], finetune: Sequence[tuple[Sentence, float]],
            options: TrainOptions, progress: Callable[[str, int, int, float], None] | None = None) -> dict[str, float]:
        """Pre-train on ``pretrain``, then fine-tune on ``finetune``; returns timings and losses.

        ``options.finetune_steps`` must be resolved (``TrainOptions.resolved``)."""
        if options.finetune_steps is None:
            raise ValueError("finetune_steps is None: resolve the options for the number of problems first")
        torch.set_num_threads(max(1, options.threads))
        torch.manual_seed(options.seed)
        rng = random.Random(options.seed)
        dropper = _WordDropper(self.vocab, options)
        opt = torch.optim.AdamW(self.model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        stats: dict[str, float] = {}
        t0 = time.perf_counter()
        self.model.train()
        total = options.pretrain_steps + options.finetune_steps
        step = 0
        any_id = self.vocab.id(ANY)
        for phase, data, steps in (("pretrain", pretrain, options.pretrain_steps), ("finetune", finetune, options.finetune_steps)):
            if not data or steps <= 0:
                continue
            batches = _GroupBatches(self.vocab, data, options.batch_size, rng)
            ema = None
            for _ in range(steps):
                prefix, suffix, weights = batches.next()
                prefixes = dropper(prefix, options.prefix_variants, rng)
                lr = options.lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / total))
                for group in opt.param_groups:
                    group["lr"] = lr
                logp = self._logprobs(prefixes, suffix)[:, :-1]  # position i predicts suffix[:, i]
                nll = -logp.gather(-1, suffix.unsqueeze(-1)).squeeze(-1)
                graded = (suffix[:, -1] != any_id).float()  # unmeasured configs have no quality to learn
                per_row = nll[:, :-1].sum(1) + options.quality_weight * graded * nll[:, -1]
                loss = (per_row * weights).sum() / weights.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                opt.step()
                ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
                step += 1
                if progress:
                    progress(phase, step, total, ema)
            stats[f"{phase}_loss"] = float(ema or 0.0)
        self.model.eval()
        stats["train_seconds"] = time.perf_counter() - t0
        self.meta.setdefault("training", {}).update(stats)
        self.meta["train_options"] = asdict(options)
        return stats

    def _logprobs(self, prefixes: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
        """``[rows, len(suffix) + 1, vocab]`` next-word log-probabilities: position i predicts
        ``suffix[:, i]`` (position 0 from the prefix), the last position the word after the suffix.

        The prefixes (``variants`` of one context, shared by the batch) run once each; their
        keys/values are repeated over ``rows // variants`` consecutive rows.
        """
        variants, rows = prefixes.shape[0], suffix.shape[0]
        out = self.model(prefixes, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(rows // variants)
        first = out.logits[:, -1:].repeat_interleave(rows // variants, dim=0)
        mask = torch.ones((rows, prefixes.shape[1] + suffix.shape[1]), dtype=torch.long)
        logits = torch.cat([first, self.model(suffix, cache, mask).logits], dim=1)
        return torch.log_softmax(logits.float(), dim=-1)

    # --- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, context: Sequence[str], candidates: Sequence[Sequence[int]], qualities: Sequence[str] = (),
              *, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """For config word ids ``candidates`` after ``context``: the log-probability of each config
        ``[N]`` and the log-probabilities of each word of ``qualities`` after it ``[N, Q]``."""
        q_ids = [self.vocab.id(q) for q in qualities]
        if not candidates:
            return torch.empty(0), torch.empty(0, len(q_ids))
        pre = torch.tensor([self.vocab.encode(context)])
        cands = torch.tensor([list(c) for c in candidates])
        config_lp, quality_lp = [], []
        for start in range(0, len(cands), chunk):
            body = cands[start:start + chunk]
            logp = self._logprobs(pre, body)
            config_lp.append(logp[:, :-1].gather(-1, body.unsqueeze(-1)).squeeze(-1).sum(1))
            quality_lp.append(logp[:, -1, q_ids])
        return torch.cat(config_lp), torch.cat(quality_lp)

    # --- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with _quiet():
            self.model.save_pretrained(d, safe_serialization=True)
        self.vocab.save(d / "vocab.json")
        (d / "advisor.json").write_text(json.dumps(self.meta, indent=1, sort_keys=True, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> TensorLM:
        d = Path(directory)
        missing = [f for f in ("config.json", "model.safetensors", "vocab.json") if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"advisor checkpoint {d} lacks {missing}; train one with 'tritune advisor train'")
        with _quiet():
            model = GPT2LMHeadModel.from_pretrained(d, local_files_only=True)
        vocab = Vocabulary.load(d / "vocab.json")
        if model.config.vocab_size != len(vocab):
            raise ValueError(f"advisor checkpoint {d}: model has {model.config.vocab_size} words, vocab.json {len(vocab)}")
        meta = json.loads((d / "advisor.json").read_text()) if (d / "advisor.json").exists() else {}
        return cls(vocab, model, meta)


class _GroupBatches:
    """Minibatches that share one prefix: sentences of one problem (hardware + kernel + shape).

    A step draws a problem with probability proportional to its number of sentences, then that
    problem's next rows in a shuffled cycle, so an epoch still sees every sentence once.
    """

    def __init__(self, vocab: Vocabulary, data: Sequence[tuple[Sentence, float]], batch_size: int, rng: random.Random) -> None:
        self.rng = rng
        self.batch_size = batch_size
        by_prefix: dict[tuple[str, ...], list[tuple[list[int], float]]] = {}
        for s, w in data:
            by_prefix.setdefault(s.context, []).append((vocab.encode((*s.config, s.quality)), w))
        self.prefixes = [torch.tensor(vocab.encode(p)) for p in by_prefix]
        self.rows = list(by_prefix.values())
        for rows in self.rows:
            if len({len(r[0]) for r in rows}) != 1:
                raise ValueError("sentences of one problem must have one config length (one parameter list)")
        self.sizes = [len(r) for r in self.rows]
        self.cursor = [0] * len(self.rows)
        self.order = [list(range(n)) for n in self.sizes]
        for o in self.order:
            rng.shuffle(o)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.rng.choices(range(len(self.rows)), weights=self.sizes)[0]
        picked = []
        while len(picked) < self.batch_size:
            if self.cursor[g] >= self.sizes[g]:
                self.rng.shuffle(self.order[g])
                self.cursor[g] = 0
            picked.append(self.rows[g][self.order[g][self.cursor[g]]])
            self.cursor[g] += 1
        suffix = torch.tensor([r[0] for r in picked])
        weights = torch.tensor([r[1] for r in picked], dtype=torch.float)
        return self.prefixes[g], suffix, weights


class _WordDropper:
    """Context words -> their slot's unknown word at random (the device name more often).

    Of the prefix variants in a batch, the first is intact and the second has every hardware word
    unknown: the model learns what a problem's configs are like on *any* device (the consensus
    the advisor falls back on for a device unlike all it saw), the others drop words at random.
    """

    def __init__(self, vocab: Vocabulary, options: TrainOptions) -> None:
        unknown, prob = [], []
        for i, w in enumerate(vocab.words):
            keep = w in SPECIALS or w in QUALITIES or w.startswith(("c.", "kernel="))
            unknown.append(i if keep else vocab.id(unknown_word(w)))
            prob.append(0.0 if keep else options.name_dropout if w.startswith("hw.name=") else options.word_dropout)
        self.unknown = torch.tensor(unknown)
        self.prob = torch.tensor(prob)
        self.hardware = torch.tensor([w.startswith("hw.") for w in vocab.words])

    def __call__(self, prefix: torch.Tensor, variants: int, rng: random.Random) -> torch.Tensor:
        """``variants`` copies of ``prefix``, the first intact, the others with dropped words."""
        gen = torch.Generator().manual_seed(rng.randrange(2**31))
        rows = prefix.expand(variants, -1)
        drop = torch.rand(rows.shape, generator=gen) < self.prob[rows]
        drop[0] = False
        if variants > 1:
            drop[1] = self.hardware[rows[1]]
        return torch.where(drop, self.unknown[rows], rows)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No transformers progress bars while saving/loading a checkpoint of a few hundred KB."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def sentence_length(sentences: Sequence[Sentence]) -> int:
    return max((len(s.words) for s in sentences), default=0)

