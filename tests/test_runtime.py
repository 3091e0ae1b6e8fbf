import logging
import sqlite3

import pytest
from tritune.db import Trial, TuningDB
from tritune.kernels import kernel_hash
from tritune.runtime import Dispatcher
from tritune.search_space import FlashAttentionSpec, Hardware, default_config

H100 = Hardware.from_spec("H100", "3.6.0")
A4000 = Hardware.from_spec("RTX A4000", "3.6.0")
SPEC = FlashAttentionSpec(1, 8, 2, 1000, 1000, 64, "bf16", causal=True)


def store(path, spec, config, *, hw=H100, time_ms=1.0, khash=None):
    with TuningDB(path) as db:
        db.record_trial(Trial(hardware=hw, kernel=spec.kernel, kernel_hash=khash or kernel_hash(spec.kernel),
                              bucket=spec.bucket().key, spec=spec.to_dict(), config=config, status="ok",
                              backend="gpu", real_timing=True, time_ms=time_ms))


def a_valid_config(spec, hw, index=1):
    from tritune.search_space import space_for

    configs = space_for(spec, hw).enumerate()
    return configs[index % len(configs)]


def test_default_when_nothing_is_tuned(tmp_db):
    sel = Dispatcher(H100, db_path=tmp_db, use_builtin=False).lookup(SPEC)
    assert sel.rule == "default" and sel.config == default_config(SPEC, H100)
    assert not tmp_db.exists()  # looking up never creates the file


def test_exact_bucket(tmp_db):
    config = a_valid_config(SPEC, H100, 3)
    store(tmp_db, SPEC.representative(), config)
    sel = Dispatcher(H100, db_path=tmp_db, use_builtin=False).lookup(FlashAttentionSpec(1, 8, 2, 700, 700, 64, "bf16", True))
    assert sel.rule == "exact" and sel.config.to_dict() == config and sel.time_ms == 1.0


def test_nearest_bucket_is_logged_once(tmp_db, caplog):
    config = a_valid_config(SPEC, H100, 5)
    store(tmp_db, FlashAttentionSpec(1, 8, 2, 4096, 4096, 64, "bf16", True), config)
    store(tmp_db, FlashAttentionSpec(8, 8, 2, 64, 64, 64, "bf16", True), a_valid_config(SPEC, H100, 6))
    disp = Dispatcher(H100, db_path=tmp_db, use_builtin=False)
    with caplog.at_level(logging.WARNING, logger="tritune.runtime"):
        sel = disp.lookup(SPEC)
        disp.lookup(FlashAttentionSpec(1, 8, 2, 999, 999, 64, "bf16", True))
    assert sel.rule == "nearest" and sel.config.to_dict() == config  # distance 2 beats distance 3+4
    assert sum("nearest tuned bucket" in r.message for r in caplog.records) == 1


def test_other_head_dim_is_never_nearest(tmp_db):
    other = FlashAttentionSpec(1, 8, 2, 1024, 1024, 128, "bf16", True)
    store(tmp_db, other, a_valid_config(other, H100))
    assert Dispatcher(H100, db_path=tmp_db, use_builtin=False).lookup(SPEC).rule == "default"


def test_other_hardware_only_when_asked(tmp_db):
    config = a_valid_config(SPEC, A4000, 2)
    store(tmp_db, SPEC.representative(), config, hw=A4000)
    assert Dispatcher(H100, db_path=tmp_db, use_builtin=False).lookup(SPEC).rule == "default"
    cpu = Hardware.cpu_interpreter("3.6.0")
    assert Dispatcher(cpu, db_path=tmp_db, use_builtin=False).lookup(SPEC).rule == "default"
    sel = Dispatcher(H100, db_path=tmp_db, use_builtin=False, cross_hardware=True).lookup(SPEC)
    assert sel.rule == "cross-hardware" and sel.tuned_hardware == A4000.key and sel.config.to_dict() == config


