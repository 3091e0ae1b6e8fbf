import random

import pytest
from tritune.search_space import (
    Config,
    Constraint,
    FlashAttentionSpec,
    Hardware,
    Param,
    ParamConfig,
    SearchSpace,
    config_key,
    default_config,
    device_spec,
    space_for,
)


def _space():
    return SearchSpace(
        name="toy",
        params=(Param("a", (1, 2, 4)), Param("b", (1, 2, 4))),
        constraints=(Constraint("product", lambda v: None if v["a"] * v["b"] <= 4 else f"a*b={v['a'] * v['b']} > 4"),),
    )


def test_validate_reports_every_reason():
    s = _space()
    assert s.validate({"a": 1, "b": 2}) == []
    assert s.validate({"a": 4, "b": 4}) == ["product: a*b=16 > 4"]
    reasons = s.validate({"a": 3, "c": 1})
    assert any("missing parameters ['b']" in r for r in reasons)
    assert any("unknown parameters ['c']" in r for r in reasons)
    assert any("a=3 is outside its domain" in r for r in reasons)


def test_enumeration_and_sampling_are_valid_and_deterministic():
    s = _space()
    valid = s.enumerate()
    assert len(valid) == 6 and all(s.is_valid(v) for v in valid)
    first = s.sample(random.Random(0), 4)
    assert first == s.sample(random.Random(0), 4)
    assert len({config_key(v) for v in first}) == 4
    assert s.sample(random.Random(1), 100) and len(s.sample(random.Random(1), 100)) == 6


def test_config_is_typed_and_errors_are_explained():
    s = _space()
    c = s.config({"a": 2, "b": 2})
    assert isinstance(c, ParamConfig) and c.to_dict() == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="a\\*b=16 > 4"):
        s.config({"a": 4, "b": 4})
    with pytest.raises(ValueError, match="repeats parameter names"):
        SearchSpace("bad", (Param("a", (1,)), Param("a", (2,))))
    with pytest.raises(ValueError, match="empty domain"):
        Param("x", ())


def test_config_key_is_order_independent():
    assert config_key({"b": 1, "a": True}) == config_key({"a": True, "b": 1}) == "a=1,b=1"


@pytest.mark.parametrize("device", ["H100", "A100", "RTX A4000", "cpu-interpreter"])
@pytest.mark.parametrize("head_dim", [32, 80, 128, 256])
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_kernel_default_configs_are_valid_everywhere(device, head_dim, dtype):
    hw = Hardware.cpu_interpreter("3.9.0") if device == "cpu-interpreter" else Hardware.from_spec(device)
    spec = FlashAttentionSpec(2, 8, 2, 77, 300, head_dim, dtype, causal=True)
    space = space_for(spec, hw)
    default = default_config(spec, hw)
    assert isinstance(default, Config)
    assert space.validate(default.to_dict()) == []


def test_device_table_lookup():
    assert device_spec("NVIDIA A100-PCIE-40GB").sm_count == 108
    assert device_spec("NVIDIA H100 80GB HBM3").smem_per_block == 232448
    assert device_spec("some unknown accelerator") is None
    with pytest.raises(ValueError, match="unknown device 'Z9'"):
        Hardware.from_spec("Z9")


@pytest.mark.parametrize(("reported", "expected"), [
    # A shorter name inside a longer one is not a match: these were A10, H20 and A10 before.
    ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"),
    ("NVIDIA H200", "NVIDIA H200"),
    ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
    ("NVIDIA A10G", "NVIDIA A10"),
    ("NVIDIA H20", "NVIDIA H20"),
    ("NVIDIA L40S", "NVIDIA L40S"),
    ("NVIDIA L4", "NVIDIA L4"),
    ("NVIDIA GeForce RTX 3060 Laptop GPU", "NVIDIA GeForce RTX 3060 Laptop GPU"),
    ("NVIDIA GeForce RTX 3060", "NVIDIA GeForce RTX 3060"),
    ("NVIDIA GeForce RTX 2080 Ti", "NVIDIA GeForce RTX 2080 Ti"),
    ("Tesla V100-SXM2-32GB", "Tesla V100-SXM2-16GB"),
    ("Tesla T4", "Tesla T4"),
    ("W7800_T4", "AMD Radeon PRO W7800"),  # a Kernel Tuner file name (its AMD files name no device)
    ("NVIDIA GeForce RTX 2080", None),
])
def test_device_names_match_whole_words(reported, expected):
    spec = device_spec(reported)
    assert (spec.name if spec else None) == expected


def test_vendor_from_table_backend_or_name():
    assert Hardware.from_spec("MI50").vendor == "amd" and Hardware.from_spec("T4").vendor == "nvidia"
    recorded = {n: Hardware(n, "recorded", "", 0, 0, "n/a").vendor
                for n in ("NVIDIA GeForce GTX 1080", "AMD Radeon RX 6800", "Intel(R) Arc(TM) A770", "mystery")}
    assert recorded == {"NVIDIA GeForce GTX 1080": "nvidia", "AMD Radeon RX 6800": "amd",
                        "Intel(R) Arc(TM) A770": "intel", "mystery": None}
    assert Hardware.cpu_interpreter("3.9.0").vendor is None
