"""The Advisor contract, checked against every advisor implementation.

Every advisor, on a recorded landscape and on an attention space, given some configs already
measured: at most k proposals, distinct, valid in the space, none already measured, scores
the favourite first, and k=0 gives nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tritune.llm_advisor import Advisor, PromptAdvisor, TLMAdvisor, landscape_problem
from tritune.search_space import FlashAttentionSpec, Hardware, Landscape, config_key, space_for


def _prompt_echo_valid():
    """A 'model' that answers with the space's first configs (some repeated, one out of domain)."""
    def make(space):
        configs = space.enumerate(limit=6)
        answer = [*configs, configs[0], {**configs[1], space.names[0]: "nope"}]
        return PromptAdvisor(generator=lambda prompt: json.dumps(answer))
    return make


ADVISORS = {
    "tlm-shipped": lambda space: TLMAdvisor.load(),
    "tlm-likelihood": lambda space: TLMAdvisor.load(ranking="likelihood"),
    "prompt-json": _prompt_echo_valid(),
    "prompt-garbage": lambda space: PromptAdvisor(generator=lambda prompt: "the best is block_m=64"),
}


def _problems(kernel_tuner_cache):
    land = Landscape.load(Path(kernel_tuner_cache) / "convolution_milo" / "A100.json.gz")
    yield "landscape", land.hardware, land.kernel, landscape_problem(land), land.space
    spec = FlashAttentionSpec(batch=2, heads_q=8, heads_kv=2, seq_q=300, seq_kv=300, head_dim=80, dtype="bf16",
                              causal=True)
    hw = Hardware.from_spec("H100")
    yield "attention", hw, spec.kernel, spec.to_dict(), space_for(spec, hw)


@pytest.mark.parametrize("name", ADVISORS)
def test_advisor_contract(name, kernel_tuner_cache):
    for label, hw, kernel, problem, space in _problems(kernel_tuner_cache):
        advisor = ADVISORS[name](space)
        assert isinstance(advisor, Advisor)
        assert advisor.propose(hw, kernel, problem, space, 0) == []
        measured = [(c, 1.0 + i) for i, c in enumerate(space.enumerate(limit=3))]
        props = advisor.propose(hw, kernel, problem, space, 5, measured=measured)
        keys = [config_key(p.config) for p in props]
        assert len(props) <= 5, label
        assert len(set(keys)) == len(keys), (label, "duplicates")
        assert all(space.is_valid(p.config) for p in props), label
        assert not set(keys) & {config_key(c) for c, _ in measured}, (label, "re-proposed a measured config")
        if props:  # the favourite first (later ones may trade score for diversity)
            assert props[0].score == max(p.score for p in props), label
        if name.startswith("tlm") or name == "prompt-json":
            assert props, (label, "a working advisor proposes something")
