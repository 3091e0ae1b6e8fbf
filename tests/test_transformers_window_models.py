"""``attn_implementation="tritune"`` on sliding-window, soft-capped and sink models.

Tiny local configs (random weights, no download): Mistral (sliding window on every layer),
Gemma 2 (softcap on every layer, sliding + full layers), gpt-oss (sinks, sliding + full layers),
Qwen2 (full + sliding) and Gemma 3 text (sliding + full). Each model's logits with the tritune
attention must be within the bf16 rule of eager's (2x eager-in-bf16's error against an fp32 eager
run, plus slack), on a left-padded batch and for the decode steps of ``generate`` with a KV cache
(the prompt is longer than the window, so the decode steps read a sliding-window cache whose
first key is not position 0). Launches of the varlen kernel are counted to show it ran.
"""

from __future__ import annotations

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tritune  # noqa: E402
import tritune.kernels.varlen_attention as varlen_kernel  # noqa: E402
from tritune.integrations import transformers as integration  # noqa: E402
from tritune.kernels import compare  # noqa: E402

WINDOW = 5
VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=128)


def config(kind: str, window: int | None = WINDOW):
    """A fresh config per model: transformers writes the attention implementation into it."""
    if kind == "mistral":
        return transformers.MistralConfig(**COMMON, sliding_window=window), transformers.MistralForCausalLM
    if kind == "gemma2":
        return (transformers.Gemma2Config(**COMMON, sliding_window=window, attn_logit_softcapping=20.0,
                                          final_logit_softcapping=None, query_pre_attn_scalar=16),
                transformers.Gemma2ForCausalLM)
    if kind == "gptoss":
        return (transformers.GptOssConfig(**COMMON, sliding_window=window, num_local_experts=4,
                                          num_experts_per_tok=2), transformers.GptOssForCausalLM)
    if kind == "qwen2":
        return (transformers.Qwen2Config(**COMMON, use_sliding_window=True, sliding_window=window,
                                         max_window_layers=1), transformers.Qwen2ForCausalLM)
    if kind == "gemma3":
        return (transformers.Gemma3TextConfig(**COMMON, sliding_window=window, query_pre_attn_scalar=16,
                                              layer_types=["sliding_attention", "full_attention"]),
                transformers.Gemma3ForCausalLM)
    raise AssertionError(kind)


def build(kind: str, attn: str, dtype: torch.dtype, state=None, window: int | None = WINDOW):
    cfg, cls = config(kind, window)
    torch.manual_seed(0)
    model = cls._from_config(cfg, attn_implementation=attn, dtype=torch.float32)
    if state is not None:
        model.load_state_dict(state)
    return model.to(dtype).eval()


# Every layer of these runs the varlen kernel (window, softcap or sinks); for the other two only
# the sliding layer does (their full layer has no softcap/sinks and runs tritune.flash_attention).
VARLEN_LAYERS = {"mistral": 2, "gemma2": 2, "gptoss": 2, "qwen2": 1, "gemma3": 1}
KINDS = list(VARLEN_LAYERS)


@pytest.fixture(scope="module", params=KINDS)
def models(request):
    name = tritune.register_transformers()
    ref32 = build(request.param, "eager", torch.float32)
    state = ref32.state_dict()
    return {"kind": request.param, "fp32": ref32, "eager": build(request.param, "eager", torch.bfloat16, state),
            "tritune": build(request.param, name, torch.bfloat16, state), "state": state}


def left_padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 14), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :9] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture
def launches(monkeypatch):
    """Count the varlen kernel's launches, and any fallback to PyTorch."""
    seen = {"varlen": 0, "fallback": 0}
    real_launch, real_fallback = varlen_kernel.launch_varlen, integration._torch_attention

    def spy_launch(*args, **kwargs):
        seen["varlen"] += 1
        return real_launch(*args, **kwargs)

    def spy_fallback(*args, **kwargs):
        seen["fallback"] += 1
        return real_fallback(*args, **kwargs)

    monkeypatch.setattr(varlen_kernel, "launch_varlen", spy_launch)
    monkeypatch.setattr(integration, "_torch_attention", spy_fallback)
    return seen


def test_prefill_logits_match_eager_with_left_padding(models, launches):
    ids, mask = left_padded_batch()
    with torch.no_grad():
        ref = models["fp32"](input_ids=ids, attention_mask=mask).logits
        base = models["eager"](input_ids=ids, attention_mask=mask).logits
        out = models["tritune"](input_ids=ids, attention_mask=mask).logits
    assert launches == {"varlen": VARLEN_LAYERS[models["kind"]], "fallback": 0}
    valid = mask.bool()  # padded positions' logits are meaningless in every implementation
    verdict = compare(out[valid], ref[valid], base[valid])
    assert verdict.ok, verdict.message


