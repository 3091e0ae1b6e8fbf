"""Features: generic (Kernel Tuner) spaces, the per-kernel hooks, hardware and compiler columns."""

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from tritune.cost_model import (
    CompilerFeatures,
    ConfigBatch,
    Featurizer,
    HardwareInfo,
    occupancy,
    register_kernel_features,
)
from tritune.cost_model import _features as features_module
from tritune.search_space import (
    FlashAttentionSpec,
    Hardware,
    PagedAttentionSpec,
    TuningRecord,
    space_for,
)
from tritune.search_space import flash_attention as fa_space
from tritune.search_space import paged_attention as pa_space

H100 = Hardware.from_spec("H100")
MI250X = Hardware.from_spec("MI250X")


def column(featurizer, x, name):
    return x[:, featurizer.names.index(name)]


def test_generic_space_gets_raw_kernel_tuner_and_hardware_columns(conv_landscapes):
    a100 = conv_landscapes[0]
    records = a100.records()[:400]
    f = Featurizer.from_records(a100.kernel, records)
    x = f.transform(a100.hardware, records[0].problem, [r.config for r in records])
    assert x.shape == (400, len(f.names))
    bx = np.array([r.config["block_size_x"] for r in records], dtype=float)
    by = np.array([r.config["block_size_y"] for r in records], dtype=float)
    np.testing.assert_array_equal(column(f, x, "p_block_size_x"), bx)
    np.testing.assert_array_equal(column(f, x, "kt_threads"), bx * by)
    tx = np.array([r.config["tile_size_x"] for r in records], dtype=float)
    grid_x = np.ceil(4096 / (bx * tx))
    assert np.all(column(f, x, "kt_log_grid") >= np.log2(grid_x))
    assert np.all(column(f, x, "pb_log_problem_size_0") == pytest.approx(math.log(4096)))
    assert np.all(column(f, x, "hw_log_sm_count") == pytest.approx(math.log(108)))
    assert np.all(column(f, x, "hw_vendor_amd") == 0.0)
    # The same configs on a wavefront-64 device: half as many warps' worth of slots per thread.
    x_amd = f.transform(MI250X, records[0].problem, [r.config for r in records])
    assert np.all(column(f, x_amd, "hw_vendor_amd") == 1.0)
    eff32, eff64 = column(f, x, "kt_warp_efficiency"), column(f, x_amd, "kt_warp_efficiency")
    assert np.all(eff64 <= eff32) and np.any(eff64 < eff32)


def test_string_parameters_are_encoded_and_unseen_values_are_missing():
    hw = H100
    recs = [TuningRecord(hw, "toy", {"n": 8}, {"mode": m, "w": w}, 1.0 + i, "ok", "g")
            for i, (m, w) in enumerate([("a", 1), ("b", 2), ("a", 4)])]
    f = Featurizer.from_records("toy", recs)
    x = f.transform(hw, {"n": 8}, [{"mode": "b", "w": 2}, {"mode": "zzz", "w": True}])
    assert column(f, x, "p_mode")[0] == 1.0 and math.isnan(column(f, x, "p_mode")[1])
    assert column(f, x, "p_w").tolist() == [2.0, 1.0]
    assert math.isnan(column(f, x, "kt_threads")[0])  # no block_size_*: generic hook gives NaN


def test_hardware_info_known_amd_and_unknown():
    a = HardwareInfo.of(Hardware.from_spec("A100"))
    assert (a.sm_count, a.warp_size, a.vendor_amd, a.compute_capability) == (108, 32, 0.0, 8.0)
    m = HardwareInfo.of(MI250X)
    assert (m.warp_size, m.vendor_amd) == (64, 1.0) and math.isnan(m.compute_capability)
    cpu = HardwareInfo.of(Hardware.cpu_interpreter())
    assert math.isnan(cpu.sm_count) and math.isnan(cpu.mem_bw_gbs)
    odd = HardwareInfo.of(Hardware("Some New GPU", "cuda", "12.0", 170, 232448, "3.9"))
    assert odd.sm_count == 170 and odd.compute_capability == 12.0 and math.isnan(odd.l2_bytes)


