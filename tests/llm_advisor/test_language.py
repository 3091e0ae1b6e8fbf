"""The tensor language: sentences, vocabulary round trips, unknown words for unseen devices."""

from __future__ import annotations

import pytest
from tritune.llm_advisor import Vocabulary, hardware_words, problem_words, sentence
from tritune.llm_advisor._language import BOS, HW_SLOTS, SEP, TOP, unknown_word
from tritune.search_space import (
    FlashAttentionSpec,
    Hardware,
    PagedAttentionSpec,
    VarlenAttentionSpec,
    load_landscapes,
    space_for,
)


def test_landscape_round_trip(kernel_tuner_cache, tmp_path):
    land = load_landscapes([f"{kernel_tuner_cache}/dedispersion_milo/A100.json.gz"])[0]
    configs = [e.values for e in list(land)[:50]]
    sentences = [sentence(land.hardware, land.kernel, {"problem_size": land.problem_size}, c, land.space.names, TOP)
                 for c in configs]
    vocab = Vocabulary.build(sentences, [land.space])
    vocab.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again.words == vocab.words
    for s, c in zip(sentences, configs, strict=True):
        ids = again.encode(s.words)
        words = again.decode(ids)
        assert tuple(words) == s.words  # every word is known: no <unk> in a training sentence
        assert again.parse_config(words[len(s.context):-1], land.space) == dict(c)
        assert words[0] == BOS and words[len(s.context) - 1] == SEP and words[-1] == TOP


@pytest.mark.parametrize("spec", [
    FlashAttentionSpec(batch=3, heads_q=12, heads_kv=4, seq_q=300, seq_kv=777, head_dim=80, dtype="fp16", causal=True),
    PagedAttentionSpec(num_seqs=5, heads_q=8, heads_kv=2, head_dim=96, context_len=1000, block_size=32),
    VarlenAttentionSpec(3, 5, 3, 100, 12, 4, 96, 16, "bf16", window_left=63, sinks=True),
])
def test_attention_space_round_trip(spec):
    hw = Hardware.from_spec("H100")
    space = space_for(spec, hw)
    configs = space.enumerate()
    vocab = Vocabulary.build([], [space])
    for c in configs:
        s = sentence(hw, spec.kernel, spec.to_dict(), c, space.names)
        assert vocab.parse_config(vocab.decode(vocab.encode(s.config)), space) == c


def test_hardware_words_have_every_slot_and_generalize():
    h100, mi250x, cpu = Hardware.from_spec("H100"), Hardware.from_spec("MI250X"), Hardware.cpu_interpreter("3.9")
    for hw in (h100, mi250x, cpu):
        words = hardware_words(hw)
        assert [w.split("=")[0] for w in words] == [f"hw.{s}" for s in HW_SLOTS]
    assert "hw.vendor=amd" in hardware_words(mi250x) and "hw.warp=64" in hardware_words(mi250x)
    assert "hw.vendor=nvidia" in hardware_words(h100) and "hw.arch=hopper" in hardware_words(h100)
    # A device missing from the vocabulary keeps its known words and gets its slots' unknown words.
    vocab = Vocabulary.build([sentence(h100, "k", {}, {"a": 1}, ["a"])])
    ids = vocab.encode(hardware_words(mi250x))
    decoded = vocab.decode(ids)
    assert decoded[0] == "hw.name=?" and decoded[1] == "hw.vendor=?"
    assert all(w.endswith("=?") or w in vocab for w in decoded)


def test_problem_words_bucket_sizes_and_keep_flags():
    words = problem_words("flash_attention", {"seq_q": 300, "causal": True, "dtype": "bf16", "sizes": [4096, 5]})
    assert words == ["kernel=flash_attention", "p.causal=1", "p.dtype=bf16", "p.seq_q~2^8", "p.sizes.0~2^12", "p.sizes.1~2^2"]
    assert unknown_word("p.seq_q~2^8") == "p.seq_q=?"
    assert unknown_word("hw.sm=2^6") == "hw.sm=?"


def test_parse_config_names_the_bad_word():
    space = space_for(FlashAttentionSpec(1, 8, 8, 128, 128, 64), Hardware.from_spec("H100"))
    vocab = Vocabulary.build([], [space])
    words = [f"c.{n}=x" for n in space.names]
    words[0] = "c.block_m=64"
    words[1] = "c.block_m=64"
    with pytest.raises(ValueError, match="not a value of parameter 'block_n'"):
        vocab.parse_config(words, space)
    with pytest.raises(ValueError, match=f"expected {len(space.names)} config words"):
        vocab.parse_config(["c.block_m=64"], space)
    with pytest.raises(ValueError, match="quality"):
        sentence(Hardware.from_spec("H100"), "k", {}, None, [], quality="q=best")


def test_serving_problem_words_spell_sentinels_exactly():
    """The varlen spec's window -1 (unbounded), causal right window 0 and block size 0 (contiguous
    K/V) are choices, not sizes: exact words, distinct from each other and from sized windows."""
    full = VarlenAttentionSpec(65, 576, 512, 8192, 32, 8, 128, 0, "bf16")
    words = problem_words(full.kernel, full.to_dict())
    assert {"kernel=varlen_attention", "p.window_left=-1", "p.window_right=0", "p.block_size=0", "p.kv_dtype=auto",
            "p.softcap=0", "p.sinks=0", "p.total_q~2^9", "p.max_seqlen_q~2^9", "p.max_seqlen_k~2^13"} <= set(words)
    windowed = VarlenAttentionSpec(8, 8, 1, 4096, 32, 8, 128, 16, "bf16", "fp8", window_left=4095, softcap=True)
    words = problem_words(windowed.kernel, windowed.to_dict())
    assert {"p.window_left~2^11", "p.block_size~2^4", "p.kv_dtype=fp8", "p.softcap=1"} <= set(words)
    # flash/paged problems (all sizes positive) are spelt as before: the shipped checkpoint's words
    assert problem_words("paged_attention", {"context_len": 4096, "block_size": 16}) == [
        "kernel=paged_attention", "p.block_size~2^4", "p.context_len~2^12"]


def test_attention_spaces_teach_the_serving_grammar():
    """The serving shapes the advisor is pre-trained on (``attention_spaces``, one device here)."""
    from tritune.llm_advisor._tlm import _ATTENTION_SHAPES
    from tritune.search_space import spec_type

    hw = Hardware.from_spec("H100")
    specs = [spec_type("varlen_attention").parse(shape) for shape in _ATTENTION_SHAPES["varlen_attention"]]
    assert {s.max_seqlen_q for s in specs} >= {1, 4, 512} and any(s.kv_dtype == "fp8" and s.softcap for s in specs)
    spaces = [space_for(s, hw) for s in specs]
    vocab = Vocabulary.build([sentence(hw, s.kernel, s.to_dict(), sp.default(), sp.names) for s, sp in zip(specs, spaces, strict=True)],
                             spaces)
    for word in ("kernel=varlen_attention", "c.pack_gqa=1", "c.pack_gqa=0", "c.num_splits=32", "c.split_diag=0",
                 "p.window_left=-1", "p.window_left~2^6", "p.sinks=1"):
        assert word in vocab, word
