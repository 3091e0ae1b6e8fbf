"""``attn_implementation="tritune"`` in a tiny Llama-style model (random weights, no download).

The model is built from a local LlamaConfig with GQA; its logits with the tritune attention must
match sdpa's within the bf16 rule (2x sdpa-in-bf16's error against an fp32 run, plus slack), on
a batch with left padding, for the prefill and for the decode steps of ``generate``.
"""

from __future__ import annotations

import importlib

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tritune  # noqa: E402
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface  # noqa: E402
from tritune.integrations import transformers as integration  # noqa: E402
from tritune.kernels import compare  # noqa: E402
from tritune.kernels import flash_attention as fa  # noqa: E402


def tiny_llama(attn: str, dtype: torch.dtype, state=None) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=torch.float32)
    if state is not None:
        model.load_state_dict(state)
    return model.to(dtype).eval()


@pytest.fixture(scope="module")
def models():
    name = tritune.register_transformers()
    ref32 = tiny_llama("sdpa", torch.float32)
    state = ref32.state_dict()
    return {"fp32": ref32, "sdpa": tiny_llama("sdpa", torch.bfloat16, state),
            "tritune": tiny_llama(name, torch.bfloat16, state)}


def left_padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 96, (3, 23), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :6] = 0
    mask[2, :15] = 0
    ids[mask == 0] = 0
    return ids, mask


def count_launches(monkeypatch) -> list:
    calls = []
    real = fa.launch

    def spy(inputs, config, **kwargs):
        calls.append(inputs.get("kv_window") is not None)
        return real(inputs, config, **kwargs)

    monkeypatch.setattr(fa, "launch", spy)
    return calls


def test_prefill_logits_match_sdpa_with_left_padding(models, monkeypatch):
    ids, mask = left_padded_batch()
    calls = count_launches(monkeypatch)
    with torch.no_grad():
        ref = models["fp32"](input_ids=ids, attention_mask=mask).logits
        base = models["sdpa"](input_ids=ids, attention_mask=mask).logits
        out = models["tritune"](input_ids=ids, attention_mask=mask).logits
    assert calls == [True, True]  # both layers ran the kernel, with the padding window
    valid = mask.bool()  # padded positions' logits are meaningless in every implementation
    verdict = compare(out[valid], ref[valid], base[valid])
    assert verdict.ok, verdict.message
    assert torch.isfinite(out).all()


def test_unpadded_batch_uses_the_plain_causal_kernel(models, monkeypatch):
    ids, _ = left_padded_batch()
    ids = ids[:, 8:]
    calls = count_launches(monkeypatch)
    with torch.no_grad():
        ref = models["fp32"](input_ids=ids).logits
        base = models["sdpa"](input_ids=ids).logits
        out = models["tritune"](input_ids=ids).logits
    assert calls == [False, False]
    verdict = compare(out, ref, base)
    assert verdict.ok, verdict.message


def test_generate_decode_steps_match_sdpa(models):
    ids, mask = left_padded_batch()
    new = 3
    with torch.no_grad():
        gen = models["tritune"].generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        steps = torch.stack(gen.logits, dim=1)  # [B, new, vocab], from the tritune decode path
        full = gen.sequences
        full_mask = torch.cat([mask, torch.ones(3, new, dtype=mask.dtype)], dim=1)
        # the same next-token logits, recomputed by one sdpa forward over the whole sequence
        ref = models["fp32"](input_ids=full, attention_mask=full_mask).logits[:, -new - 1:-1]
        base = models["sdpa"](input_ids=full, attention_mask=full_mask).logits[:, -new - 1:-1]
    verdict = compare(steps.to(torch.bfloat16), ref, base)
    assert verdict.ok, verdict.message


