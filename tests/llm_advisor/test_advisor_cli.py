"""``tritune advisor train / suggest / eval`` end to end (tiny models, toy landscapes)."""

from __future__ import annotations

import json

import pytest
from tritune.cli import main


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_help_explains_every_action(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["advisor", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(action in out for action in ("train", "suggest", "eval"))
    for action in ("train", "suggest", "eval"):
        with pytest.raises(SystemExit):
            main(["advisor", action, "--help"])
        assert "--json" in capsys.readouterr().out


def test_train_then_suggest_then_eval(toy_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    small = ["--pretrain-steps", "3", "--finetune-steps", "5"]
    out = _json(capsys, ["advisor", "train", "--landscape", str(toy_dir), "--no-db", "--out", str(ckpt),
                         "--no-attention-spaces", *small, "--json"])
    assert out["groups"] == 4 and (ckpt / "model.safetensors").exists() and out["bytes"] < 5e6
    land = sorted(toy_dir.glob("*.json.gz"))[0]
    out = _json(capsys, ["advisor", "suggest", "--landscape", str(land), "--checkpoint", str(ckpt), "-k", "4", "--json"])
    assert len(out["proposals"]) == 4 and all("score" in p for p in out["proposals"])
    files = [str(f) for f in sorted(toy_dir.glob("*.json.gz"))[:3]]
    out = _json(capsys, ["advisor", "eval", "--landscape", *files, "-k", "3", *small, "--json"])
    assert out["summary"]["targets"] == 3
    assert {"first_fraction", "top10_fraction", "naive_first_fraction"} <= set(out["results"][0])
    assert main(["advisor", "eval", "--landscape", str(toy_dir), "--target", "nope", *small]) == 2
    assert "not among the landscapes" in capsys.readouterr().err


def test_suggest_attention_with_shipped_checkpoint(capsys):
    out = _json(capsys, ["advisor", "suggest", "--kernel", "flash_attention", "--shape", "B=2", "Hq=16", "Hkv=4",
                         "seq=1000", "D=128", "--hardware", "H100", "-k", "5", "--json"])
    assert len(out["proposals"]) == 5
    from tritune.search_space import FlashAttentionSpec, Hardware, space_for

    space = space_for(FlashAttentionSpec.parse("B=2,Hq=16,Hkv=4,seq=1000,D=128"), Hardware.from_spec("H100"))
    assert all(space.is_valid(p["config"]) for p in out["proposals"])


def test_one_line_errors(capsys, tmp_path):
    assert main(["advisor", "suggest", "--kernel", "flash_attention", "--landscape", "x"]) == 2
    assert "either --kernel" in capsys.readouterr().err
    assert main(["advisor", "train", "--landscape", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["advisor", "suggest", "--kernel", "flash_attention", "--shape", "B=1", "Hq=8", "Hkv=8", "seq=64", "D=64",
                 "--checkpoint", str(tmp_path)]) == 2
    assert "lacks" in capsys.readouterr().err
