"""Constrained decoding: the model only ever writes configs the space accepts.

Two ways to get the top-k, both restricted to valid configs, both ranked by the advisor's
ranking function (the model's log-probability, or its expected quality band):

- **Exhaustive scoring** (the default when the valid set has at most ``max_exhaustive``
  configs): every valid config is scored by its exact log-probability and the k best are kept.
  This is the true top-k of the model's distribution restricted to the valid set; beam search
  only approximates it (it prunes prefixes by their partial score and loses configs whose first
  words are unlikely but whose whole is likely). Our spaces have at most ~11k valid configs and a
  batch forward over all of them takes about a second on one CPU core.
- **Beam search** with ``ValidPrefixProcessor`` (a transformers ``LogitsProcessor``) for larger
  spaces: at every step only words that extend the prefix towards a valid config keep their
  log-probability. Where the valid set can be enumerated the mask is exact (a prefix trie); for
  a space too large to enumerate the mask is the parameter's domain and complete configs are
  checked with ``space.validate`` afterwards. The beams' configs are then ranked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from tritune.llm_advisor._language import PAD, QUALITIES, Vocabulary, config_word
from tritune.llm_advisor._model import TensorLM
from tritune.search_space import SearchSpace, Value, config_key


@dataclass
class ValidSet:
    """The valid configs of a space, as values and as word ids (``None`` when not enumerated;
    ``ids`` without ``configs``: a listed set too large to score exhaustively)."""

    space: SearchSpace
    configs: list[dict[str, Value]] | None
    ids: list[tuple[int, ...]] | None

    @classmethod
    def of(cls, space: SearchSpace, vocab: Vocabulary, *, limit: int) -> ValidSet:
        if space.listed is not None:
            # A recording lists its valid configs: beyond ``limit`` they are not scored one by
            # one, but they still make the beam's prefix mask exact.
            configs = space.enumerate()
            ids = [tuple(vocab.id(config_word(n, c[n])) for n in space.names) for c in configs]
            return cls(space, configs, ids) if len(configs) <= limit else cls(space, None, ids)
        if space.cartesian_size > 4 * limit:
            return cls(space, None, None)
        configs = space.enumerate(limit=limit + 1)
        if len(configs) > limit:
            return cls(space, None, None)
        ids = [tuple(vocab.id(config_word(n, c[n])) for n in space.names) for c in configs]
        return cls(space, configs, ids)

    @property
    def exact(self) -> bool:
        return self.configs is not None


class ValidPrefixProcessor(LogitsProcessor):
    """Masks every word that cannot continue the generated prefix into a valid config.

    ``prompt_len`` is the length of the context; the generated words after it are the prefix.
    With an enumerated valid set the mask is exact; otherwise it is the next parameter's domain.
    After a complete config only quality words may follow (the sentence's last word).
    """

    def __init__(self, valid: ValidSet, vocab: Vocabulary, prompt_len: int) -> None:
        self.prompt_len = prompt_len
        self.after = sorted(vocab.id(q) for q in QUALITIES)
        self.domains = [sorted(set(vocab.value_ids(p.name, p.values))) for p in valid.space.params]
        self.trie: dict[tuple[int, ...], list[int]] | None = None
        if valid.ids is not None:
            children: dict[tuple[int, ...], set[int]] = {}
            for seq in valid.ids:
                for i in range(len(seq)):
                    children.setdefault(seq[:i], set()).add(seq[i])
            self.trie = {k: sorted(v) for k, v in children.items()}

    def allowed(self, prefix: tuple[int, ...]) -> list[int]:
        if len(prefix) >= len(self.domains):
            return self.after
        if self.trie is not None:
            return self.trie.get(prefix, [])
        return self.domains[len(prefix)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            prefix = tuple(input_ids[row, self.prompt_len:].tolist())
            mask[row, self.allowed(prefix)] = 0.0
        return scores + mask


Ranker = Callable[[Sequence[Sequence[int]]], torch.Tensor]  # candidates' word ids -> scores


def top_k_exhaustive(rank: Ranker, valid: ValidSet, k: int, exclude: set[str]) -> list[tuple[dict[str, Value], float]]:
    assert valid.configs is not None and valid.ids is not None
    keep = [i for i, c in enumerate(valid.configs) if config_key(c) not in exclude]
    if not keep:
        return []
    scores = rank([valid.ids[i] for i in keep])
    order = torch.argsort(scores, descending=True, stable=True)[:k].tolist()
    return [(dict(valid.configs[keep[j]]), float(scores[j])) for j in order]


def beam_candidates(lm: TensorLM, context: Sequence[str], valid: ValidSet, beams: int,
                    exclude: set[str]) -> list[tuple[dict[str, Value], tuple[int, ...]]]:
    """Up to ``beams`` distinct valid configs from constrained beam search after ``context``."""
    space = valid.space
    ctx = torch.tensor([lm.vocab.encode(context)])
    proc = ValidPrefixProcessor(valid, lm.vocab, ctx.shape[1])
    with torch.no_grad():
        out = lm.model.generate(
            input_ids=ctx, attention_mask=torch.ones_like(ctx), num_beams=beams, num_return_sequences=beams,
            max_new_tokens=len(space.params), do_sample=False, length_penalty=0.0, early_stopping=True,
            logits_processor=LogitsProcessorList([proc]), pad_token_id=lm.vocab.id(PAD), eos_token_id=None,
        )
    results: list[tuple[dict[str, Value], tuple[int, ...]]] = []
    seen = set(exclude)
    for seq in out:
        ids = tuple(seq[ctx.shape[1]:].tolist())
        try:
            config = lm.vocab.parse_config(lm.vocab.decode(ids), space)
        except ValueError:
            continue  # a beam that ran out of valid continuations (only with a domain-only mask)
        key = config_key(config)
        if key in seen or space.validate(config):
            continue
        seen.add(key)
        results.append((config, ids))
    return results


def propose(lm: TensorLM, context: Sequence[str], space: SearchSpace, k: int, rank: Ranker,
            measured: Sequence[Mapping[str, Value]] = (), *, max_exhaustive: int = 20_000,
            method: str = "auto", beam_width: int = 64, share: float = 0.0) -> list[tuple[dict[str, Value], float]]:
    """Top-k valid, distinct, not-yet-measured configs by ``rank`` (higher is better).

    ``share``: return at least that share of the valid set when it is enumerated (the candidates
    of ``diversify``), ranked the same way.

    Exhaustive: every valid config is ranked. Beam: constrained beam search after ``context``
    (the model's most likely configs) finds ``max(beam_width, 2k)`` candidates, which are then
    ranked like the exhaustive ones.
    """
    exclude = {config_key(m) for m in measured}
    valid = ValidSet.of(space, lm.vocab, limit=max_exhaustive)
    if method == "exhaustive" and not valid.exact:
        raise ValueError(f"method='exhaustive' needs an enumerable space; {space.name} has more than "
                         f"{max_exhaustive} valid configs (raise max_exhaustive or use method='beam')")
    if method == "beam" or (method == "auto" and not valid.exact):
        found = beam_candidates(lm, context, valid, max(beam_width, 2 * k), exclude)
        if not found:
            return []
        scores = rank([ids for _, ids in found])
        order = torch.argsort(scores, descending=True, stable=True)[:k].tolist()
        return [(found[j][0], float(scores[j])) for j in order]
    assert valid.configs is not None
    return top_k_exhaustive(rank, valid, max(k, round(share * len(valid.configs))), exclude)


def diversify(ranked: Sequence[tuple[dict[str, Value], float]], k: int,
              reference: Sequence[Mapping[str, Value]] = ()) -> list[tuple[dict[str, Value], float]]:
    """k of the ``ranked`` candidates (best first) as a portfolio rather than the plain top k.

    The first pick is the best candidate; every second pick after it is the best-ranked candidate
    that differs from every config picked so far (and from ``reference``, the configs already
    measured) in at least a third of the parameters that vary among the candidates; the others
    are the best remaining. The model's top configs are near-copies of each other, so on a device
    unlike its training devices they all miss together (leave-one-GPU-out, the best of ten rose
    from 0.906 to 0.927 on convolution and 0.967 to 0.981 on dedispersion, the first pick
    unchanged); the same rule as the cost-model search's diverse picks.
    """
    if len(ranked) <= k:
        return list(ranked)
    names = list(ranked[0][0])
    varying = [n for n in names if len({c[n] for c, _ in ranked}) > 1]
    need = max(1, -(-len(varying) // 3))
    picked: list[tuple[dict[str, Value], float]] = []
    seen = [*reference]
    rest = list(ranked)
    while rest and len(picked) < k:
        choice = 0
        if len(picked) % 2 == 1:
            far = (i for i, (c, _) in enumerate(rest)
                   if all(sum(c[n] != o.get(n) for n in varying) >= need for o in seen))
            choice = next(far, 0)
        config, score = rest.pop(choice)
        picked.append((config, score))
        seen.append(config)
    return picked