def test_generate_with_a_static_cache_matches_sdpa(models, monkeypatch):
    # generate() builds a static cache's masks ahead and passes them back as attention_mask: the
    # window rows must come back unchanged (not be read as a 2-D padding mask)
    ids, mask = left_padded_batch()
    new = 2
    calls = count_launches(monkeypatch)
    with torch.no_grad():
        gen = models["tritune"].generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                         output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                                         cache_implementation="static")
        steps = torch.stack(gen.logits, dim=1)
        full_mask = torch.cat([mask, torch.ones(3, new, dtype=mask.dtype)], dim=1)
        ref = models["fp32"](input_ids=gen.sequences, attention_mask=full_mask).logits[:, -new - 1:-1]
        base = models["sdpa"](input_ids=gen.sequences, attention_mask=full_mask).logits[:, -new - 1:-1]
    assert calls == [True] * (2 * new)  # every layer and step ran the kernel with its window rows
    verdict = compare(steps.to(torch.bfloat16), ref, base)
    assert verdict.ok, verdict.message


def test_registration_is_explicit_and_idempotent():
    for mapping in (AttentionInterface._global_mapping, AttentionMaskInterface._global_mapping):
        mapping.pop("tritune", None)
    importlib.reload(integration)  # importing registers nothing
    assert "tritune" not in AttentionInterface._global_mapping
    assert "tritune" not in AttentionMaskInterface._global_mapping
    assert integration.register_transformers() == integration.register_transformers() == "tritune"
    assert AttentionInterface._global_mapping["tritune"] is integration.tritune_attention_forward
    assert AttentionMaskInterface._global_mapping["tritune"] is integration.tritune_mask
    with pytest.raises(ValueError, match="name"):
        integration.register_transformers("my_flash")


def test_mask_function_forms():
    from transformers.masking_utils import causal_mask_function, sliding_window_causal_mask_function

    pad = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    # unpadded causal prefill: no mask at all
    assert integration.tritune_mask(2, 5, 5, attention_mask=torch.ones(2, 5, dtype=torch.bool)) is None
    # left padding: one (lo, hi, shift) row per sequence
    window = integration.tritune_mask(2, 5, 5, attention_mask=pad, mask_function=causal_mask_function)
    assert integration.window_rows(window).tolist() == [[2, 5, 0], [0, 5, 0]]
    # decode step after a 4-token prefix: query position 4 sees keys <= 4
    window = integration.tritune_mask(2, 1, 5, q_offset=4, attention_mask=pad)
    assert integration.window_rows(window).tolist() == [[2, 5, 4], [0, 5, 4]]
    # holes in the padding mask: sdpa's boolean 4-D mask
    holes = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert integration.tritune_mask(2, 5, 5, attention_mask=holes).shape == (2, 1, 5, 5)
    # a sliding window of 2 (key visible iff q - 2 < kv <= q): the rows get left = 1
    sliding = integration.tritune_mask(2, 5, 5, attention_mask=pad, local_size=2,
                                       mask_function=sliding_window_causal_mask_function(2))
    assert integration.window_rows(sliding).tolist() == [[2, 5, 0, 1], [0, 5, 0, 1]]


def test_unpadded_chunk_after_a_prefix_gets_a_window_on_the_mask_device():
    # a 3-token chunk after a 4-token prefix, no padding mask: bottom-right diagonal, shift 4
    window = integration.tritune_mask(2, 3, 7, q_offset=4, attention_mask=None, device="cpu")
    assert integration.window_rows(window).tolist() == [[0, 7, 4], [0, 7, 4]] and window.device.type == "cpu"


def test_compiled_model_runs_the_kernel_with_its_window_rows(models, monkeypatch):
    # Under torch.compile the padding mask cannot be read on the host: the rows are built without
    # a sync, and a mask with holes (no row form) fails a device-side assert instead of passing
    ids, mask = left_padded_batch()
    calls = count_launches(monkeypatch)
    compiled = torch.compile(models["tritune"], backend="aot_eager")
    with torch.no_grad():
        out = compiled(input_ids=ids, attention_mask=mask).logits
        ref = models["fp32"](input_ids=ids, attention_mask=mask).logits
        base = models["sdpa"](input_ids=ids, attention_mask=mask).logits
    assert calls == [True, True]
    valid = mask.bool()
    verdict = compare(out[valid], ref[valid], base[valid])
    assert verdict.ok, verdict.message
    holes = mask.clone()
    holes[0, 10] = 0
    with pytest.raises(RuntimeError, match="padding mask with holes"), torch.no_grad():
        compiled(input_ids=ids, attention_mask=holes)
    torch._dynamo.reset()
