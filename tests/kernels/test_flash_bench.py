"""The benchmark's dry mode: the whole pipeline on CPU under the interpreter (numbers meaningless)."""

from __future__ import annotations

import json

from tritune.bench import flash_bench


def test_dry_run_writes_json_and_markdown(tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = flash_bench.main(["--dry", "--seqs", "16", "--causal", "yes", "--json", str(out_json),
                             "--markdown", str(out_md)])
    assert code == 0
    result = json.loads(out_json.read_text())
    assert result["dry"] and result["flops_formula"].startswith("4*B*Hq*Sq*Skv*D")
    (point,) = result["points"]
    assert (point["seq"], point["batch"], point["heads"], point["head_dim"]) == (16, 6, 2, 32)
    assert point["flops"] == 4 * 6 * 2 * 16 * 16 * 32 / 2
    assert set(point["tflops"]) == {"tritune", "sdpa_flash", "sdpa_cudnn"}
    assert all(t is not None and t > 0 for t in point["tflops"].values())  # every output verified
    assert point["config_rule"] == "default" and point["config"]["block_m"] >= 16
    assert "| 16 | 6 | 2 | 32 | yes |" in out_md.read_text()
    assert "DRY RUN" in capsys.readouterr().out


def test_dry_search_and_forced_config(tmp_path):
    out_json = tmp_path / "bench.json"
    assert flash_bench.main(["--dry", "--seqs", "32", "--causal", "no", "--backends", "tritune",
                             "--search", "3", "--json", str(out_json)]) == 0
    (point,) = json.loads(out_json.read_text())["points"]
    assert point["config_rule"].startswith("search") and point["tflops"]["tritune"] > 0
    forced = "block_m=32,block_n=16,num_warps=4,num_stages=1,split_diag=0,use_tma=1"
    assert flash_bench.main(["--dry", "--seqs", "32", "--causal", "no", "--backends", "tritune",
                             "--config", forced, "--json", str(out_json)]) == 0
    (point,) = json.loads(out_json.read_text())["points"]
    assert point["config_rule"] == "forced" and point["config"]["use_tma"] is True


def test_dry_knob_variants(tmp_path):
    """--knobs times the runtime's config with each valid knob on (interpreter: all of them)."""
    out_json = tmp_path / "bench.json"
    assert flash_bench.main(["--dry", "--seqs", "64", "--causal", "yes", "--backends", "tritune", "--knobs",
                             "--json", str(out_json), "--markdown", str(tmp_path / "b.md")]) == 0
    (point,) = json.loads(out_json.read_text())["points"]
    assert {"ws", "exp2_50", "exp2_25", "persistent"} <= set(point["knob_ms"])
    assert all(ms is not None and ms > 0 for ms in point["knob_ms"].values())  # every variant verified
    assert point["tflops"]["tritune"] > 0 and point["config_rule"].startswith("default")
    assert "knobs ms" in (tmp_path / "b.md").read_text()


def test_bad_config_is_a_one_line_error(capsys):
    assert flash_bench.main(["--dry", "--config", "block_m"]) == 2
    assert "error:" in capsys.readouterr().err