def test_generate_decode_steps_match_eager(models, launches):
    ids, mask = left_padded_batch()
    new = 3
    with torch.no_grad():
        gen = models["tritune"].generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        steps = torch.stack(gen.logits, dim=1)  # [B, new, vocab], from the tritune prefill + decode steps
        assert launches == {"varlen": new * VARLEN_LAYERS[models["kind"]], "fallback": 0}
        full = gen.sequences
        full_mask = torch.cat([mask, torch.ones(3, new, dtype=mask.dtype)], dim=1)
        # the same next-token logits, recomputed by one eager forward over the whole sequence
        ref = models["fp32"](input_ids=full, attention_mask=full_mask).logits[:, -new - 1:-1]
        base = models["eager"](input_ids=full, attention_mask=full_mask).logits[:, -new - 1:-1]
    verdict = compare(steps.to(torch.bfloat16), ref, base)
    assert verdict.ok, verdict.message


def packed_batch():
    """Two rows of packed sequences (position ids restart at each one's first token): 6 + 5 + 3
    tokens and 9 + 5, longer than the window, as DataCollatorWithFlattening packs them."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, VOCAB, (2, 14), generator=g)
    positions = torch.stack([torch.cat([torch.arange(n) for n in lengths]) for lengths in ((6, 5, 3), (9, 5))])
    return ids, positions


# gpt-oss builds its masks without the position ids, so transformers never sees its packing (eager
# neither): its rows attend across the sequences in every implementation.
PACKING = {"mistral": True, "gemma2": True, "gptoss": False, "qwen2": True, "gemma3": True}


def test_packed_sequences_match_eager(models, launches, monkeypatch):
    ids, positions = packed_batch()
    kw = dict(input_ids=ids, position_ids=positions, use_cache=False)
    packed_calls = []
    real = integration._packed_forward
    monkeypatch.setattr(integration, "_packed_forward", lambda *a, **k: packed_calls.append(1) or real(*a, **k))
    with torch.no_grad():
        ref = models["fp32"](**kw).logits
        base = models["eager"](**kw).logits
        out = models["tritune"](**kw).logits
        alone = models["fp32"](input_ids=ids[:1, 6:11]).logits  # the second sequence of row 0 by itself
    packs = PACKING[models["kind"]]
    # Every layer of a packing model: one varlen launch over all five sequences.
    assert launches == {"varlen": 2 if packs else VARLEN_LAYERS[models["kind"]], "fallback": 0}
    assert len(packed_calls) == (2 if packs else 0)
    isolated = torch.allclose(ref[:1, 6:11], alone, rtol=1e-4, atol=1e-4)
    assert isolated == packs  # what the reference does with the packing
    verdict = compare(out, ref, base)
    assert verdict.ok, verdict.message


def test_packed_rows_stand_for_transformers_packed_mask():
    from transformers.masking_utils import (
        and_masks,
        causal_mask_function,
        packed_sequence_mask_function,
        remap_positions_for_packed_sequence,
        sliding_window_overlay,
    )

    _, positions = packed_batch()
    ids = (torch.diff(positions, prepend=positions[:, :1] - 1) != 1).cumsum(-1)
    for inner, left in ((causal_mask_function, None), (and_masks(sliding_window_overlay(WINDOW), causal_mask_function),
                                                       WINDOW - 1)):
        fn = and_masks(remap_positions_for_packed_sequence(inner, positions), packed_sequence_mask_function(ids))
        rows = integration.tritune_mask(2, 14, 14, mask_function=fn, local_size=None if left is None else WINDOW)
        assert rows.dtype == torch.int32 and rows.shape == (2, 1, 14, 1 if left is None else 2)
        packed = integration.packed_ids(rows)
        assert torch.equal(packed[..., 0], ids.to(torch.int32))
        n = torch.arange(14)
        expected = torch.stack([fn(torch.tensor(b), torch.tensor(0), n[:, None], n[None, :]) for b in range(2)])
        assert torch.equal(integration.expand_packed(packed[..., 0], left)[:, 0], expected)


def test_packed_fp32_runs_in_pytorch_with_the_packed_mask(launches):
    ref = build("mistral", "eager", torch.float32)
    model = build("mistral", tritune.register_transformers(), torch.float32, ref.state_dict())
    ids, positions = packed_batch()
    kw = dict(input_ids=ids, position_ids=positions, use_cache=False)
    with torch.no_grad():
        torch.testing.assert_close(model(**kw).logits, ref(**kw).logits, rtol=1e-4, atol=1e-4)
    assert launches == {"varlen": 0, "fallback": 2}  # the varlen kernel takes fp16/bf16 only


@pytest.mark.parametrize("kind", ["mistral", "gemma2"])  # one mask for all layers; a dict of two
def test_generate_with_a_static_cache(kind, launches):
    """A static cache makes generate() build the masks ahead and hand them back to the model as
    its attention_mask (a single tensor for Mistral, a dict per layer type for Gemma 2)."""
    name = tritune.register_transformers()
    ref32 = build(kind, "eager", torch.float32)
    state = ref32.state_dict()
    model = build(kind, name, torch.bfloat16, state)
    ids, mask = left_padded_batch()
    new = 2
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0, cache_implementation="static")
        steps = torch.stack(gen.logits, dim=1)
        assert launches == {"varlen": new * VARLEN_LAYERS[kind], "fallback": 0}
        full_mask = torch.cat([mask, torch.ones(3, new, dtype=mask.dtype)], dim=1)
        ref = ref32(input_ids=gen.sequences, attention_mask=full_mask).logits[:, -new - 1:-1]
        base = build(kind, "eager", torch.bfloat16, state)(input_ids=gen.sequences,
                                                           attention_mask=full_mask).logits[:, -new - 1:-1]
    verdict = compare(steps.to(torch.bfloat16), ref, base)
    assert verdict.ok, verdict.message


def test_the_window_matters_at_this_size():
    """Control: without its window the same Mistral is outside the tolerance, so the tests above
    would catch a kernel that ignored the window."""
    ids, mask = left_padded_batch()
    ref32 = build("mistral", "eager", torch.float32)
    state = ref32.state_dict()
    with torch.no_grad():
        ref = ref32(input_ids=ids, attention_mask=mask).logits
        base = build("mistral", "eager", torch.bfloat16, state)(input_ids=ids, attention_mask=mask).logits
        wrong = build("mistral", "eager", torch.float32, state, window=None)(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    assert not compare(wrong[valid], ref[valid], base[valid]).ok


def test_padding_with_holes_falls_back_once_and_stays_correct(caplog, launches):
    """A padding mask with a hole has no window form: Gemma 2 (softcap, which SDPA lacks) runs the
    eager math on sdpa's 4-D mask, and the log says so once."""
    name = tritune.register_transformers()
    ref32 = build("gemma2", "eager", torch.float32)
    state = ref32.state_dict()
    model = build("gemma2", name, torch.bfloat16, state)
    ids, mask = left_padded_batch()
    mask[1, 6] = 0  # a hole
    integration._fallback_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="tritune.integrations.transformers"), torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits
        model(input_ids=ids, attention_mask=mask)
        ref = ref32(input_ids=ids, attention_mask=mask).logits
        base = build("gemma2", "eager", torch.bfloat16, state)(input_ids=ids, attention_mask=mask).logits
    messages = [r.getMessage() for r in caplog.records if r.name == "tritune.integrations.transformers"]
    assert len([m for m in messages if "holes" in m]) == 1, messages
    assert launches["varlen"] == 0 and launches["fallback"] == 4
    valid = mask.bool()
    verdict = compare(out[valid], ref[valid], base[valid])
    assert verdict.ok, verdict.message