def test_scalar_problem_size_and_unknown_recorded_device():
    """pnpoly's Kernel Tuner files give ``problem_size`` as one number, not a list."""
    hw = Hardware("NVIDIA GeForce GTX 1080", "recorded", "", 0, 0, "n/a")  # not in the table
    recs = [TuningRecord(hw, "cn_pnpoly", {"problem_size": 20_000_000}, {"block_size_x": b, "tile_size": 1},
                         1.0 + b / 1000, "ok", "g") for b in (32, 64, 256)]
    f = Featurizer.from_records("cn_pnpoly", recs)
    x = f.transform(hw, recs[0].problem, [r.config for r in recs])
    assert column(f, x, "kt_log_grid").tolist() == pytest.approx([math.log2(math.ceil(20e6 / b)) for b in (32, 64, 256)])
    assert column(f, x, "pb_log_problem_size") == pytest.approx(math.log(20e6))
    assert np.all(column(f, x, "hw_vendor_amd") == 0.0)  # "GeForce" says NVIDIA


def test_occupancy_limits():
    h = HardwareInfo.of(H100)
    blocks, occ = occupancy(h, np.array([128.0, 1024.0]), smem_bytes=np.array([0.0, 0.0]))
    assert blocks.tolist() == [16.0, 2.0] and occ.tolist() == [1.0, 1.0]
    blocks, occ = occupancy(h, 128.0, smem_bytes=100 * 1024.0, registers=255.0)
    assert float(blocks) == 2.0  # 228 KB / 100 KB; registers allow 65536 / (255*128) = 2 as well
    blocks, _ = occupancy(h, 128.0, smem_bytes=300 * 1024.0)
    assert float(blocks) == 0.0


def test_registered_hook_is_used(monkeypatch):
    monkeypatch.setattr(features_module, "_EXTRA_HOOKS", {})

    def hook(problem, batch, hw):
        return {"toy_work": batch.column("w") * problem["n"], "toy_sms": np.full(len(batch), hw.sm_count)}

    register_kernel_features("toy", hook)
    recs = [TuningRecord(H100, "toy", {"n": 8}, {"w": w}, float(w), "ok", "g") for w in (1, 2, 3)]
    f = Featurizer.from_records("toy", recs)
    assert "toy_work" in f.names and "kt_threads" not in f.names
    x = f.transform(H100, {"n": 3}, [{"w": 2}, {"w": 5}])
    assert column(f, x, "toy_work").tolist() == [6.0, 15.0]
    assert column(f, x, "toy_sms").tolist() == [132.0, 132.0]


def test_flash_attention_hook():
    spec = FlashAttentionSpec(batch=2, heads_q=8, heads_kv=2, seq_q=300, seq_kv=300, head_dim=80, dtype="fp16", causal=True)
    configs = space_for(spec, H100).enumerate()
    recs = [TuningRecord(H100, "flash_attention", spec.to_dict(), c, 1.0, "ok", "g") for c in configs]
    f = Featurizer.from_records("flash_attention", recs)
    x = f.transform(H100, spec.to_dict(), configs)
    smem = [fa_space.smem_bytes(spec, c, arch=90) for c in configs]
    np.testing.assert_array_equal(column(f, x, "smem_est"), smem)
    programs = [math.ceil(300 / c["block_m"]) * 2 * 8 for c in configs]
    np.testing.assert_array_equal(column(f, x, "programs"), programs)
    occ = column(f, x, "occupancy_est")
    assert np.all((occ > 0) & (occ <= 1))
    assert np.all(column(f, x, "waves") > 0)
    assert np.all(column(f, x, "pb_causal") == 1.0) and np.all(column(f, x, "pb_dtype_bytes") == 2.0)
    # Bigger query tiles reuse each K/V load for more rows: higher arithmetic intensity.
    ai = column(f, x, "arith_intensity")
    bm = np.array([c["block_m"] for c in configs])
    assert ai[bm == 128].min() > ai[bm == 32].max()
    # Under the interpreter the SM count is unknown: waves are missing, the estimates are not.
    x_cpu = f.transform(Hardware.cpu_interpreter(), spec.to_dict(), configs)
    assert np.all(np.isnan(column(f, x_cpu, "waves")))
    np.testing.assert_array_equal(column(f, x_cpu, "smem_est"), smem)  # the interpreter stands in for sm_90
    x_a100 = f.transform(Hardware.from_spec("A100"), spec.to_dict(), configs)
    np.testing.assert_array_equal(column(f, x_a100, "smem_est"), [fa_space.smem_bytes(spec, c, arch=80) for c in configs])


