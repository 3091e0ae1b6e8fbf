"""Serving problems (varlen_attention) from model configs, the `serving` preset, and the CLI around them."""

from __future__ import annotations

import json

import pytest
from tritune.cli import main
from tritune.search_space import Hardware
from tritune.tuner import model_config_specs
from tritune.tuner._problems import dedupe, kernel_problem, layer_kinds, preset_specs


def _write(tmp_path, **cfg):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path / "config.json"


def _serving(specs):
    return [s for k, s in specs if k == "varlen_attention"]


def test_a_llama_config_adds_the_four_serving_steps(tmp_path):
    path = _write(tmp_path, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096, torch_dtype="bfloat16")
    specs = model_config_specs(path)
    assert {k for k, _ in specs} == {"flash_attention", "paged_attention", "varlen_attention"}
    serving = _serving(specs)
    assert [(s.num_seqs, s.total_q, s.max_seqlen_q) for s in serving] == [(65, 576, 512), (8, 8, 1), (64, 64, 1),
                                                                         (8, 32, 4)]
    for s in serving:
        assert (s.heads_q, s.heads_kv, s.head_dim, s.block_size, s.dtype, s.max_seqlen_k) == (32, 8, 128, 16, "bf16", 4096)
        assert s.causal and (s.window_left, s.window_right) == (-1, 0) and not (s.softcap or s.sinks or s.alibi)
    # each is its own bucket, and a problem the tuner can build
    problems = dedupe(kernel_problem(k, s, Hardware.cpu_interpreter()) for k, s in specs if k == "varlen_attention")
    assert len(problems) == 4 and all(p.space.is_valid(p.space.default()) for p in problems)
    only = model_config_specs(path, include=("serving",))
    assert _serving(only) == serving and len(only) == 4


def test_windows_softcap_and_sinks_come_from_the_config(tmp_path):
    gemma2 = {"model_type": "gemma2", "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
              "hidden_size": 3584, "sliding_window": 4096, "attn_logit_softcapping": 50.0,
              "layer_types": ["sliding_attention", "full_attention"] * 2, "torch_dtype": "float32"}
    serving = _serving(model_config_specs(_write(tmp_path, **gemma2)))
    assert len(serving) == 8 and {s.window_left for s in serving} == {4095, -1}
    assert all(s.softcap and not s.sinks and s.head_dim == 256 for s in serving)
    assert {s.dtype for s in serving} == {"bf16"}  # fp32 models are served in bf16 by the varlen kernel
    assert layer_kinds({"model_type": "gemma2", "sliding_window": 4096}) == [(4095, False, False), (-1, False, False)]
    assert layer_kinds({"model_type": "gpt_oss", "sliding_window": 128,
                        "layer_types": ["sliding_attention", "full_attention"]}) == [(127, False, True), (-1, False, True)]
    assert layer_kinds({"model_type": "mistral", "sliding_window": 4096}) == [(4095, False, False)]  # every layer
    assert layer_kinds({"model_type": "mistral", "sliding_window": None}) == [(-1, False, False)]
    assert layer_kinds({"model_type": "qwen2", "sliding_window": 32768, "use_sliding_window": False}) == [
        (-1, False, False)]
    with pytest.raises(ValueError, match="sliding_window='4k' is not a positive integer"):
        layer_kinds({"sliding_window": "4k"}, "cfg.json")


def test_serving_preset_and_cli(capsys, tmp_db):
    specs = preset_specs("serving")
    assert len(specs) == 4 and {k for k, _ in specs} == {"varlen_attention"}
    assert main(["tune", "--list-presets"]) == 0
    assert "serving" in capsys.readouterr().out
    assert main(["tune", "--serving", "--shape", "B=1", "--db", str(tmp_db)]) == 2
    assert "--serving takes --model-config or nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "--serving" in text and "varlen_attention keys: S T Sq ctx Hq Hkv D block_size" in text


def test_query_answers_for_a_serving_step(capsys, tmp_db):
    argv = ["query", "--kernel", "varlen_attention", "--shape", "S=65", "T=576", "Sq=512", "ctx=4096", "Hq=32",
            "Hkv=8", "D=128", "block_size=16", "dtype=bf16", "kv_dtype=fp8", "causal=1", "left=4095", "right=0",
            "softcap=1", "alibi=0", "sinks=1", "--hardware", "H100", "--db", str(tmp_db), "--json"]
    assert main(argv) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kernel"] == "varlen_attention" and answer["rule"] == "default"
    assert answer["spec"]["window_left"] == 4095 and answer["spec"]["kv_dtype"] == "fp8" and answer["spec"]["sinks"]
    # rows beyond one per sequence are what rounds: 511 extra rows -> 512
    assert answer["bucket"].endswith("num_seqs=128,extra_q=512,max_seqlen_q=512,max_seqlen_k=4096")
    assert {"block_m", "pack_gqa", "num_splits"} <= set(answer["config"])
    with pytest.raises(SystemExit):
        main(["query", "--help"])
    assert "varlen_attention (a serving step) keys: S (sequences) T" in " ".join(capsys.readouterr().out.split())
