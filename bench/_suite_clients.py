"""The GPU suite's ``clients`` part: tiny transformers models with ``attn_implementation="tritune"``.

Each model (random weights from a local config, no download) runs as an fp32 eager reference, a
bf16 eager baseline and the bf16 tritune model with the same weights, on a batch with padding;
the tritune output on the positions that mean something must be within the bf16 rule
(``tritune.kernels.compare``), and the launches of each kernel (and of the PyTorch fallback) are
counted. On a GPU this checks the integration paths (padding rows, sliding and two-sided
windows, cross-attention, latent attention, chunks) on compiled kernels; the builders are also
the CPU test suite's (tests/test_transformers_model_zoo.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

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
    import transformers as t
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
    if kind == "gemma3_vision":
        # 4 image tokens that see their whole image (bidirectional), text causal; sliding window 6
        config = t.Gemma3Config(
            text_config=dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=6,
                             max_position_embeddings=256, query_pre_attn_scalar=16, initializer_range=0.1,
                             layer_types=["sliding_attention", "full_attention"]),
            vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                               image_size=16, patch_size=4),
            mm_tokens_per_image=4, image_token_index=250, boi_token_index=251, eoi_token_index=252)
        text = _ids(7, (1, 10))
        ids = torch.cat([text[:, :2], torch.tensor([[251, 250, 250, 250, 250, 252]]), text[:, 2:]], dim=1)
        pixels = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        return t.Gemma3ForConditionalGeneration, config, \
            dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                 token_type_ids=(ids == 250).long()), None
    if kind == "bigbird_pegasus":
        # mixed: the encoder's layers add the mask to their scores themselves (eager's mask, no
        # launch), the decoder's self- and cross-attention dispatch through the interface
        ids, mask = _right_padded()
        return t.BigBirdPegasusForConditionalGeneration, t.BigBirdPegasusConfig(
            vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96, max_position_embeddings=64,
            attention_type="original_full"), \
            dict(input_ids=ids, attention_mask=mask, decoder_input_ids=_ids(5, (2, 7))), None
    if kind in ("falcon", "falcon_alibi"):
        # Falcon picks its layer class from a table (_class_tables): grouped-query layers run the
        # kernel through its flash-attention class; ALiBi layers compute their scores themselves
        ids, mask = _left_padded()
        layout = dict(new_decoder_architecture=True, num_kv_heads=2) if kind == "falcon" else \
            dict(new_decoder_architecture=False, multi_query=True, alibi=True)
        return t.FalconForCausalLM, t.FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                                   num_attention_heads=4, **layout), \
            dict(input_ids=ids, attention_mask=mask), mask
    if kind == "gpt_neo":  # a table too, whose flash class ignores the local layers' window: eager
        ids, mask = _left_padded()
        return t.GPTNeoForCausalLM, t.GPTNeoConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4,
                                                   attention_types=[[["global", "local"], 1]], window_size=4,
                                                   bos_token_id=1, eos_token_id=2), \
            dict(input_ids=ids, attention_mask=mask), mask
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
    "t5": (6, 0, 0),                 # relative position bias: the kernel adds it to the scores
    "gemma3_vision": (2, 6, 0),      # vision tower; per layer: text, image block, text
    "deepseek_v4": (0, 0, 2),        # edits its mask (MASK_EDITING_MODELS): eager's mask, PyTorch
    "bigbird_pegasus": (4, 0, 0),    # decoder self + cross on the kernel; the encoder scores itself
    "falcon": (2, 0, 0),             # through its flash-attention layer class (_class_tables)
    "falcon_alibi": (0, 0, 0),       # its own layers (ALiBi): eager's mask, no launch
    "gpt_neo": (0, 0, 0),            # its own layers (local windows): eager's mask, no launch
}


def build(cls, config, attn: str, dtype: torch.dtype, state=None, device: str = "cpu"):
    torch.manual_seed(0)
    # a fresh config per model: transformers writes the attention implementation into it
    model = cls._from_config(copy.deepcopy(config), attn_implementation=attn, dtype=torch.float32)
    if state is not None:
        model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()


def three_models(cls, config, device: str = "cpu"):
    """fp32 eager (the reference), bf16 eager (the baseline) and bf16 tritune, same weights."""
    import tritune

    name = tritune.register_transformers()
    ref = build(cls, config, "eager", torch.float32, device=device)
    state = ref.state_dict()
    return (ref, build(cls, config, "eager", torch.bfloat16, state, device),
            build(cls, config, name, torch.bfloat16, state, device))


def output_of(result) -> torch.Tensor:
    for name in ("logits", "last_hidden_state", "logits_per_image"):
        value = getattr(result, name, None)
        if value is not None:
            return value.float()
    raise AssertionError(f"no logits or last_hidden_state in {type(result).__name__}")


def bf16(inputs: dict) -> dict:
    return {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}


@contextmanager
def counting_launches() -> Iterator[dict[str, int]]:
    """Counts of the flash and varlen kernel launches and of the PyTorch fallback, while inside."""
    import tritune.kernels.flash_attention as flash_kernel
    import tritune.kernels.varlen_attention as varlen_kernel
    from tritune.integrations import transformers as integration

    seen = {"flash": 0, "varlen": 0, "fallback": 0}
    spots = [("flash", flash_kernel, "launch"), ("varlen", varlen_kernel, "launch_varlen"),
             ("fallback", integration, "_torch_attention")]
    originals = [getattr(module, attr) for _, module, attr in spots]

    def counted(key, real):
        def run(*args, **kwargs):
            seen[key] += 1
            return real(*args, **kwargs)
        return run

    for (key, module, attr), real in zip(spots, originals, strict=True):
        setattr(module, attr, counted(key, real))
    try:
        yield seen
    finally:
        for (_, module, attr), real in zip(spots, originals, strict=True):
            setattr(module, attr, real)


def llama4(chunk: int):
    import transformers as t

    # 4 layers: three chunked, the fourth (no rope) full attention
    return t.Llama4ForCausalLM, t.Llama4TextConfig(
        num_hidden_layers=4, num_key_value_heads=2, head_dim=16, intermediate_size_mlp=96, num_local_experts=2,
        max_position_embeddings=64, attention_chunk_size=chunk, initializer_range=0.1, **SMALL)




# The suite's models: one per integration path, cheapest first (a dry run takes the first two).
SUITE_KINDS = ("bert", "starcoder2", "modernbert", "bart", "deepseek_v3", "gemma3_vision", "gpt_bigcode", "clip", "t5",
               "falcon")  # t5: the biased flash launch; falcon: its flash-class adapter


def check(kind: str, device: str) -> dict[str, Any]:
    """One model's forward against eager on ``device``: the rule's verdict and the launches."""
    from tritune.kernels import compare

    cls, config, inputs, valid = case(kind)
    ref, base, model = three_models(cls, config, device)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    with torch.no_grad():
        expected = output_of(ref(**inputs))
        baseline = output_of(base(**bf16(inputs)))
        with counting_launches() as seen:
            out = output_of(model(**bf16(inputs)))
    if valid is not None:
        rows = valid.to(device).bool()
        out, expected, baseline = out[rows], expected[rows], baseline[rows]
    verdict = compare(out.to(torch.bfloat16), expected, baseline)
    return {"model": kind, "ok": verdict.ok and tuple(seen.values()) == EXPECTED[kind], "error": verdict.error,
            "allowed": verdict.allowed, "launches": dict(seen), "expected_launches": EXPECTED[kind],
            "within_rule": verdict.ok, "message": verdict.message}


def clients(ctx: Any) -> dict[str, Any]:
    """The ``clients`` part of the GPU suite (see the module doc)."""
    rows, failures = [], []
    kinds = SUITE_KINDS[:2] if ctx.dry else SUITE_KINDS
    for kind in kinds:
        if ctx.expired(reserve_s=20):
            break
        try:
            r = check(kind, ctx.device)
        except Exception as exc:  # noqa: BLE001 -- e.g. a model class the image's transformers lacks
            r = {"model": kind, "ok": False, "error": float("nan"), "allowed": float("nan"), "launches": {},
                 "expected_launches": EXPECTED[kind], "message": f"{type(exc).__name__}: {exc}"}
        rows.append([r["model"], r["ok"], r["error"], r["allowed"], r["launches"], r["expected_launches"]])
        if not r["ok"]:
            failures.append(r)
    return {"complete": len(rows) == len(kinds), "failed": len(failures), "failures": failures,
            "table": {"header": ["model", "ok", "max error", "allowed", "launches", "expected (flash, varlen, fallback)"],
                      "rows": rows},
            "notes": ["forward of a padded batch, bf16, against an fp32 eager run; allowed = 2x eager-in-bf16's "
                      "error + slack; ok also needs the expected launches (no silent fallback)"],
            "headline": f"{len(rows) - len(failures)}/{len(rows)} models ok"}