def test_environment_switch_for_cross_hardware(tmp_db, monkeypatch):
    store(tmp_db, SPEC.representative(), a_valid_config(SPEC, A4000, 2), hw=A4000)
    monkeypatch.setenv("TRITUNE_CROSS_HARDWARE", "1")
    assert Dispatcher(H100, db_path=tmp_db, use_builtin=False).lookup(SPEC).rule == "cross-hardware"


def test_cross_hardware_config_is_revalidated(tmp_db):
    from tritune.search_space import space_for

    big_space = space_for(SPEC, H100)
    small_space = space_for(SPEC, A4000)
    too_big = next((c for c in big_space.enumerate() if not small_space.is_valid(c)), None)
    if too_big is None:
        pytest.skip("the space has no config that fits H100 but not an A4000")
    store(tmp_db, SPEC.representative(), too_big, hw=H100)
    sel = Dispatcher(A4000, db_path=tmp_db, use_builtin=False, cross_hardware=True).lookup(SPEC)
    assert sel.rule == "default"


def test_stale_kernel_version_is_ignored(tmp_db):
    store(tmp_db, SPEC.representative(), a_valid_config(SPEC, H100), khash="0123456789ab")
    assert Dispatcher(H100, db_path=tmp_db, use_builtin=False).lookup(SPEC).rule == "default"


def test_builtin_table_after_the_users_db(tmp_db, monkeypatch):
    import tritune.runtime as rt

    builtin_cfg = a_valid_config(SPEC, H100, 7)
    row = {"hardware": H100.to_dict(), "kernel": SPEC.kernel, "kernel_hash": kernel_hash(SPEC.kernel),
           "bucket": SPEC.bucket().key, "spec": SPEC.to_dict(), "config": builtin_cfg, "time_ms": 2.0,
           "backend": "gpu", "real_timing": True}
    monkeypatch.setattr(rt, "load_builtin_table", lambda: {"rows": [row]})
    assert Dispatcher(H100, db_path=tmp_db).lookup(SPEC).rule == "builtin-exact"
    mine = a_valid_config(SPEC, H100, 8)
    store(tmp_db, SPEC.representative(), mine)
    sel = Dispatcher(H100, db_path=tmp_db).lookup(SPEC)
    assert sel.rule == "exact" and sel.config.to_dict() == mine


def test_hot_path_never_touches_sqlite(tmp_db, monkeypatch):
    store(tmp_db, SPEC.representative(), a_valid_config(SPEC, H100))
    disp = Dispatcher(H100, db_path=tmp_db, use_builtin=False)
    assert disp.lookup(SPEC).rule == "exact"

    def forbidden(*a, **k):
        raise AssertionError("SQLite opened on the hot path")

    monkeypatch.setattr(sqlite3, "connect", forbidden)
    for seq in (1, 513, 1000, 5000):  # new specs are served from the in-memory table
        disp.lookup(FlashAttentionSpec(1, 8, 2, seq, seq, 64, "bf16", True))
    assert disp.lookup(SPEC).rule == "exact"


def test_broken_database_falls_back_to_default(tmp_db, caplog):
    tmp_db.write_text("garbage")
    with caplog.at_level(logging.WARNING, logger="tritune.runtime"):
        sel = Dispatcher(H100, db_path=tmp_db, use_builtin=False).lookup(SPEC)
    assert sel.rule == "default"
    assert any("ignoring the tuning database" in r.message for r in caplog.records)


def test_lookup_by_raw_key_matches_lookup(tmp_db):
    store(tmp_db, SPEC.representative(), a_valid_config(SPEC, H100))
    disp = Dispatcher(H100, db_path=tmp_db, use_builtin=False)
    built = []

    def make():
        built.append(1)
        return SPEC

    key = (1, 8, 2, 1000, 1000, 64, "bf16", True)
    assert disp.lookup_by(key, make) == disp.lookup(SPEC)
    assert disp.lookup_by(key, make).rule == "exact"
    assert len(built) == 1  # warm calls never rebuild the spec
    disp.reload()
    disp.lookup_by(key, make)
    assert len(built) == 2