def test_mask_pattern_recognition():
    from transformers.masking_utils import (
        bidirectional_mask_function,
        causal_mask_function,
        chunked_causal_mask_function,
        sliding_window_causal_mask_function,
    )

    assert integration.mask_pattern(causal_mask_function, None) == ("causal", None)
    assert integration.mask_pattern(bidirectional_mask_function, None) == ("bidirectional", None)
    assert integration.mask_pattern(sliding_window_causal_mask_function(4), 4) == ("sliding", 3)
    # the window size the mask function was built with must be the one transformers announces
    assert integration.mask_pattern(sliding_window_causal_mask_function(4), 3) == (None, None)
    chunked = chunked_causal_mask_function(4, torch.zeros(1, dtype=torch.long))
    assert integration.mask_pattern(chunked, 4) == ("chunked", 4)  # rows: tests/test_transformers_model_zoo.py
    assert integration.mask_pattern(chunked, 8) == (None, None)


def test_window_rows_expand_to_the_mask_they_stand_for():
    from transformers.masking_utils import sdpa_mask, sliding_window_causal_mask_function

    pad = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    for q_length, q_offset in ((7, 0), (1, 6), (3, 4)):
        kwargs = dict(batch_size=2, q_length=q_length, kv_length=7, q_offset=q_offset, attention_mask=pad,
                      local_size=3, mask_function=sliding_window_causal_mask_function(3))
        mask = integration.tritune_mask(**kwargs)
        assert mask.shape == (2, 1, 1, 4) and mask.dtype == torch.int32  # 4-D: transformers passes it through
        rows = integration.window_rows(mask)
        expected = sdpa_mask(**kwargs, allow_is_causal_skip=False)
        assert torch.equal(integration.expand_window(rows, q_length, 7), expected)

