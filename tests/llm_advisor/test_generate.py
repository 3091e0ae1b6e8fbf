"""Constrained decoding never yields an invalid, duplicate or already-measured config."""

from __future__ import annotations

import dataclasses
import itertools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritune.llm_advisor import (
    TensorLM,
    TLMAdvisor,
    TrainOptions,
    ValidPrefixProcessor,
    ValidSet,
    Vocabulary,
    sentence,
)
from tritune.llm_advisor._language import QUALITIES, config_word
from tritune.search_space import Constraint, Hardware, Param, SearchSpace, config_key

HW = Hardware.from_spec("A100")


@st.composite
def spaces(draw):
    """A small space whose valid set is an arbitrary non-empty subset of the Cartesian product."""
    n_params = draw(st.integers(2, 4))
    params = tuple(Param(f"p{i}", tuple(draw(st.lists(st.integers(0, 64), min_size=1, max_size=4, unique=True))))
                   for i in range(n_params))
    names = [p.name for p in params]
    product = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(p.values for p in params))]
    valid_flags = draw(st.lists(st.booleans(), min_size=len(product), max_size=len(product)))
    if not any(valid_flags):
        valid_flags[draw(st.integers(0, len(product) - 1))] = True
    valid = {config_key(c) for c, ok in zip(product, valid_flags, strict=True) if ok}
    space = SearchSpace("random", params, (Constraint("subset", lambda v: None if config_key(v) in valid else "not allowed"),))
    measured = [c for c in product if config_key(c) in valid and draw(st.booleans())]
    return space, valid, measured


def _random_lm(space: SearchSpace, seed: int) -> TensorLM:
    ctx = sentence(HW, "random", {}, space.enumerate()[0], space.names)
    vocab = Vocabulary.build([ctx], [space])
    return TensorLM.fresh(vocab, TrainOptions(n_embd=16, n_layer=1, n_head=2, seed=seed), 64)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=spaces(), seed=st.integers(0, 1000), k=st.integers(1, 12),
       method=st.sampled_from(["exhaustive", "beam", "beam-domain-mask", "beam-listed"]),
       ranking=st.sampled_from(["blend", "expected", "likelihood"]))
def test_proposals_are_valid_distinct_and_new(case, seed, k, method, ranking):
    space, valid, measured = case
    if method == "beam-listed":  # a recording: it lists its valid configs, so the mask stays exact
        in_order = [c for c in space if config_key(c) in valid]
        space = dataclasses.replace(space, listed=lambda: in_order)
    lm = _random_lm(space, seed)
    # max_exhaustive=0 makes the valid set "too large to score one by one": beam search, with the
    # domain as its mask and validation after, or with a listed space's exact prefix mask.
    advisor = TLMAdvisor(lm, method="beam" if method.startswith("beam") else method, ranking=ranking,
                         max_exhaustive=0 if method in ("beam-domain-mask", "beam-listed") else 20_000)
    proposals = advisor.propose(HW, "random", {}, space, k, measured=[(c, 1.0) for c in measured])
    keys = [config_key(p.config) for p in proposals]
    assert len(keys) == len(set(keys)) <= k
    assert all(key in valid for key in keys)
    assert not set(keys) & {config_key(c) for c in measured}
    assert all(space.is_valid(p.config) for p in proposals)
    assert [p.score for p in proposals] == sorted((p.score for p in proposals), reverse=True)
    if method == "exhaustive":  # exhaustive scoring finds every unmeasured valid config when k allows
        assert len(proposals) == min(k, len(valid) - len(measured))
    if method == "beam-listed" and len(valid) <= 64:  # 64 beams over an exact mask reach every valid config
        assert len(proposals) == min(k, len(valid) - len(measured))


@settings(max_examples=20, deadline=None)
@given(case=spaces())
def test_prefix_mask_allows_exactly_the_completable_words(case):
    space, valid, _ = case
    lm = _random_lm(space, 0)
    vs = ValidSet.of(space, lm.vocab, limit=10_000)
    proc = ValidPrefixProcessor(vs, lm.vocab, prompt_len=3)
    for ids in vs.ids:
        for cut in range(len(ids)):
            prefix = ids[:cut]
            expected = sorted({other[cut] for other in vs.ids if other[:cut] == prefix})
            assert proc.allowed(prefix) == expected
            prompt = torch.zeros((1, 3), dtype=torch.long)
            masked = proc(torch.cat([prompt, torch.tensor([prefix], dtype=torch.long).view(1, -1)], dim=1),
                          torch.zeros((1, len(lm.vocab))))
            assert sorted(torch.nonzero(masked[0] == 0).flatten().tolist()) == expected
    # After a complete config only a quality word (the sentence's last word) may follow.
    assert proc.allowed(vs.ids[0]) == sorted(lm.vocab.id(q) for q in QUALITIES)


def test_diversify_alternates_best_and_far_picks():
    from tritune.llm_advisor._generate import diversify

    # Six parameters vary, so a far pick differs from every earlier pick in at least two.
    def cfg(*changed):
        return {n: int(n in changed) for n in "abcdef"}

    ranked = [(cfg(), 9.0), (cfg("a"), 8.0), (cfg("b"), 7.0), (cfg("c", "d", "e"), 6.0), (cfg("f"), 5.0)]
    picks = [c for c, _ in diversify(ranked, 4)]
    assert picks == [cfg(), cfg("c", "d", "e"), cfg("a"), cfg("b")]  # best, far, best left, best left
    # Already-measured configs count: next to a measured cfg("c", "d"), cfg("c", "d", "e") is a near-copy.
    picks = [c for c, _ in diversify(ranked, 2, reference=[cfg("c", "d")])]
    assert picks == [cfg(), cfg("a")]  # no candidate is far from both: the best remaining
    assert diversify(ranked, 10) == ranked  # fewer candidates than k: all of them, in order


def test_wide_candidates_make_far_picks_far_in_the_whole_space():
    from tritune.llm_advisor._generate import diversify, propose

    # The ranking prefers configs near all-zeros: its top four differ from it in one parameter at most.
    space = SearchSpace("six", tuple(Param(n, (0, 1, 2)) for n in "abcdef"))
    lm = _random_lm(space, 0)
    zero = [lm.vocab.id(config_word(n, 0)) for n in space.names]
    ctx = sentence(HW, "six", {}, None, space.names).context

    def rank(ids):
        return torch.tensor([-float(sum(i != z for i, z in zip(row, zero, strict=True))) for row in ids])

    def second_pick_distance(share):
        found = propose(lm, ctx, space, 4, rank, share=share)
        first, second = (c for c, _ in diversify(found, 2))
        return sum(first[n] != second[n] for n in space.names)

    # From the top 2k alone, "far" means a third of the few parameters varying among near-copies.
    assert second_pick_distance(0.0) == 1
    # From the top 5% of the space, a far pick differs in a third of all six parameters.
    assert second_pick_distance(0.05) >= 2
    assert len(propose(lm, ctx, space, 4, rank, share=0.05)) == round(0.05 * 3**6)
