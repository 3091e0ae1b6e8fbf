"""The TRITUNE vLLM backend against the real vllm 0.33 package, under the Triton interpreter.

Plugin -> registry -> backend class; the metadata builder over a ``CommonAttentionMetadata``
of a mixed step; the cache write through ``slot_mapping`` into a strided vLLM-layout cache; and
``forward`` against vLLM's own TRITON_ATTN implementation on the same cache and metadata (fp16:
vLLM's kernel multiplies bf16 ``tl.dot`` operands as raw bits under the interpreter), and
against tritune's float64 reference (fp16 and bf16), for MHA, GQA, a sliding-window layer, and
layers with ALiBi slopes, logit soft-capping, and sinks on a sliding window.
"""

from types import SimpleNamespace

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: scripts/vllm_venv.sh makes the side virtualenv")

import torch  # noqa: E402
from _vllm_batches import DECODE, MIXED, make_step, write_reference  # noqa: E402
from tritune.integrations.vllm import BACKEND_PATH, NAME, register  # noqa: E402
from tritune.kernels.varlen_attention import reference_attention  # noqa: E402

LAYERS = {  # name: (Hq, Hkv, sliding_window, alibi, logits_soft_cap, sinks)
    "mha": (4, 4, None, False, None, False),
    "gqa": (4, 1, None, False, None, False),
    "sliding": (4, 2, 8, False, None, False),
    "alibi": (4, 2, None, True, None, False),  # BLOOM/MPT style
    "softcap": (4, 2, None, False, 5.0, False),  # Gemma 2 style
    "sliding_sinks": (4, 2, 8, False, None, True),  # gpt-oss style
}
CASES = [(layer, *case) for layer in ("mha", "gqa", "sliding") for case in (
    ("MIXED", "HND", torch.float16), ("MIXED", "NHD", torch.bfloat16), ("DECODE", "NHD", torch.float16))]
CASES += [(layer, "MIXED", "HND", torch.float16) for layer in ("alibi", "softcap", "sliding_sinks")]
REQUESTS = {"MIXED": MIXED, "DECODE": DECODE}
HEAD_DIM = 64


def _layer():
    one = torch.ones((), dtype=torch.float32)
    return SimpleNamespace(_k_scale=one, _v_scale=one, _q_scale=one, _k_scale_float=1.0, _v_scale_float=1.0,
                           _q_scale_float=1.0)


def test_entry_point_registers_backend_and_registry_resolves_it():
    from importlib.metadata import entry_points

    from tritune.integrations.vllm import TrituneAttentionBackend
    from vllm.plugins import load_general_plugins
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    points = [e for e in entry_points(group="vllm.general_plugins") if e.name == "tritune"]
    assert [e.value for e in points] == ["tritune.integrations.vllm:register"]
    load_general_plugins()  # what every vLLM process does
    member = AttentionBackendEnum[NAME]
    assert member.get_path() == BACKEND_PATH
    assert member.get_class() is TrituneAttentionBackend
    assert TrituneAttentionBackend.get_name() == NAME
    assert register() == NAME and AttentionBackendEnum[NAME].get_class() is TrituneAttentionBackend  # idempotent


def _reasons(**changes):
    from tritune.integrations.vllm import TrituneAttentionBackend
    from vllm.platforms.interface import DeviceCapability

    args = dict(head_size=128, dtype=torch.bfloat16, kv_cache_dtype="auto", block_size=16, use_mla=False,
                has_sink=True, use_sparse=False, use_mm_prefix=False, use_per_head_quant_scales=False,
                device_capability=DeviceCapability(9, 0), attn_type="decoder", has_sliding_window=True)
    args.update(changes)
    return TrituneAttentionBackend.validate_configuration(**args)


def test_backend_selection_accepts_what_the_kernel_runs():
    assert _reasons() == []
    assert _reasons(dtype=torch.float16, kv_cache_dtype="float16", block_size=32, head_size=80) == []


@pytest.mark.parametrize("change, words", [
    (dict(head_size=72), "head_size"),
    (dict(dtype=torch.float32), "dtype"),
    (dict(kv_cache_dtype="fp8"), "kv_cache_dtype"),
    (dict(kv_cache_dtype="float16"), "kv_cache_dtype=float16"),
    (dict(block_size=8), "block_size"),
    (dict(attn_type="encoder_only"), "attention type"),
    (dict(use_mla=True), "MLA"),
    (dict(use_non_causal=True), "non-causal"),
    (dict(use_mm_prefix=True), "multimodal"),
    (dict(use_rswa=True), "R-SWA"),
])
def test_backend_selection_refuses_unsupported_options_by_name(change, words):
    reasons = _reasons(**change)
    assert reasons and any(words in r for r in reasons), reasons


@pytest.mark.parametrize("change, words", [
    (dict(attn_type="encoder"), "attn_type"),
    (dict(kv_cache_dtype="fp8"), "kv_cache_dtype"),
    (dict(head_size=72), "head_size"),
    (dict(use_alibi_sqrt=True), "use_alibi_sqrt"),
    (dict(chunk_lookback=2), "chunk_lookback"),
    (dict(alibi_slopes=[0.5] * 4, logits_soft_cap=5.0), "alibi_slopes together with logits_soft_cap"),
    (dict(alibi_slopes=[0.5] * 4, sinks=torch.zeros(4)), "alibi_slopes together with logits_soft_cap or sinks"),
])
def test_implementation_refuses_unsupported_layer_options_by_name(change, words):
    from tritune.integrations.vllm import TrituneAttentionImpl

    args = dict(num_heads=4, head_size=HEAD_DIM, scale=0.125, num_kv_heads=2, alibi_slopes=None, sliding_window=None,
                kv_cache_dtype="auto")
    args.update(change)
    with pytest.raises(ValueError, match=words):
        TrituneAttentionImpl(**args)


