"""``tritune cost-model train / eval / rank``: JSON keys, text tables, one-line errors."""

import json
import os

import pytest
from tritune.cli import main
from tritune.db import Trial, TuningDB
from tritune.kernels import kernel_hash
from tritune.search_space import FlashAttentionSpec, Hardware, space_for

FAST = ["--max-iter", "15", "--max-records-per-group", "300"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def conv_files(kernel_tuner_cache):
    folder = os.path.join(kernel_tuner_cache, "convolution_milo")
    return [os.path.join(folder, f"{gpu}.json.gz") for gpu in ("A100", "A4000", "W6600")]


def test_eval_json_has_the_metrics_per_held_out_file(capsys, conv_files):
    code, out, _ = run(capsys, "cost-model", "eval", "--landscape", *conv_files, *FAST, "--json")
    assert code == 0
    result = json.loads(out)
    assert [r["file"] for r in result["results"]] == ["convolution_milo/A100", "convolution_milo/A4000",
                                                       "convolution_milo/W6600"]
    for r in result["results"]:
        assert {"pairwise_accuracy", "peak@1", "peak@5", "naive_transfer", "train_files"} <= set(r)
        assert 0.5 < r["pairwise_accuracy"] <= 1 and 0 < r["peak@5"] <= 1
    assert set(result["mean"]) >= {"pairwise_accuracy", "peak@1", "peak@5"}


def test_eval_text_table_and_shots(capsys, conv_files):
    code, out, _ = run(capsys, "cost-model", "eval", "--landscape", *conv_files[:2], *FAST, "--shots", "10")
    assert code == 0
    assert "mean (all files)" in out and "naive pw" in out and "shots=10" in out


def test_eval_needs_two_files_per_kernel(capsys, conv_files):
    code, _, err = run(capsys, "cost-model", "eval", "--landscape", conv_files[0])
    assert code == 2 and "no other landscape" in err and len(err.strip().splitlines()) == 1


def test_train_then_rank(capsys, conv_files, tmp_path):
    model = tmp_path / "conv.model"
    code, out, _ = run(capsys, "cost-model", "train", "--landscape", *conv_files[1:], "--output", model, *FAST, "--json")
    assert code == 0 and model.exists()
    info = json.loads(out)
    members = info["kernels"]["convolution_kernel"]["members"]
    assert [m["hardware"] for m in members] == ["NVIDIA RTX A4000", "AMD Radeon PRO W6600"]
    code, out, _ = run(capsys, "cost-model", "rank", "--model", model, "--landscape", conv_files[0], "--top", "3", "--json")
    assert code == 0
    ranked = json.loads(out)
    assert ranked["candidates"] == 4362 and len(ranked["top"]) == 3
    assert all(r["true_time_ms"] is not None for r in ranked["top"])
    code, out, _ = run(capsys, "cost-model", "rank", "--model", model, "--landscape", conv_files[0], "--top", "2")
    assert code == 0 and "predicted fastest first" in out


def test_train_from_a_tuning_database(capsys, tmp_path):
    hw = Hardware.cpu_interpreter()
    db_path = tmp_path / "tuned.db"
    with TuningDB(db_path) as db:
        for seq in (64, 256):
            spec = FlashAttentionSpec(batch=1, heads_q=2, heads_kv=2, seq_q=seq, seq_kv=seq, head_dim=64, dtype="fp16")
            for i, config in enumerate(space_for(spec, hw).enumerate()[:12]):
                db.record_trial(Trial(hardware=hw, kernel=spec.kernel, kernel_hash=kernel_hash(spec.kernel),
                                      bucket=spec.bucket().key, spec=spec.to_dict(), config=config, status="ok",
                                      backend="interpreter", real_timing=False, time_ms=1.0 + (i * 7) % 5))
    out_model = tmp_path / "fa.model"
    code, out, err = run(capsys, "cost-model", "train", "--db", db_path, "--output", out_model, "--json")
    assert code == 0, err
    info = json.loads(out)
    member = info["kernels"]["flash_attention"]["members"][0]
    assert member["problems"] == 2 and member["records"] == 24
    assert "smem_est" in info["kernels"]["flash_attention"]["features"]
    code, out, err = run(capsys, "cost-model", "rank", "--model", out_model, "--kernel", "flash_attention", "--shape",
                       "B=1", "Hq=2", "Hkv=2", "seq=128", "D=64", "dtype=fp16", "--hardware", "H100", "--json")
    assert code == 0, err
    assert len(json.loads(out)["top"]) == 10


def test_train_errors(capsys, tmp_path):
    code, _, err = run(capsys, "cost-model", "train", "--db", tmp_path / "none.db", "--output", tmp_path / "m")
    assert code == 2 and "does not exist" in err
    with pytest.raises(SystemExit):
        main(["cost-model", "train", "--output", str(tmp_path / "m")])  # neither --landscape nor --db
