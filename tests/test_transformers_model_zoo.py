"""``attn_implementation="tritune"`` beyond decoder-only LMs: encoders, encoder-decoders, vision
towers, latent attention (MLA) and models that must fall back.

Tiny local configs (random weights, no download). Each model runs an fp32 eager reference, an
eager bf16 baseline and the tritune bf16 model with the same weights; the tritune output on the
positions that mean something (padding excluded) must be within the bf16 rule (2x the baseline's
error against the reference, plus slack). The kernels' launches are counted per model, so a
silent fallback to PyTorch fails the test, and the models that must fall back (DeepSeek V4 edits
its mask) must say so and still be right.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tritune  # noqa: E402
from tritune.bench._suite_clients import (  # noqa: E402
    EXPECTED,
    SMALL,
    _ids,
    _left_padded,
    bf16,
    build,
    case,
    check,
    counting_launches,
    llama4,
    output_of,
    three_models,
)
from tritune.integrations import transformers as integration  # noqa: E402
from tritune.kernels import compare  # noqa: E402


@pytest.fixture
def launches():
    with counting_launches() as seen:
        yield seen


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_forward_matches_eager(kind):
    result = check(kind, "cpu")  # the GPU suite's clients part runs the same check
    assert tuple(result["launches"].values()) == EXPECTED[kind]
    assert result["within_rule"], result["message"]


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


@pytest.mark.parametrize(("kind", "launched"), [("bart", 14), ("whisper", 14), ("t5", 14)])
def test_encoder_decoder_generate_matches_eager(kind, launched, launches):
    # decode steps: decoder self-attention over its cache (one query, causal) and cross-attention
    # over the encoder output (one query, bidirectional; BART's and T5's with the encoder's padding rows;
    # T5's relative position bias on every launch).
    # 2 encoder layers + 3 steps x 2 decoder layers x (self + cross) = 14 launches
    cls, config, inputs, _ = case(kind)
    ref, base, model = three_models(cls, config)
    encoder = {k: v for k, v in inputs.items() if not k.startswith("decoder")}
    kwargs = dict(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True,
                  decoder_start_token_id=1, pad_token_id=0, eos_token_id=None)
    if kind == "whisper":
        kwargs.update(forced_decoder_ids=None, begin_suppress_tokens=None, suppress_tokens=None)
    with torch.no_grad():
        launches.update(flash=0, varlen=0, fallback=0)
        gen = model.generate(**bf16(encoder), **kwargs)
        assert launches == {"flash": launched, "varlen": 0, "fallback": 0}
        expected = ref.generate(**encoder, **kwargs)
        baseline = base.generate(**bf16(encoder), **kwargs)
    assert torch.equal(gen.sequences, expected.sequences)  # the same tokens, so the same contexts
    verdict = compare(torch.stack(gen.logits, 1).to(torch.bfloat16), torch.stack(expected.logits, 1),
                      torch.stack(baseline.logits, 1).float())
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


def test_image_blocks_matter_at_this_size():
    # with the image tokens causal like text, Gemma 3's logits move beyond the rule: the forward
    # test above (gemma3_vision) would see a kernel that ignored the image block
    cls, config, inputs, _ = case("gemma3_vision")
    ref = build(cls, config, "eager", torch.float32)
    with torch.no_grad():
        blocks = output_of(ref(**inputs))
        causal = output_of(ref(**{**inputs, "token_type_ids": torch.zeros_like(inputs["token_type_ids"])}))
    assert (blocks - causal).abs().max() > 0.3  # ~3x the forward test's allowance (0.11)


def test_image_block_rows():
    from transformers.masking_utils import (
        and_masks,
        blockwise_overlay,
        causal_mask_function,
        or_masks,
        sliding_window_overlay,
    )

    ids = torch.tensor([[-1, -1, 0, 0, 0, -1, 1, 1, -1, -1]])
    full = or_masks(causal_mask_function, blockwise_overlay(ids))
    sliding = and_masks(full, sliding_window_overlay(3))
    assert integration.mask_pattern(full, None) == ("blockwise", None)
    assert integration.mask_pattern(sliding, None) == ("blockwise_sliding", 2)
    i, j = torch.arange(10)[:, None], torch.arange(10)[None, :]
    for fn in (full, sliding):
        rows = integration.tritune_mask(1, 10, 10, mask_function=fn, attention_mask=torch.ones(1, 10, dtype=torch.bool))
        assert rows.dtype == torch.int64 and rows.shape[:3] == (1, 1, 1)
        assert torch.equal(integration.expand_blocks(integration.block_rows(rows), 10, 10)[0, 0], fn(0, 0, i, j))



def _roformer(decoder: bool):
    config = transformers.RoFormerConfig(num_hidden_layers=2, max_position_embeddings=64, is_decoder=decoder,
                                         **SMALL)
    return (transformers.RoFormerForCausalLM if decoder else transformers.RoFormerModel), config


@pytest.mark.parametrize("layout", ["causal, unpadded", "bidirectional, 3 keys, padded"])
def test_models_that_add_the_mask_to_their_scores_get_eagers_mask(layout, launches):
    # RoFormer's layers compute softmax(q k^T + mask) themselves and never call the attention
    # function. Before: the unpadded causal batch got no mask at all (off by 0.011) and the
    # window rows [2, 1, 1, 3] broadcast over 3 keys as a bias (off by 0.071), both silently.
    cls, config = _roformer(decoder=layout.startswith("causal"))
    ids = _ids(1, (2, 13) if layout.startswith("causal") else (2, 3))
    inputs = dict(input_ids=ids)
    if not layout.startswith("causal"):
        mask = torch.ones_like(ids)
        mask[1, 2:] = 0
        inputs["attention_mask"] = mask
    ref = build(cls, config, "eager", torch.float32)
    model = build(cls, config, tritune.register_transformers(), torch.float32, ref.state_dict())
    with torch.no_grad():
        gap = (output_of(ref(**inputs)) - output_of(model(**inputs))).abs().max().item()
    assert gap < 1e-6
    assert tuple(launches.values()) == (0, 0, 0)


def test_mask_readers_are_told_apart():
    from transformers.models.bert import modeling_bert
    from transformers.models.bigbird_pegasus import modeling_bigbird_pegasus as bbp
    from transformers.models.roformer import modeling_roformer
    from tritune.integrations._mask_readers import mask_reader_reason, reads_mask, skips_mask

    assert not reads_mask(modeling_bert.BertSelfAttention)  # dispatches through the interface
    assert not reads_mask(modeling_bert.BertAttention)  # a wrapper: computes no scores
    assert reads_mask(modeling_roformer.RoFormerSelfAttention)
    assert reads_mask(bbp.BigBirdPegasusSelfAttention) and not reads_mask(bbp.BigBirdPegasusDecoderAttention)
    assert mask_reader_reason(None) is None
    assert mask_reader_reason(transformers.BertConfig()) is None
    assert "roformer" in mask_reader_reason(transformers.RoFormerConfig())
    assert "AttentionInterface" in mask_reader_reason(transformers.MvpConfig())
    # a mixed module decides by the module asking: here no module at all, so the safe side
    assert mask_reader_reason(transformers.BigBirdPegasusConfig()) is not None
    # Gemma 4's audio attention scores itself, but is built from its own config class
    assert mask_reader_reason(transformers.Gemma4TextConfig()) is None
    assert mask_reader_reason(transformers.Gemma4AudioConfig()) is not None
    # BigBird-Pegasus claims neither SDPA nor flash-attn: its decoder's causal layers have
    # is_causal False, so an unpadded causal batch gets explicit rows, not None
    assert skips_mask(transformers.BertConfig()) and not skips_mask(transformers.BigBirdPegasusConfig())


def test_sparse_attention_indices_are_applied(launches):
    # DeepSeek V3.2's indexer picks `index_topk` keys per query and hands their indices to every
    # implementation but eager/SDPA (which get the restricted mask): ignoring them attends every
    # key (off by 0.27 here); the fallback restricts the mask to them, as eager does
    config = transformers.AutoConfig.for_model("deepseek_v32")
    for key, value in dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, vocab_size=SMALL["vocab_size"],
                           max_position_embeddings=64, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
                           kv_lora_rank=32, q_lora_rank=32, head_dim=8, qk_head_dim=24, index_head_dim=16,
                           index_n_heads=4, index_topk=4, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
                           topk_group=1, first_k_dense_replace=1, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2).items():
        setattr(config, key, value)
    ids, mask = _left_padded()
    ref = build(transformers.DeepseekV32ForCausalLM, config, "eager", torch.float32)
    model = build(transformers.DeepseekV32ForCausalLM, config, tritune.register_transformers(), torch.float32,
                  ref.state_dict())
    with torch.no_grad():
        gap = (ref(input_ids=ids, attention_mask=mask).logits - model(input_ids=ids, attention_mask=mask).logits)
    assert gap[mask.bool()].abs().max().item() < 1e-5
    assert launches["fallback"] == 2 and launches["flash"] == launches["varlen"] == 0
