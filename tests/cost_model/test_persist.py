"""Persistence: a saved model predicts the same; a model of another feature version is refused."""

import pickle

import numpy as np
import pytest
from tritune.cli import main
from tritune.cost_model import (
    FEATURE_VERSION,
    GBTCostModel,
    ModelVersionError,
    _persist,
    load_model,
    save_model,
)


@pytest.fixture(scope="module")
def small_model(conv_landscapes):
    return GBTCostModel(max_iter=20, max_records_per_group=300).fit(
        [r for ls in conv_landscapes[1:4] for r in ls.records()])


def test_round_trip(tmp_path, small_model, conv_landscapes):
    a100 = conv_landscapes[0]
    configs = [e.values for e in a100][:500]
    args = (a100.hardware, a100.kernel, {"problem_size": a100.problem_size}, a100.space, configs)
    path = save_model(small_model, tmp_path / "sub" / "m.model", meta={"note": "test"})
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(*args), small_model.predict(*args))
    assert _persist.read_payload(path)["feature_version"] == FEATURE_VERSION


def test_other_feature_version_is_refused(tmp_path, small_model, monkeypatch, capsys):
    path = tmp_path / "old.model"
    monkeypatch.setattr(_persist, "FEATURE_VERSION", FEATURE_VERSION + 7)
    save_model(small_model, path)
    monkeypatch.undo()
    with pytest.raises(ModelVersionError, match=f"feature version {FEATURE_VERSION + 7}.*Retrain"):
        load_model(path)
    code = main(["cost-model", "rank", "--model", str(path), "--kernel", "flash_attention",
                 "--shape", "B=1", "Hq=2", "Hkv=2", "seq=128", "D=64"])
    err = capsys.readouterr().err
    assert code == 2 and "feature version" in err and len(err.strip().splitlines()) == 1


def test_files_that_are_not_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable tritune cost model"):
        load_model(junk)
    other = tmp_path / "other.model"
    other.write_bytes(pickle.dumps({"some": "dict"}))
    with pytest.raises(ValueError, match="not a tritune cost model file"):
        load_model(other)
