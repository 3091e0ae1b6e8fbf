"""The prompt advisor: garbage answers are rejected with reasons and never reach the tuner."""

from __future__ import annotations

import json

import pytest
from tritune.llm_advisor import PromptAdvisor, build_prompt, parse_answer
from tritune.search_space import FlashAttentionSpec, Hardware, space_for

HW = Hardware.from_spec("A100")
SPEC = FlashAttentionSpec(batch=1, heads_q=8, heads_kv=8, seq_q=1024, seq_kv=1024, head_dim=256, dtype="fp32")
SPACE = space_for(SPEC, HW)  # head_dim 256 fp32: big tiles with several stages overflow shared memory
GOOD, GOOD2 = SPACE.enumerate(limit=2)
OVERFLOW = {**GOOD, "block_m": 256, "block_n": 256, "num_stages": max(SPACE.param("num_stages").values)}


def _advisor(answer):
    return PromptAdvisor(generator=lambda prompt: answer)


def _reasons(advisor):
    return [r.reason for r in advisor.rejections]


def test_valid_answer_is_accepted_in_order():
    assert SPACE.is_valid(GOOD) and SPACE.is_valid(GOOD2)
    assert any("shared_memory" in r for r in SPACE.validate(OVERFLOW))
    adv = _advisor(json.dumps([GOOD, GOOD2]))
    props = adv.propose(HW, SPEC.kernel, SPEC.to_dict(), SPACE, 5)
    assert [p.config for p in props] == [GOOD, GOOD2]
    assert props[0].score > props[1].score and adv.rejections == []
    fenced = _advisor("```json\n" + json.dumps(GOOD) + "\n```")  # one object in a fence is fine
    assert [p.config for p in fenced.propose(HW, SPEC.kernel, SPEC.to_dict(), SPACE, 5)] == [GOOD]


@pytest.mark.parametrize(("answer", "reason"), [
    ("I think block_m=64 is best!", "not JSON"),
    ("", "not JSON"),
    ("```json\n[{}]", "unterminated"),
    (json.dumps([GOOD]) + " and also this", "not JSON"),
    (json.dumps(["block_m=64"]), "expected a JSON object"),
    (json.dumps([{**GOOD, "block_m": 48}]), "block_m=48 is outside its domain"),
    (json.dumps([{**GOOD, "block_m": "64"}]), "block_m='64' is outside its domain"),
    (json.dumps([{**GOOD, "num_warps": True}]), "num_warps=True is outside its domain"),
    (json.dumps([{**GOOD, "use_tma": 1}]), "use_tma=1 is outside its domain"),
    (json.dumps([{k: v for k, v in GOOD.items() if k != "num_stages"}]), "missing parameters ['num_stages']"),
    (json.dumps([{**GOOD, "waves": 2}]), "unknown parameters ['waves']"),
    (json.dumps([OVERFLOW]), "violates constraints:"),
    (json.dumps([GOOD, GOOD]), "duplicate of an earlier config"),
])
def test_garbage_is_rejected_with_a_reason(answer, reason):
    adv = _advisor(answer)
    props = adv.propose(HW, SPEC.kernel, SPEC.to_dict(), SPACE, 5)
    assert all(SPACE.is_valid(p.config) for p in props)
    assert any(reason in r for r in _reasons(adv)), _reasons(adv)
    assert len(props) == (1 if "duplicate" in reason else 0)


def test_already_measured_configs_are_duplicates():
    adv = _advisor(json.dumps([GOOD, GOOD2]))
    props = adv.propose(HW, SPEC.kernel, SPEC.to_dict(), SPACE, 5, measured=[(GOOD, 1.0)])
    assert [p.config for p in props] == [GOOD2]
    assert _reasons(adv) == ["duplicate: already measured or proposed"]


def test_generator_errors_and_non_text_never_raise():
    def boom(prompt):
        raise RuntimeError("CUDA out of memory")

    adv = PromptAdvisor(generator=boom)
    assert adv.propose(HW, SPEC.kernel, SPEC.to_dict(), SPACE, 3) == []
    assert "generation failed: RuntimeError: CUDA out of memory" in _reasons(adv)[0]
    adv = PromptAdvisor(generator=lambda prompt: None)
    assert adv.propose(HW, SPEC.kernel, SPEC.to_dict(), SPACE, 3) == []
    assert _reasons(adv) == ["generator returned no text"]


def test_prompt_states_space_hardware_and_best_so_far():
    prompt = build_prompt(HW, SPEC.kernel, SPEC.to_dict(), SPACE, 4, [(GOOD, 0.5), (GOOD2, 0.25), (OVERFLOW, None)])
    assert '"block_m": [16, 32, 64, 128, 256]' in prompt and "shared_memory" in prompt
    assert '"use_tma": [false, true]' in prompt
    assert "A100" in prompt and "ampere" in prompt
    assert prompt.index(json.dumps(GOOD2)) < prompt.index(json.dumps(GOOD))  # fastest first
    assert "These failed" in prompt and "Propose 4 new configs" in prompt
    configs, rejections = parse_answer(json.dumps({"block_m": 64}), SPACE)
    assert configs == [] and "missing parameters" in rejections[0].reason


def test_checkpoint_must_be_a_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        PromptAdvisor(tmp_path / "nope")
    with pytest.raises(ValueError, match="exactly one of"):
        PromptAdvisor()


def test_tiny_random_local_model_answers_garbage_without_crashing(tmp_path):
    """A randomly initialized GPT-2 and a byte-level tokenizer saved locally: the real loading and
    generation path, whose output is garbage the parser must reject."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(tmp_path)
    config = GPT2Config(vocab_size=len(vocab), n_positions=4096, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    adv = PromptAdvisor(tmp_path, max_new_tokens=24)
    props = adv.propose(HW, SPEC.kernel, SPEC.to_dict(), SPACE, 3, measured=[(GOOD, 0.5)])
    assert props == []  # random text is no JSON config ...
    assert adv.rejections and all("generation failed" not in r.reason for r in adv.rejections)  # ... but it ran
