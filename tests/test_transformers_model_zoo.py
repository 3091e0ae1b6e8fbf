"""``attn_implementation="tritune"`` beyond decoder-only LMs: encoders, encoder-decoders, vision
towers, latent attention (MLA) and models that must fall back.

Tiny local configs (random weights, no download). Each model runs an fp32 eager reference, an
eager bf16 baseline and the tritune bf16 model with the same weights; the tritune output on the
positions that mean something (padding excluded) must be within the bf16 rule (2x the baseline's
error against the reference, plus slack). The kernels' launches are counted per model, so a
silent fallback to PyTorch fails the test, and the models that must fall back (T5's additive
position bias) must say so and still be right.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tritune  # noqa: E402
import tritune.kernels.flash_attention as flash_kernel  # noqa: E402
import tritune.kernels.varlen_attention as varlen_kernel  # noqa: E402
from tritune.integrations import transformers as integration  # noqa: E402
from tritune.kernels import compare  # noqa: E402

VOCAB = 96
SMALL = dict(hidden_size=64, num_attention_heads=4, intermediate_size=96, vocab_size=VOCAB)


def _ids(seed: int = 1, shape=(2, 13)) -> torch.Tensor:
    return torch.randint(3, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def _right_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return ids, mask


def _left_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    return ids, mask


def _pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def case(kind: str):
    """(model class, config, inputs, mask of the output positions to compare or None)."""
    t = transformers
    if kind == "bert":
        ids, mask = _right_padded()
        return t.BertModel, t.BertConfig(num_hidden_layers=2, max_position_embeddings=64, **SMALL), \
            dict(input_ids=ids, attention_mask=mask), mask
    if kind == "modernbert":
        # local attention 8 = |i - j| <= 4 on layer 1, global on 0 and 2; weights 5x the default
        # scale, so that attention is not near-uniform and the window matters (see below)
        ids, mask = _right_padded()
        return t.ModernBertModel, t.ModernBertConfig(num_hidden_layers=3, global_attn_every_n_layers=2,
                                                      local_attention=8, max_position_embeddings=64,
                                                      pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                      cls_token_id=1, sep_token_id=2,
                                                      initializer_range=0.1, **SMALL), \
            dict(input_ids=ids, attention_mask=mask), mask
    if kind == "distilbert":
        ids, mask = _right_padded()
        return t.DistilBertModel, t.DistilBertConfig(vocab_size=VOCAB, dim=64, n_heads=4, hidden_dim=96, n_layers=2,
                                                     max_position_embeddings=64), \
            dict(input_ids=ids, attention_mask=mask), mask
    if kind == "clip":  # causal text tower with padding + bidirectional vision tower
        ids, mask = _right_padded()
        tower = dict(hidden_size=64, num_attention_heads=4, intermediate_size=96, num_hidden_layers=2)
        return t.CLIPModel, t.CLIPConfig(text_config=dict(vocab_size=VOCAB, max_position_embeddings=32, **tower),
                                         vision_config=dict(image_size=32, patch_size=8, **tower)), \
            dict(input_ids=ids, attention_mask=mask, pixel_values=_pixels()), None
    if kind == "starcoder2":  # a sliding window of 6 on every layer
        ids, mask = _left_padded()
        return t.Starcoder2ForCausalLM, t.Starcoder2Config(num_hidden_layers=2, num_key_value_heads=2,
                                                           max_position_embeddings=64, sliding_window=6, **SMALL), \
            dict(input_ids=ids, attention_mask=mask), mask
    if kind == "vit":
        return t.ViTModel, t.ViTConfig(hidden_size=64, num_attention_heads=4, intermediate_size=96,
                                       num_hidden_layers=2, image_size=32, patch_size=8), \
            dict(pixel_values=_pixels()), None
    if kind == "bart":
        ids, mask = _right_padded()
        return t.BartForConditionalGeneration, t.BartConfig(
            vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96, max_position_embeddings=64), \
            dict(input_ids=ids, attention_mask=mask, decoder_input_ids=_ids(5, (2, 7))), None
    if kind == "whisper":
        return t.WhisperForConditionalGeneration, t.WhisperConfig(
            vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96, num_mel_bins=16,
            max_source_positions=16, max_target_positions=32, pad_token_id=0, decoder_start_token_id=1,
            eos_token_id=2, bos_token_id=1), \
            dict(input_features=torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(3)),
                 decoder_input_ids=_ids(5, (2, 7))), None
    if kind == "deepseek_v3":
        # multi-head latent attention: q/k head dim 24 (16 + 8 rope), v head dim 16
        ids, mask = _left_padded()
        return t.DeepseekV3ForCausalLM, t.DeepseekV3Config(
            num_hidden_layers=2, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=32, qk_rope_head_dim=8,
            qk_nope_head_dim=16, v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=32, first_k_dense_replace=1, n_group=1, topk_group=1,
            max_position_embeddings=64, **SMALL), dict(input_ids=ids, attention_mask=mask), mask
    if kind == "gpt_bigcode":  # multi-query attention
        ids, mask = _left_padded()
        return t.GPTBigCodeForCausalLM, t.GPTBigCodeConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4,
                                                           multi_query=True, n_positions=64), \
            dict(input_ids=ids, attention_mask=mask), mask
    if kind == "deepseek_v4":
        # zero-pads the mask to its compressed KV slots before attention: window rows padded that
        # way are no mask, so it gets eager's additive mask and runs in PyTorch
        config = t.AutoConfig.for_model("deepseek_v4")
        for key, value in dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=1, head_dim=16, vocab_size=VOCAB, max_position_embeddings=128,
                               initializer_range=0.05, layer_types=list(config.layer_types[:2]),
                               pad_token_id=0, bos_token_id=1, eos_token_id=2).items():
            setattr(config, key, value)
        ids, mask = _left_padded()
        return t.DeepseekV4ForCausalLM, config, dict(input_ids=ids, attention_mask=mask), mask
    if kind == "t5":
        ids, mask = _right_padded()
        return t.T5ForConditionalGeneration, t.T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=96,
                                                        num_layers=2, num_heads=4), \
            dict(input_ids=ids, attention_mask=mask, decoder_input_ids=_ids(5, (2, 7))), None
    raise AssertionError(kind)


# (flash launches, varlen launches, PyTorch fallbacks) of one forward
EXPECTED = {
    "bert": (2, 0, 0),
    "modernbert": (2, 1, 0),         # the local layer runs the varlen kernel with window (4, 4)
    "distilbert": (2, 0, 0),
    "clip": (4, 0, 0),
    "starcoder2": (0, 2, 0),
    "vit": (2, 0, 0),
    "bart": (6, 0, 0),               # encoder self, decoder self (causal), decoder cross
    "whisper": (6, 0, 0),
    "deepseek_v3": (2, 0, 0),        # v zero-padded to q/k's head dim for the launch
    "gpt_bigcode": (2, 0, 0),
    "t5": (0, 0, 6),                 # T5's relative position bias is an additive score bias
    "deepseek_v4": (0, 0, 2),        # edits its mask (MASK_EDITING_MODELS): eager's mask, PyTorch
}


def build(cls, config, attn: str, dtype: torch.dtype, state=None):
    torch.manual_seed(0)
    # a fresh config per model: transformers writes the attention implementation into it
    model = cls._from_config(copy.deepcopy(config), attn_implementation=attn, dtype=torch.float32)
    if state is not None:
        model.load_state_dict(state)
    return model.to(dtype).eval()


def three_models(cls, config):
    """fp32 eager (the reference), bf16 eager (the baseline) and bf16 tritune, same weights."""
    name = tritune.register_transformers()
    ref = build(cls, config, "eager", torch.float32)
    state = ref.state_dict()
    return ref, build(cls, config, "eager", torch.bfloat16, state), build(cls, config, name, torch.bfloat16, state)


def output_of(result) -> torch.Tensor:
    for name in ("logits", "last_hidden_state", "logits_per_image"):
        value = getattr(result, name, None)
        if value is not None:
            return value.float()
    raise AssertionError(f"no logits or last_hidden_state in {type(result).__name__}")


def bf16(inputs: dict) -> dict:
    return {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}


@pytest.fixture
def launches(monkeypatch):
    seen = {"flash": 0, "varlen": 0, "fallback": 0}

    def spy(name, module, attr):
        real = getattr(module, attr)

        def counted(*args, **kwargs):
            seen[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, attr, counted)

    spy("flash", flash_kernel, "launch")
    spy("varlen", varlen_kernel, "launch_varlen")
    spy("fallback", integration, "_torch_attention")
    return seen


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_forward_matches_eager(kind, launches, caplog):
    cls, config, inputs, valid = case(kind)
    ref, base, model = three_models(cls, config)
    with torch.no_grad():
        expected = output_of(ref(**inputs))
        baseline = output_of(base(**bf16(inputs)))
        launches.update(flash=0, varlen=0, fallback=0)
        with caplog.at_level(logging.WARNING, logger="tritune.integrations.transformers"):
            out = output_of(model(**bf16(inputs)))
    assert (launches["flash"], launches["varlen"], launches["fallback"]) == EXPECTED[kind]
    if valid is not None:
        rows = valid.bool()
        out, expected, baseline = out[rows], expected[rows], baseline[rows]
    verdict = compare(out.to(torch.bfloat16), expected, baseline)
    assert verdict.ok, verdict.message


def test_the_local_window_matters_at_this_size():
    # without the (4, 4) window the output moves by ~10x the bf16 rule's allowance (0.21 against
    # ~0.05): the forward test above would see a kernel that ignored the window
    cls, config, inputs, valid = case("modernbert")
    ref = build(cls, config, "eager", torch.float32)
    wide = copy.deepcopy(config)
    wide.local_attention = 64
    wide.sliding_window = 32
    other = build(cls, wide, "eager", torch.float32, ref.state_dict())
    with torch.no_grad():
        gap = (output_of(ref(**inputs)) - output_of(other(**inputs)))[valid.bool()].abs().max()
    assert gap > 0.15


def test_bidirectional_window_rows():
    from transformers.masking_utils import sliding_window_bidirectional_mask_function

    fn = sliding_window_bidirectional_mask_function(4)
    assert integration.mask_pattern(fn, 4) == ("sliding_bidirectional", 4)
    assert integration.mask_pattern(fn, 5) == (None, None)  # local_size must be the window it encodes
    padding = torch.tensor([[1] * 10, [1] * 7 + [0] * 3], dtype=torch.bool)
    rows = integration.tritune_mask(2, 10, 10, mask_function=fn, attention_mask=padding, local_size=4)
    assert rows.dtype == torch.int32 and rows.shape == (2, 1, 1, 5)
    assert rows.view(2, 5).tolist() == [[0, 10, 0, 4, 4], [0, 7, 0, 4, 4]]
    i, j = torch.arange(10)[:, None], torch.arange(10)[None, :]
    want = ((i - j).abs() <= 4)[None] & padding[:, None, :]
    assert torch.equal(integration.expand_window(rows.view(2, 5), 10, 10)[:, 0], want)


def test_encoder_decoder_generate_matches_a_full_forward():
    # decode steps: decoder self-attention over its cache (one query, causal) and cross-attention
    # over the padded encoder output (one query, bidirectional with the encoder's padding rows)
    cls, config, inputs, _ = case("bart")
    ref, base, model = three_models(cls, config)
    new = 3
    enc = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=new, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, decoder_start_token_id=2, pad_token_id=1,
                             eos_token_id=None, bos_token_id=None, forced_bos_token_id=None,
                             forced_eos_token_id=None, min_length=0)
        steps = torch.stack(gen.logits, dim=1)
        decoder = gen.sequences[:, :-1]
        expected = ref(**enc, decoder_input_ids=decoder).logits[:, -new:]
        baseline = base(**enc, decoder_input_ids=decoder).logits[:, -new:].float()
    verdict = compare(steps.to(torch.bfloat16), expected, baseline)
    assert verdict.ok, verdict.message


def test_latent_attention_generate_matches_a_full_forward():
    cls, config, inputs, _ = case("deepseek_v3")
    ref, base, model = three_models(cls, config)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    new = 3
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
        steps = torch.stack(gen.logits, dim=1)
        full_mask = torch.cat([mask, torch.ones(2, new, dtype=mask.dtype)], dim=1)
        expected = ref(input_ids=gen.sequences, attention_mask=full_mask).logits[:, -new - 1:-1]
        baseline = base(input_ids=gen.sequences, attention_mask=full_mask).logits[:, -new - 1:-1].float()
    verdict = compare(steps.to(torch.bfloat16), expected, baseline)
    assert verdict.ok, verdict.message


def test_training_runs_in_pytorch_with_the_right_gradients(launches, caplog):
    # the kernels have no backward: a forward with grad must not cut attention out of the graph
    name = tritune.register_transformers()
    cls, config, inputs, valid = case("bert")
    ref = build(cls, config, "eager", torch.float32)
    model = build(cls, config, name, torch.float32, ref.state_dict())
    grads = []
    integration._fallback_once.cache_clear()  # logged once per process: make this test's call the first
    for m in (ref, model):
        m.zero_grad()
        with caplog.at_level(logging.WARNING, logger="tritune.integrations.transformers"):
            (output_of(m(**inputs))[valid.bool()] ** 2).mean().backward()
        grads.append(m.encoder.layer[0].attention.self.query.weight.grad)
    assert launches["flash"] == 0 and launches["fallback"] == 2
    assert grads[1] is not None and grads[1].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    assert "inputs that require grad" in caplog.text


def llama4(chunk: int):
    # 4 layers: three chunked, the fourth (no rope) full attention
    return transformers.Llama4ForCausalLM, transformers.Llama4TextConfig(
        num_hidden_layers=4, num_key_value_heads=2, head_dim=16, intermediate_size_mlp=96, num_local_experts=2,
        max_position_embeddings=64, attention_chunk_size=chunk, initializer_range=0.1, **SMALL)


@pytest.mark.parametrize(("chunk", "launched", "fallbacks"), [(16, 24, 0), (8, 36, 0)])
def test_chunked_attention_generate(chunk, launched, fallbacks, launches):
    # Llama 4: causal within chunks counted from each sequence's first token. A 13-token prompt
    # (one row left-padded by 4) and 6 new tokens: with chunk 16 the decode steps cross a chunk
    # boundary (position 16) and every layer of every step runs the kernel, the chunk as the
    # rows' lower key bound; with chunk 8 the prompt spans chunks, so the prefill's three chunked
    # layers launch once per sequence and chunk (2 + 3: row 1's padding is a chunk of its own).
    cls, config = llama4(chunk)
    ref, base, model = three_models(cls, config)
    ids, mask = _left_padded()
    new = 6
    with torch.no_grad():
        launches.update(flash=0, varlen=0, fallback=0)
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
        assert (launches["flash"], launches["fallback"]) == (launched, fallbacks)
        steps = torch.stack(gen.logits, dim=1)
        full_mask = torch.cat([mask, torch.ones(2, new, dtype=mask.dtype)], dim=1)
        expected = ref(input_ids=gen.sequences, attention_mask=full_mask).logits[:, -new - 1:-1]
        baseline = base(input_ids=gen.sequences, attention_mask=full_mask).logits[:, -new - 1:-1].float()
        unchunked = build(cls, llama4(64)[1], "eager", torch.float32, ref.state_dict())
        gap = (unchunked(input_ids=gen.sequences, attention_mask=full_mask).logits[:, -new - 1:-1] - expected)
    verdict = compare(steps.to(torch.bfloat16), expected, baseline)
    assert verdict.ok, verdict.message
    assert gap.abs().max() > 10 * verdict.allowed  # the chunks matter here: ignoring them would fail


def test_chunked_mask_rows():
    from transformers.masking_utils import chunked_causal_mask_function

    fn = chunked_causal_mask_function(4, torch.tensor([0, 2]))
    assert integration.mask_pattern(fn, 4) == ("chunked", 4)
    padding = torch.tensor([[1] * 10, [0, 0] + [1] * 8], dtype=torch.bool)
    # one decode query at position 9: row 0's chunk starts at 8, row 1's (counted from 2) at 6
    rows = integration.tritune_mask(2, 1, 10, q_offset=9, mask_function=fn, attention_mask=padding, local_size=4)
    assert rows.view(2, 3).tolist() == [[8, 10, 9], [6, 10, 9]]
    # a prefill across chunk boundaries: 7-column rows (lo, hi, shift, -1, 0, chunk, phase)
    full = integration.tritune_mask(2, 10, 10, mask_function=fn, attention_mask=padding, local_size=4)
    assert full.view(2, 7).tolist() == [[0, 10, 0, -1, 0, 4, 0], [2, 10, 0, -1, 0, 4, 2]]
    i, j = torch.arange(10)[:, None], torch.arange(10)[None, :]
    want = torch.stack([fn(torch.tensor(b), 0, i, j) & padding[b][None, :] for b in range(2)])
    assert torch.equal(integration.expand_window(full.view(2, 7), 10, 10)[:, 0], want)


def test_mangled_window_rows_are_refused_not_read_as_a_mask():
    q = torch.randn(1, 2, 4, 16, dtype=torch.bfloat16)
    # a model that zero-pads the [B, 1, 1, 3] rows to its key length (6) would add them as a bias
    padded = torch.nn.functional.pad(torch.tensor([[[[0, 4, 0]]]], dtype=torch.int32), (0, 3))
    module = torch.nn.Module()
    with pytest.raises(ValueError, match="edits its attention mask"):
        integration.tritune_attention_forward(module, q, q, q, padded)
