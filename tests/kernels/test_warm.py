"""``KernelFamily.warm``: the real launch path, on meta tensors, compiling through Triton's JIT
without running anything (the GPU backend's compile workers fill Triton's cache with it)."""

import importlib

import pytest
import triton
from tritune.kernels import get_family
from tritune.search_space import FlashAttentionSpec, Hardware, PagedAttentionSpec, default_config, space_for


class FakeJit:
    """Records warmup calls; a real launch (``kernel[grid](...)``) fails the test."""

    def __init__(self, fail: bool = False):
        self.calls = []
        self.fail = fail

    def warmup(self, *args, grid, **kwargs):
        if self.fail:
            raise RuntimeError("compiler crashed")
        self.calls.append((grid, args, kwargs))

    def __getitem__(self, grid):
        raise AssertionError("warm must never launch a kernel")


def _patch(monkeypatch, family, fail=False):
    module = importlib.import_module(family.module_name)
    fakes = {name: FakeJit(fail) for name in family.jit_kernels}
    for name, fake in fakes.items():
        monkeypatch.setattr(module, name, fake)
    return module, fakes


def test_flash_warm_compiles_the_launch_it_would_run(monkeypatch):
    family = get_family("flash_attention")
    spec = FlashAttentionSpec(2, 16, 4, 1000, 1000, 128, "bf16", True)
    config = space_for(spec, Hardware.from_spec("H100")).config_type.from_dict(
        {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3, "split_diag": True, "use_tma": False})
    module, fakes = _patch(monkeypatch, family)
    assert family.warm(spec, config) == 1
    [(grid, args, kwargs)] = fakes["_attn_fwd"].calls
    assert grid == (triton.cdiv(1000, 128), 2 * 16)
    q = args[0]
    assert q.device.type == "meta" and tuple(q.shape) == (2, 16, 1000, 128)  # real shapes, no memory
    assert kwargs["BLOCK_M"] == 128 and kwargs["num_warps"] == 8 and kwargs["CAUSAL"] is True
    assert module._attn_fwd is fakes["_attn_fwd"]  # the module's kernel is restored


def test_paged_warm_covers_the_verify_and_the_timing_launches(monkeypatch):
    family = get_family("paged_attention")
    spec = PagedAttentionSpec(8, 32, 8, 128, 4096, 16, "bf16")
    config = default_config(spec, Hardware.from_spec("H100"))
    _, fakes = _patch(monkeypatch, family)
    compiled = family.warm(spec, config)
    decode = fakes["_decode_kernel"].calls
    assert len(decode) == 2  # full lengths (timing) and mixed lengths (verification)
    assert all(grid == (8, 8, config.num_splits) for grid, _, _ in decode)
    merges = fakes["_merge_kernel"].calls
    assert len(merges) == (2 if config.num_splits > 1 else 0)
    assert compiled == len(decode) + len(merges)


def test_a_failing_warm_restores_the_kernels(monkeypatch):
    family = get_family("flash_attention")
    spec = FlashAttentionSpec(1, 2, 1, 64, 64, 64, "fp16", False)
    module, fakes = _patch(monkeypatch, family, fail=True)
    with pytest.raises(RuntimeError, match="compiler crashed"):
        family.warm(spec, default_config(spec, Hardware.from_spec("H100")))
    assert module._attn_fwd is fakes["_attn_fwd"]


def test_the_compile_stage_warms_only_where_it_sees_a_gpu(monkeypatch):
    from tritune.kernels import family_ref
    from tritune.tuner import _tasks

    spec = FlashAttentionSpec(1, 2, 1, 64, 64, 64, "fp16", False)
    hw = Hardware.from_spec("H100")
    values = default_config(spec, hw).to_dict()
    report = _tasks.aot_compile(family_ref("flash_attention"), spec, hw, values, 90)
    assert report["status"] is None and "jit_warm_ms" not in report  # CPU machine: AOT only
    seen = []
    monkeypatch.setattr(_tasks, "_sees_gpu", lambda: True)
    monkeypatch.setattr(type(get_family("flash_attention")), "warm", lambda self, s, c: seen.append((s, c)) or 1)
    report = _tasks.aot_compile(family_ref("flash_attention"), spec, hw, values, 90)
    assert report["status"] is None and report["jit_warm_ms"] >= 0 and seen[0][0] == spec

    def crash(self, s, c):
        raise RuntimeError("no driver")

    monkeypatch.setattr(type(get_family("flash_attention")), "warm", crash)
    report = _tasks.aot_compile(family_ref("flash_attention"), spec, hw, values, 90)
    assert report["status"] is None and "no driver" in report["jit_warm_error"]  # the config is still fine
