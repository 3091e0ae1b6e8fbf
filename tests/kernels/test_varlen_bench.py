"""The serving benchmark's dry mode: its whole pipeline on CPU under the interpreter (times meaningless)."""

from __future__ import annotations

import json
import textwrap

import torch
from tritune.bench import varlen_bench
from tritune.bench._varlen_backends import ServingBatch, check, make_serving_batch, sub_batch, work

# A stand-in for vLLM's module: same entry point and keywords as vllm 0.33's unified_attention,
# computed by our float64 reference. It proves the bench imports the module from --vllm-path and
# calls it as vLLM's backend does (keywords, out written in place); not vLLM's numerics.
FAKE_VLLM = textwrap.dedent('''
    CALLS = []

    def unified_attention(q, k, v, out, cu_seqlens_q, max_seqlen_q, seqused_k, max_seqlen_k, softmax_scale,
                          causal, window_size, block_table, softcap, q_descale, k_descale, v_descale,
                          seq_threshold_3D=None, num_par_softmax_segments=None, softmax_segm_output=None,
                          softmax_segm_max=None, softmax_segm_expsum=None, alibi_slopes=None, output_scale=None,
                          qq_bias=None, sinks=None, **rest):
        from tritune.kernels.varlen_attention import reference_attention
        assert causal is True and tuple(window_size) == (-1, -1) and softcap == 0.0
        assert softmax_segm_output.shape[2] == num_par_softmax_segments == 16
        ref = reference_attention(q, k, v, cu_seqlens_q, max_seqlen_q, max_seqlen_k, seqused_k=seqused_k,
                                  block_table=block_table, causal=True, scale=softmax_scale)
        out.copy_(ref.to(out.dtype))
        CALLS.append(seq_threshold_3D)
''')


def test_dry_run_reports_every_part_and_goal(tmp_path, capsys):
    out_json, out_md = tmp_path / "v.json", tmp_path / "v.md"
    (tmp_path / "vllm_dir").mkdir()
    (tmp_path / "vllm_dir" / "triton_unified_attention.py").write_text(FAKE_VLLM)
    code = varlen_bench.main(["--dry", "--batches", "mixed", "--vllm-path", str(tmp_path / "vllm_dir"),
                              "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 0
    result = json.loads(out_json.read_text())
    assert result["dry"] and result["work_formula"].startswith("kernels/varlen_attention.py work_of")
    (batch,) = result["batches"]
    assert batch["name"] == "mixed" and batch["num_seqs"] == 4 and batch["total_q"] == 27
    parts = batch["parts"]
    assert set(parts) == {"all", "decode", "prefill"}
    assert set(parts["all"]["timings"]) == {"tritune", "vllm"}  # every output verified, so every one timed
    assert set(parts["decode"]["timings"]) == {"tritune", "paged"}
    assert set(parts["prefill"]["timings"]) == {"tritune", "flash"}
    # FLOPs and bytes of the decode rows as work_of counts them: 3 rows over 20/30/40 keys, Hq 4, Hkv 2, D 32
    assert parts["decode"]["flops"] == 4.0 * (20 + 30 + 40) * 4 * 32
    assert parts["decode"]["bytes"] == 2 * (20 + 30 + 40) * 2 * 32 * 2 + 2 * 3 * 4 * 32 * 2
    tok = parts["all"]["timings"]["tritune"]
    assert tok["ms"] > 0 and tok["graph_ms"] is None and tok["tokens_per_s"] > 0  # no graphs on CPU
    assert set(batch["goals"]) >= {"vs_vllm", "decode_vs_paged", "prefill_vs_flash"}
    assert all(v is None for v in batch["goals"]["met"].values())  # CPU times judge no goal
    text = out_md.read_text()
    assert "| mixed | all (4 seqs, 27 tok) | vllm |" in text and "DRY RUN" in capsys.readouterr().out


def test_without_vllm_the_reason_is_printed(tmp_path, capsys):
    out_json = tmp_path / "v.json"
    assert varlen_bench.main(["--dry", "--batches", "decode-3", "--backends", "tritune", "vllm",
                              "--vllm-path", str(tmp_path / "nothing"), "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert any(n.startswith("vllm skipped: vLLM's triton unified_attention is not importable") for n in result["notes"])
    assert "vllm skipped" in capsys.readouterr().out
    assert set(result["batches"][0]["parts"]["all"]["timings"]) == {"tritune"}


def test_check_catches_a_wrong_row():
    batch = ServingBatch("t", (1, 3, 12), (9, 17, 21), "")
    x = make_serving_batch(batch, heads_q=4, heads_kv=2, head_dim=16, block_size=8, dtype=torch.float16,
                           device="cpu", seed=0, vllm_layout=True)
    from tritune.kernels.varlen_attention import reference_attention

    ref = reference_attention(x["q"], x["k"], x["v"], x["cu_seqlens_q"], seqused_k=x["seqused_k"],
                              block_table=x["block_table"], causal=True).to(torch.float16)
    assert check(x, ref, range(3), sample_rows=2)[0]
    bad = ref.clone()
    bad[-1, 1, 3] += 0.5  # the chunk's last row: a sampled boundary row
    ok, message = check(x, bad, range(3), sample_rows=2)
    assert not ok and "max error" in message
    sub = sub_batch(x, [2])
    assert sub["q"].shape[0] == 12 and sub["max_seqlen_k"] == 21
    assert work(sub)["flops"] == 4.0 * sum(range(10, 22)) * 4 * 16  # row i sees keys 0..9+i


def test_bad_arguments_are_one_line_errors(capsys):
    assert varlen_bench.main(["--dry", "--batches", "nope"]) == 2
    assert varlen_bench.main(["--dry", "--heads", "5/2"]) == 2
    err = capsys.readouterr().err
    assert "--batches nope: unknown" in err and "Hq must be a multiple" in err