def test_paged_attention_hook():
    spec = PagedAttentionSpec(num_seqs=3, heads_q=8, heads_kv=2, head_dim=128, context_len=1000, block_size=16, dtype="bf16")
    configs = space_for(spec, H100).enumerate()
    recs = [TuningRecord(H100, "paged_attention", spec.to_dict(), c, 1.0, "ok", "g") for c in configs]
    f = Featurizer.from_records("paged_attention", recs)
    x = f.transform(H100, spec.to_dict(), configs)
    splits = np.array([c["num_splits"] for c in configs])
    np.testing.assert_array_equal(column(f, x, "tokens_per_program"), np.ceil(1000 / splits))
    np.testing.assert_array_equal(column(f, x, "programs"), 3 * 2 * splits)
    np.testing.assert_array_equal(column(f, x, "smem_est"), [pa_space.smem_bytes(spec, c) for c in configs])


def _report(registers, shared, fits=True, ok=True):
    return SimpleNamespace(ok=ok, registers=registers, stack_bytes=0, local_bytes=0, shared_bytes=shared,
                           static_shared_bytes=0, fits=fits)


def test_compiler_features_are_cached_and_give_occupancy():
    calls = []

    def fake_compile(kernel, problem, config, arch):
        calls.append((config["w"], arch))
        if config["w"] == 3:
            return _report(None, 0, ok=False)
        return _report(128, 50_000 * config["w"])

    cf = CompilerFeatures(compile_fn=fake_compile)
    batch = ConfigBatch([{"w": 1}, {"w": 2}, {"w": 3}])
    out = cf("toy", {"n": 1}, batch, HardwareInfo.of(H100), np.full(3, 128.0))
    # registers: 65536 / (128 * 128) = 4 programs; shared memory: 233472 / 50000 = 4 and / 100000 = 2.
    assert out["cc_occupancy"][0] == pytest.approx(4 * 128 / 2048)
    assert out["cc_occupancy"][1] == pytest.approx(2 * 128 / 2048)
    assert out["cc_fits"][2] == 0.0 and out["cc_occupancy"][2] == 0.0 and math.isnan(out["cc_registers"][2])
    cf("toy", {"n": 1}, batch, HardwareInfo.of(H100), np.full(3, 128.0))
    assert calls == [(1, 90), (2, 90), (3, 90)]  # compiled once per config, for sm_90
    amd = cf("toy", {"n": 1}, batch, HardwareInfo.of(MI250X), np.full(3, 128.0))
    assert np.all(np.isnan(amd["cc_registers"])) and len(calls) == 3  # no CUDA target: not compiled


def test_compile_features_in_the_featurizer():
    calls = []

    def fake_compile(kernel, problem, config, arch):
        calls.append(arch)
        return _report(96, 1024)

    recs = [TuningRecord(H100, "toy", {"n": 1}, {"block_size_x": w}, float(w), "ok", "g") for w in (32, 64)]
    f = Featurizer.from_records("toy", recs, compile=True)
    f.compiler = CompilerFeatures(compile_fn=fake_compile)
    x = f.transform(Hardware.from_spec("A100"), {"n": 1}, [{"block_size_x": 32}, {"block_size_x": 64}])
    assert column(f, x, "cc_registers").tolist() == [96.0, 96.0] and calls == [80, 80]
    assert np.all(column(f, x, "cc_occupancy") > 0)


