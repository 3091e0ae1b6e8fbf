"""bench/vllm_bench.py's dry mode: our layer step (cache write + attention) and vLLM's
unified_attention run on the same vLLM-layout cache under the interpreter, pass the float64 check
and agree with each other (vLLM's cache write needs a GPU: its step is timed there only)."""

import json

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: scripts/vllm_venv.sh makes the side virtualenv")


def test_vllm_bench_dry_runs_both_steps_and_they_agree(vllm_triton, tmp_path, capsys):
    from tritune.bench import vllm_bench

    out = tmp_path / "bench.json"
    assert vllm_bench.main(["--dry", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "triton_unified_attention" in result["vllm"]
    assert len(result["rows"]) >= 4
    for row in result["rows"]:
        assert row["tritune_ok"] and row["vllm_ok"], row
        assert row["max_diff"] < 4e-3, row
        assert row["tritune_ms"] > 0 and row["tritune_attention_ms"] > 0 and row["vllm_attention_ms"] > 0
        assert row["vllm_ms"] is None  # vLLM's cache write needs a CUDA device
    assert "TRITON_ATTN step" in capsys.readouterr().out