def test_builder_refuses_non_causal_metadata():
    step = make_step(DECODE, heads_q=4, heads_kv=2, head_dim=HEAD_DIM, dtype=torch.float16)
    with pytest.raises(ValueError, match="causal"):
        _builder(step).build(0, step.common_metadata().replace(causal=False))


def _builder(step):
    from tritune.integrations.vllm import TrituneMetadataBuilder

    return TrituneMetadataBuilder(SimpleNamespace(block_size=step.block_size), ["layer.0"], None, torch.device("cpu"))


def _layer_options(layer):
    """(positional layer args after kv_cache_dtype's place, extra kwargs) as vLLM's Attention layer
    passes them to an implementation."""
    heads_q, heads_kv, sliding, alibi, softcap, sinks = LAYERS[layer]
    slopes = [2.0 ** (-(i + 1)) for i in range(heads_q)] if alibi else None
    extra = {"sinks": torch.linspace(-1.0, 2.0, heads_q)} if sinks else {}
    return (heads_q, HEAD_DIM, HEAD_DIM ** -0.5, heads_kv, slopes, sliding, "auto", softcap), extra


def _vllm_triton_impl(layer):
    from vllm.v1.attention.backends.triton_attn import TritonAttentionImpl

    args, extra = _layer_options(layer)
    return TritonAttentionImpl(*args, **extra)


def _vllm_triton_forward(impl, step, output):
    """vLLM's TRITON_ATTN ``forward`` on the step, with the metadata its builder makes (2-D path
    for mixed steps; split-KV scratch so decode-only steps take its 3-D path)."""
    from vllm.v1.attention.backends.triton_attn import TritonAttentionMetadata

    heads_q, d = step.query.shape[1], step.query.shape[2]
    segments, rows = 16, step.query.shape[0]
    metadata = TritonAttentionMetadata(
        num_actual_tokens=step.num_actual_tokens, max_query_len=step.max_query_len,
        query_start_loc=step.query_start_loc, max_seq_len=step.max_seq_len, seq_lens=step.seq_lens,
        block_table=step.block_table, slot_mapping=step.slot_mapping, seq_threshold_3D=64,
        num_par_softmax_segments=segments,
        softmax_segm_output=torch.empty(rows, heads_q, segments, d, dtype=torch.float32),
        softmax_segm_max=torch.empty(rows, heads_q, segments, dtype=torch.float32),
        softmax_segm_expsum=torch.empty(rows, heads_q, segments, dtype=torch.float32), causal=True)
    return impl.forward(_layer(), step.query, step.key, step.value, step.kv_cache, metadata, output)


def _reference(step, impl):
    k_cache, v_cache = step.caches()
    n = step.num_actual_tokens
    return reference_attention(step.query[:n], k_cache, v_cache, step.query_start_loc, step.max_query_len,
                               step.max_seq_len, seqused_k=step.seq_lens, block_table=step.block_table, causal=True,
                               window_size=impl.window, softcap=impl.softcap, alibi_slopes=impl.alibi_slopes,
                               sinks=impl.sinks, scale=HEAD_DIM ** -0.5, dtype=torch.float64)


@pytest.mark.parametrize("layer, requests, layout, dtype", CASES)
def test_forward_writes_cache_and_matches_vllm_triton_attn(vllm_triton, layer, requests, layout, dtype):
    from tritune.integrations.vllm import TrituneAttentionImpl

    heads_q, heads_kv = LAYERS[layer][:2]
    requests = REQUESTS[requests]
    step = make_step(requests, heads_q=heads_q, heads_kv=heads_kv, head_dim=HEAD_DIM, dtype=dtype, layout=layout,
                     seed=len(requests) + heads_kv)
    metadata = _builder(step).build(0, step.common_metadata())
    args, extra = _layer_options(layer)
    impl = TrituneAttentionImpl(*args, **extra)
    expected_cache = write_reference(step)
    impl.do_kv_cache_update(_layer(), step.key, step.value, step.kv_cache, step.slot_mapping)
    assert torch.equal(step.kv_cache, expected_cache), "K/V not written through slot_mapping"

    ours = torch.full_like(step.query, float("nan"))
    assert impl.forward(_layer(), step.query, step.key, step.value, step.kv_cache, metadata, ours) is ours
    n = step.num_actual_tokens
    ref = _reference(step, impl)
    our_err = (ours[:n].double() - ref).abs().max().item()
    if dtype == torch.float16:
        theirs = torch.zeros_like(step.query)
        _vllm_triton_forward(_vllm_triton_impl(layer), step, theirs)
        their_err = (theirs[:n].double() - ref).abs().max().item()
        assert their_err < 5e-3, f"vLLM's TRITON_ATTN itself is off the reference by {their_err}"
        torch.testing.assert_close(ours[:n], theirs[:n], atol=4e-3, rtol=0)
        assert our_err <= 2 * their_err + 1e-3, (our_err, their_err)
    else:  # bf16: the interpreter cannot run vLLM's bf16 dots; the float64 reference decides
        assert our_err < 2e-2, our_err
    assert torch.isnan(ours[n:]).all(), "padding rows past num_actual_tokens were written"