_REAL_COMPILE = """
import json, numpy as np
from tritune.cost_model import CompilerFeatures, ConfigBatch, HardwareInfo
from tritune.search_space import FlashAttentionSpec, Hardware
spec = FlashAttentionSpec(batch=1, heads_q=2, heads_kv=2, seq_q=128, seq_kv=128, head_dim=64, dtype="fp16")
config = {"block_m": 64, "block_n": 64, "num_warps": 4, "num_stages": 2, "split_diag": True, "use_tma": False}
out = CompilerFeatures()("flash_attention", spec.to_dict(), ConfigBatch([config]),
                         HardwareInfo.of(Hardware.from_spec("H100")), np.array([128.0]))
print(json.dumps({k: float(v[0]) for k, v in out.items()}))
"""


def test_real_aot_compile_of_flash_attention(tmp_path):
    """The default compile path: the FA family's AOT compile for sm_90, no GPU (a few seconds).

    Runs in a fresh process: kernels defined under TRITON_INTERPRET=1 (this test session) are
    interpreter functions that the compile tier cannot lower.
    """
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITUNE_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _REAL_COMPILE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cc_fits"] == 1.0
    assert 16 <= out["cc_registers"] <= 255
    assert out["cc_shared_bytes"] > 0 and 0 < out["cc_occupancy"] <= 1


def test_varlen_attention_hook():
    from tritune.cost_model._attention import VARLEN_NAMES
    from tritune.cost_model._features import kernel_hook
    from tritune.search_space import VarlenAttentionSpec
    from tritune.search_space import varlen_attention as va_space

    assert kernel_hook("varlen_attention").__name__ == "varlen_attention_features"
    # 64 decode rows + a 100-token chunk, Llama-3 heads (G = 4), page 16
    spec = VarlenAttentionSpec(65, 164, 100, 4096, 32, 8, 128, 16, "bf16")
    configs = space_for(spec, H100).enumerate()
    recs = [TuningRecord(H100, "varlen_attention", spec.to_dict(), c, 1.0, "ok", "g") for c in configs]
    f = Featurizer.from_records("varlen_attention", recs)
    assert set(VARLEN_NAMES) <= set(f.names)
    x = f.transform(H100, spec.to_dict(), configs)
    bm = np.array([c["block_m"] for c in configs])
    pack = np.array([c["pack_gqa"] for c in configs])
    splits = np.array([c["num_splits"] for c in configs])
    block_q = np.where(pack, bm // 4, bm)
    # the launcher's grid, from host values only
    expected = (164 // block_q + 65) * np.where(pack, 8, 32) * splits
    np.testing.assert_array_equal(column(f, x, "programs"), expected)
    np.testing.assert_array_equal(column(f, x, "smem_est"), [va_space.smem_bytes(spec, c, arch=90) for c in configs])
    np.testing.assert_array_equal(column(f, x, "regs_est"), [va_space.registers_per_thread(spec, c) for c in configs])
    eff = column(f, x, "tile_efficiency")
    assert np.all((eff > 0) & (eff <= 1))
    # 16-row tiles: packing puts 4 query heads of a decode token into the rows (64 tokens in 64
    # tiles + the chunk's 25), unpacked a decode token fills 1 row of 16 (64 + 7 tiles per head)
    p16 = (bm == 16) & pack
    u16 = (bm == 16) & ~pack
    assert eff[p16] == pytest.approx((164 * 4) / ((64 + 25) * 16))
    assert eff[u16] == pytest.approx(164 / ((64 + 7) * 16))
    np.testing.assert_array_equal(column(f, x, "kv_reads_per_group"), np.where(pack, 1.0, 4.0))
    np.testing.assert_array_equal(column(f, x, "splits"), splits)
    assert np.all(column(f, x, "active_fraction") <= 1.0)
    assert not np.isnan(x[:, [f.names.index(n) for n in VARLEN_NAMES]]).any()  # all known on an H100
    # a packed-K/V (block_size 0) problem has no pages; the interpreter has no waves
    flat = VarlenAttentionSpec(3, 30, 20, 300, 8, 8, 64, 0, "fp16", causal=False)
    fc = space_for(flat, H100).enumerate()
    xf = f.transform(Hardware.cpu_interpreter(), flat.to_dict(), fc)
    assert np.all(column(f, xf, "pages_per_step") == 0.0) and np.all(np.isnan(column(f, xf, "waves")))
