import itertools
import os

import pytest
from tritune.search_space import Hardware, Landscape, load_landscapes, write_landscape


@pytest.fixture(scope="module")
def conv(kernel_tuner_cache):
    return Landscape.load(os.path.join(kernel_tuner_cache, "convolution_milo", "A100.json.gz"))


def test_kernel_tuner_file(conv):
    assert conv.hardware.name == "NVIDIA A100-PCIE-40GB"
    assert len(conv) == 4362 and conv.space.cartesian_size == 10240
    best = min((e for e in conv if e.time_ms is not None), key=lambda e: e.time_ms)
    assert conv.optimum_ms == best.time_ms
    assert conv.space.is_valid(best.values)
    assert conv.fraction_of_optimum(best.time_ms) == 1.0
    failed = [e for e in conv if e.time_ms is None]
    assert failed and all(e.status == "failed" and e.error.endswith("FailedConfig") for e in failed)
    assert all(e.cost_ms > 0 for e in list(conv)[:50])


def test_absent_configs_are_invalid(conv):
    names = conv.space.names
    combos = itertools.product(*(p.values for p in conv.space.params))
    absent = next(dict(zip(names, c, strict=True)) for c in combos if conv.lookup(dict(zip(names, c, strict=True))) is None)
    assert conv.lookup(absent) is None
    assert "not in the recording" in conv.space.validate(absent)[0]


def test_amd_file_without_device_name_gets_hardware_from_file_name(kernel_tuner_cache):
    lands = load_landscapes([os.path.join(kernel_tuner_cache, "dedispersion_milo")])
    names = {ls.hardware.name for ls in lands}
    assert "AMD Instinct MI250X" in names and len(lands) == 6
    assert len({ls.group for ls in lands}) == 6


def test_records(conv):
    recs = conv.records()
    assert len(recs) == len(conv)
    assert {r.group for r in recs} == {conv.group}
    assert sum(r.time_ms is None for r in recs) == sum(e.time_ms is None for e in conv)


def test_write_and_read_back(tmp_path):
    hw = Hardware.from_spec("H100", "3.6.0")
    results = [({"a": 1, "b": 2}, 0.5, None, {"compile_time": 900.0}), ({"a": 2, "b": 2}, None, "CompilationFailedConfig", {})]
    path = write_landscape(tmp_path / "x.json.gz", kernel="flash_attention", kernel_name="attn_fwd",
                           spec={"batch": 1}, hardware=hw, params={"a": (1, 2), "b": (2,)}, results=results)
    ls = Landscape.load(path)
    assert ls.hardware == hw and ls.kernel == "flash_attention" and ls.spec == {"batch": 1}
    assert ls.lookup({"a": 1, "b": 2}).time_ms == 0.5 and ls.lookup({"a": 1, "b": 2}).cost_ms == 900.0
    assert ls.lookup({"a": 2, "b": 2}).status == "failed"


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        Landscape.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not \\(gzipped\\) JSON"):
        Landscape.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks 'tune_params_keys'"):
        Landscape.load(tmp_path / "other.json")


def test_open_kernel_tuner_cache_is_read_as_closed(tmp_path):
    """Kernel Tuner closes its cache file only when the run ends; a run that stopped early leaves
    one ``"key": {...},`` line per config and no closing braces (gemm_milo's W7800 file)."""
    import gzip

    head = '{\n"device_name": "NVIDIA GeForce RTX 3090",\n"kernel_name": "k",\n"problem_size": 4096,\n' \
           '"tune_params_keys": ["a"],\n"tune_params": {"a": [1, 2, 3]},\n"objective": "time",\n"cache": {\n'
    lines = ['"1": {"a": 1, "time": 2.0},\n', '"2": {"a": 2, "time": 1.0},\n']
    with gzip.open(tmp_path / "open.json.gz", "wt") as f:
        f.write(head + "".join(lines))
    (tmp_path / "torn.json").write_text(head + "".join(lines) + '"3": {"a": 3, "ti')
    for name in ("open.json.gz", "torn.json"):
        ls = Landscape.load(tmp_path / name)
        assert len(ls) == 2 and ls.optimum_ms == 1.0 and ls.lookup({"a": 3}) is None
        assert ls.hardware.name == "NVIDIA GeForce RTX 3090" and ls.hardware.vendor == "nvidia"
    (tmp_path / "broken.json").write_text(head + lines[0] + '"2": {"a": oops},\n' + lines[1])  # not just open
    with pytest.raises(ValueError, match="not \\(gzipped\\) JSON"):
        Landscape.load(tmp_path / "broken.json")


def test_a_sparse_recording_lists_its_configs(tmp_path):
    """hotspot's recordings hold 83k of 4.4M Cartesian points: the space iterates and samples the
    recorded configs (in the Cartesian order) instead of rejection sampling, which found 2% of
    them, and the cost-model search's pool holds every one."""
    import dataclasses
    import random

    from tritune.search_space import config_key
    from tritune.tuner import StrategyContext, get_strategy

    params = {"a": tuple(range(60)), "b": tuple(range(60)), "c": tuple(range(60))}
    recorded = [{"a": a, "b": b, "c": 7 - a - b} for a in range(8) for b in range(8 - a)]
    random.Random(0).shuffle(recorded)  # file order is not the Cartesian order
    path = write_landscape(tmp_path / "sparse.json.gz", kernel="k", kernel_name="k", spec=None,
                           hardware=Hardware.from_spec("A6000"), params=params,
                           results=[(c, 1.0 + c["a"], None, {}) for c in recorded])
    ls = Landscape.load(path)
    listed = [config_key(c) for c in ls.space]
    walked = [config_key(c) for c in dataclasses.replace(ls.space, listed=None)]
    assert listed == walked and len(listed) == len(recorded) == 36  # of 216,000 points
    some = ls.space.sample(random.Random(0), 20)
    assert len({config_key(c) for c in some}) == 20 and all(ls.space.is_valid(c) for c in some)
    assert sorted(config_key(c) for c in ls.space.sample(random.Random(0), 1000)) == sorted(listed)
    ctx = StrategyContext(hardware=ls.hardware, kernel="k", problem={}, train_records=())
    strategy = get_strategy("cost-model")(ls.space, ctx, seed=0)
    assert len(strategy.pool) == 36  # rejection sampling's 100k tries found about 17


def test_directories_are_searched_recursively_and_other_json_is_skipped(tmp_path):
    """A GPU run folder holds landscapes under landscapes/ next to its benchmark JSON."""
    import json

    import pytest

    run = tmp_path / "gpu_runs" / "2026-11-25-h100"
    write_landscape(run / "landscapes" / "fa.json.gz", kernel="k", kernel_name="k", spec=None,
                    hardware=Hardware.from_spec("H100"), params={"a": (1, 2)},
                    results=[({"a": 1}, 2.0, None, {}), ({"a": 2}, 1.0, None, {})])
    (run / "bench.json").write_text(json.dumps({"rows": []}))
    [ls] = load_landscapes([tmp_path / "gpu_runs"])
    assert ls.optimum_ms == 1.0
    with pytest.raises(ValueError, match="lacks"):
        load_landscapes([run / "bench.json"])  # named explicitly, it must be a landscape
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "bench.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no"):
        load_landscapes([tmp_path / "empty"])
