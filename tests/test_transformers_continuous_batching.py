"""transformers' continuous batching (``generate_batch``) and the tuned kernels.

transformers 5.24 takes a custom kernel for continuous batching only as a flash-named *hub
kernel* ("org/repo"), loaded by the `kernels` package, which is not installed here (see
``tritune.integrations.transformers.CONTINUOUS_BATCHING``). Two facts are checked: the registered
``"tritune"`` implementation is refused by ``generate_batch`` (if transformers starts accepting
it, this test fails and the integration should wire it in), and ``tritune.flash_attn`` has the
API continuous batching calls: served as the hub kernel module (a stand-in for the `kernels`
package's loader), ``generate_batch`` runs every layer's attention through our varlen kernel and
gives eager's greedy tokens.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tritune  # noqa: E402
import tritune.flash_attn as tritune_flash_attn  # noqa: E402
import tritune.kernels.varlen_attention as varlen_kernel  # noqa: E402

PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [8, 9]]
NEW_TOKENS = 3


def tiny_llama(attn: str, state=None):
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                      max_position_embeddings=128)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=torch.float32)
    if state is not None:
        model.load_state_dict(state)
    return model.to(torch.bfloat16).eval()


def generation_config():
    return transformers.GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=-1,
                                         pad_token_id=0)


def test_generate_batch_refuses_a_custom_named_implementation():
    model = tiny_llama(tritune.register_transformers())
    with pytest.raises(ValueError, match="not supported for continuous batching"):
        model.generate_batch(inputs=PROMPTS, generation_config=generation_config())


def serve_as_hub_kernel(monkeypatch):
    """Stand in for the `kernels` package: transformers' hub loader returns tritune.flash_attn."""
    import transformers.integrations.hub_kernels as hub_kernels

    monkeypatch.setattr(hub_kernels, "is_kernels_available", lambda *a, **k: True)
    monkeypatch.setattr(hub_kernels, "get_kernel", lambda *a, **k: tritune_flash_attn)


@pytest.mark.slow
def test_generate_batch_runs_tritune_flash_attn_as_a_hub_kernel(monkeypatch):
    serve_as_hub_kernel(monkeypatch)
    launches = []
    real_launch = varlen_kernel.launch_varlen

    def spy(*args, **kwargs):
        launches.append(1)
        return real_launch(*args, **kwargs)

    monkeypatch.setattr(varlen_kernel, "launch_varlen", spy)
    eager = tiny_llama("eager")
    model = tiny_llama("tritune/flash-attn2", eager.state_dict())
    cb = transformers.ContinuousBatchingConfig(num_blocks=8, max_batch_tokens=64)
    with torch.no_grad():
        out = model.generate_batch(inputs=PROMPTS, generation_config=generation_config(),
                                   continuous_batching_config=cb, warmup=False)
        expected = [eager.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                   pad_token_id=0)[0, len(p):].tolist() for p in PROMPTS]
    got = [out[f"req_{i}"].generated_tokens for i in range(len(PROMPTS))]
    assert got == expected
    assert len(launches) >= 2 * NEW_TOKENS  # both layers, every step, through the varlen kernel


def test_transformers_passes_the_serving_arguments_to_tritune_flash_attn():
    """transformers reads the flash function's signature and passes only the arguments it finds
    there: windows, softcap, gpt-oss sinks (``s_aux``) and the paged-cache arguments must all be
    found, or they would be silently dropped."""
    from transformers.modeling_flash_attention_utils import _lazy_define_process_function

    varlen = _lazy_define_process_function(tritune_flash_attn.flash_attn_varlen_func).keywords["supports_mapping"]
    assert all(varlen[name] for name in ("window_size", "softcap", "s_aux", "softmax_scale", "max_seqlen_q",
                                         "max_seqlen_k", "block_table", "dropout_p", "deterministic"))
    paged = _lazy_define_process_function(tritune_flash_attn.flash_attn_with_kvcache).keywords["supports_mapping"]
    assert all(paged[name] for name in ("window_size", "softcap", "s_aux", "softmax_scale", "block_table",
                                        "cache_seqlens"))


@pytest.mark.slow
def test_transformers_flash_path_on_a_padded_batch(monkeypatch):
    """transformers' own flash integration (unpad, flash_attn_varlen_func, pad) on tritune.flash_attn."""
    from tritune.kernels import compare

    serve_as_hub_kernel(monkeypatch)
    eager = tiny_llama("eager")
    state = eager.state_dict()
    ref32 = tiny_llama("eager", state).float()
    model = tiny_llama("tritune/flash-attn2", state)
    ids = torch.randint(3, 96, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits
        ref = ref32(input_ids=ids, attention_mask=mask).logits
        base = eager(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    verdict = compare(out[valid], ref[valid], base[valid])
    assert verdict.ok, verdict.message
