"""vLLM's own Triton ``unified_attention`` (vllm 0.33, taken from the installed package) and
``tritune.varlen_attention`` agree on the same serving steps, both under the Triton interpreter.

It is the baseline the GPU benchmark (bench/varlen_bench.py) times ours against. Mixed steps take
vLLM's 2-D kernel, a decode-only step with split-KV scratch its 3-D kernel plus segment reduce.
fp16 only: under the interpreter ``tl.dot`` multiplies bf16 operands as raw bit patterns
(triton-lang/triton#11584) and vLLM's kernel has no fp32 upcast for it, so its bf16 output is
garbage on CPU; ours upcasts when interpreting and its bf16 path is checked against the float64
reference in test_vllm_backend.py.
"""

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: scripts/vllm_venv.sh makes the side virtualenv")

import torch  # noqa: E402
import tritune  # noqa: E402
from _vllm_batches import DECODE, MIXED, make_step  # noqa: E402
from tritune.kernels.varlen_attention import reference_attention  # noqa: E402

HEAD_DIM = 64
CASES = {  # name: (requests, Hq, Hkv, features)
    "mixed_mha": (MIXED, 4, 4, {}),
    "mixed_gqa_window": (MIXED, 4, 1, {"window_size": (7, 0)}),
    "mixed_softcap_sinks": (MIXED, 4, 2, {"softcap": 5.0, "sinks": True}),
    "decode_3d_gqa": (DECODE, 4, 2, {}),
    "decode_3d_window": (DECODE, 4, 2, {"window_size": (9, 0)}),
}


def _unified_attention(vllm_triton):
    from vllm.v1.attention.ops.triton_unified_attention import unified_attention

    return unified_attention


@pytest.mark.parametrize("name", sorted(CASES))
def test_vllm_unified_attention_agrees_with_varlen_attention(vllm_triton, name):
    requests, heads_q, heads_kv, features = CASES[name]
    step = make_step(requests, heads_q=heads_q, heads_kv=heads_kv, head_dim=HEAD_DIM, dtype=torch.float16,
                     layout="HND", padding=0, seed=7)
    from _vllm_batches import write_reference

    step.kv_cache.copy_(write_reference(step))
    k_cache, v_cache = step.caches()
    n, scale = step.num_actual_tokens, HEAD_DIM ** -0.5
    window = features.get("window_size", (-1, -1))
    softcap = features.get("softcap", 0.0)
    sinks = torch.linspace(-1.0, 2.0, heads_q, dtype=torch.float32) if features.get("sinks") else None
    common = dict(seqused_k=step.seq_lens, block_table=step.block_table, causal=True, window_size=window,
                  softcap=softcap, sinks=sinks, scale=scale)
    ours = tritune.varlen_attention(step.query[:n], k_cache, v_cache, step.query_start_loc, step.max_query_len,
                                    step.max_seq_len, **common)

    theirs = torch.zeros_like(step.query[:n])
    segments = 16
    ones = torch.ones(len(requests), heads_kv, dtype=torch.float32)
    _unified_attention(vllm_triton)(
        q=step.query[:n], k=k_cache, v=v_cache, out=theirs, cu_seqlens_q=step.query_start_loc,
        max_seqlen_q=step.max_query_len, seqused_k=step.seq_lens, max_seqlen_k=step.max_seq_len,
        softmax_scale=scale, causal=True, window_size=window, block_table=step.block_table, softcap=softcap,
        q_descale=None, k_descale=ones, v_descale=ones, seq_threshold_3D=64, num_par_softmax_segments=segments,
        softmax_segm_output=torch.empty(n, heads_q, segments, HEAD_DIM, dtype=torch.float32),
        softmax_segm_max=torch.empty(n, heads_q, segments, dtype=torch.float32),
        softmax_segm_expsum=torch.empty(n, heads_q, segments, dtype=torch.float32), sinks=sinks)

    ref = reference_attention(step.query[:n], k_cache, v_cache, step.query_start_loc, step.max_query_len,
                              step.max_seq_len, dtype=torch.float64, **common)
    their_err = (theirs.double() - ref).abs().max().item()
    our_err = (ours.double() - ref).abs().max().item()
    assert their_err < 5e-3, f"vLLM's unified_attention is off the float64 reference by {their_err}"
    torch.testing.assert_close(ours, theirs, atol=4e-3, rtol=0)
    assert our_err <= 2 * their_err + 1e-3, (our_err, their_err)
