"""FlashAttention forward under the Triton interpreter, against a float64 reference.

The grid covers what real models throw at the kernel: odd lengths that are multiples of no
block (1, 17, 113, 203, 1000+), Sq != Skv in both directions with causal (bottom-right), GQA
ratios 1/4/8 and MQA, every supported head dim, fp16/bf16 (and fp32), batch > 1, non-contiguous
inputs, and several configs of the search space per case. Tolerance is the dtype rule of
``tritune.kernels.compare``: at most 2x the error of the same math in PyTorch at the input
precision, plus a small absolute term.
"""

from __future__ import annotations

import itertools
import math
import random
import zlib
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritune.kernels import TORCH_DTYPES, compare, get_family
from tritune.kernels.flash_attention import FAMILY, attention_math, baseline, launch, reference
from tritune.search_space import FlashAttentionConfig, FlashAttentionSpec, Hardware, space_for
from tritune.search_space.flash_attention import BASE_KNOBS, LATER_KNOBS

HW = Hardware.cpu_interpreter()
HEAD_DIMS = (32, 64, 80, 96, 128, 160, 192, 256)
LAYOUTS = ("contiguous", "bshd", "strided")


@dataclass(frozen=True)
class Case:
    spec: FlashAttentionSpec
    layout: str = "contiguous"

    @property
    def id(self) -> str:
        s = self.spec
        return (f"B{s.batch}-H{s.heads_q}x{s.heads_kv}-S{s.seq_q}x{s.seq_kv}-D{s.head_dim}-{s.dtype}"
                f"{'-causal' if s.causal else ''}-{self.layout}")


def make_qkv(spec: FlashAttentionSpec, layout: str, seed: int) -> dict:
    """Random q, k, v for ``spec``; ``layout`` picks the memory layout of the same values.

    ``bshd``: views of [B, S, H, D] tensors (what transformers hands over); ``strided``: every
    tensor is a slice of a larger one (non-unit row strides and an offset on head_dim).
    """
    inputs = FAMILY.make_inputs(spec, "cpu", seed)
    if layout == "bshd":
        for name in ("q", "k", "v"):
            inputs[name] = inputs[name].transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "strided":
        for name in ("q", "k", "v"):
            t = inputs[name]
            big = torch.zeros(t.shape[0], t.shape[1], t.shape[2] * 2, t.shape[3] + 8, dtype=t.dtype)
            view = big[:, :, ::2, 8:]
            view.copy_(t)
            inputs[name] = view
    return inputs


def interpreter_cost(spec: FlashAttentionSpec, config: FlashAttentionConfig) -> float:
    """Tile iterations one launch runs; the interpreter spends ~5 ms of CPU on each."""
    tiles = spec.batch * spec.heads_q * math.ceil(spec.seq_q / config.block_m) * math.ceil(spec.seq_kv / config.block_n)
    return tiles / 2 if spec.causal else tiles


def base_configs(spec: FlashAttentionSpec) -> list[dict]:
    """Valid configs of the space with the knobs past stock Triton off (the space with them is
    ~36x larger, too slow to enumerate per case; ``with_knobs`` draws them instead)."""
    space = space_for(spec, HW)
    base = [p for p in space.params if p.name in BASE_KNOBS]
    out = []
    for combo in itertools.product(*(p.values for p in base)):
        values = {**LATER_KNOBS, **dict(zip(BASE_KNOBS, combo, strict=True))}
        if space.is_valid(values):
            out.append(values)
    return out


def with_knobs(spec: FlashAttentionSpec, values: dict, rng: random.Random, tries: int = 8) -> dict:
    """``values`` with a random valid setting of the later knobs (unchanged if none is found)."""
    space = space_for(spec, HW)
    for _ in range(tries):
        drawn = {**values, **{k: rng.choice(space.param(k).values) for k in LATER_KNOBS}}
        if space.is_valid(drawn):
            return drawn
    return values


def affordable_configs(spec: FlashAttentionSpec, budget: float = 16) -> list[dict]:
    """Valid configs of the space whose interpreter cost fits the budget (at least one)."""
    configs = base_configs(spec)
    cheap = [c for c in configs if interpreter_cost(spec, FlashAttentionConfig.from_dict(c)) <= budget]
    return cheap or [min(configs, key=lambda c: interpreter_cost(spec, FlashAttentionConfig.from_dict(c)))]


def pick_configs(spec: FlashAttentionSpec, n: int, seed: int) -> list[FlashAttentionConfig]:
    """The default config plus ``n - 1`` distinct affordable valid configs sampled from the space."""
    configs = [FAMILY.default_config(spec, HW)]
    pool = affordable_configs(spec)
    rng = random.Random(seed)
    rng.shuffle(pool)
    for values in pool:
        # The sampled configs also draw the knobs past stock Triton, so the whole grid checks
        # their numerics on every shape, dtype and layout.
        cfg = FlashAttentionConfig.from_dict(with_knobs(spec, values, rng))
        if cfg not in configs:
            configs.append(cfg)
        if len(configs) == n:
            break
    return configs


def check(case: Case, config: FlashAttentionConfig, seed: int = 0) -> None:
    inputs = make_qkv(case.spec, case.layout, seed)
    out = torch.full_like(inputs["q"], float("nan"))  # poisoned: unwritten elements fail
    launch(inputs, config, out=out)
    result = compare(out, reference(inputs), baseline(inputs))
    assert result.ok, f"{case.id} {config.key()}: {result.message}"


# --- the grid ------------------------------------------------------------------------------
def _grid() -> list[Case]:
    rng = random.Random(1234)
    cases: list[Case] = []
    lengths = [(1, 1), (1, 17), (17, 1), (17, 17), (17, 113), (113, 17), (113, 113), (203, 203),
               (203, 64), (64, 203), (48, 80), (100, 37)]
    heads = [(1, 1), (2, 2), (4, 1), (8, 1), (8, 2), (4, 4)]  # MHA, MQA, GQA 4 and 8
    # Every head dim x dtype x causal x two ragged shapes, with rotating heads/batch/layout.
    for i, (d, dtype, causal, j) in enumerate(itertools.product(HEAD_DIMS, ("fp16", "bf16"), (False, True), (0, 1))):
        sq, skv = lengths[(i + 5 * j) % len(lengths)]
        hq, hkv = heads[(i + j) % len(heads)]
        batch = 1 + (i + j) % 2 if hq <= 4 else 1
        cases.append(Case(FlashAttentionSpec(batch, hq, hkv, sq, skv, d, dtype, causal), LAYOUTS[(i + j) % 3]))
    # Every length pair x causal x head-count pattern at small head dims.
    for i, ((sq, skv), causal) in enumerate(itertools.product(lengths, (False, True))):
        for j in (0, 1):
            d = (32, 64, 80, 128)[(i + j) % 4]
            hq, hkv = heads[(i + 3 * j) % len(heads)]
            dtype = ("fp16", "bf16")[(i + j) % 2]
            batch = 1 + j if hq <= 4 else 1
            cases.append(Case(FlashAttentionSpec(batch, hq, hkv, sq, skv, d, dtype, causal), LAYOUTS[(i + j + 1) % 3]))
    # Random combinations for the rest.
    while len(cases) < 205:
        sq, skv = rng.choice(lengths)
        hq, hkv = rng.choice(heads)
        spec = FlashAttentionSpec(rng.choice((1, 2)) if hq <= 4 else 1, hq, hkv, sq, skv, rng.choice(HEAD_DIMS),
                                  rng.choice(("fp16", "bf16", "bf16", "fp16", "fp32")), rng.random() < 0.5)
        cases.append(Case(spec, rng.choice(LAYOUTS)))
    # fp32 inputs (accepted, computed with ieee dots).
    for d, causal in ((64, True), (96, False), (256, True)):
        cases.append(Case(FlashAttentionSpec(1, 2, 1, 33, 47, d, "fp32", causal)))
    return cases


GRID = _grid()


@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_grid(case: Case) -> None:
    for i, config in enumerate(pick_configs(case.spec, 2, seed=zlib.crc32(case.id.encode()))):
        check(case, config, seed=i)


def test_grid_is_large_and_covers_the_issue() -> None:
    specs = [c.spec for c in GRID]
    assert len(GRID) >= 200
    assert {s.head_dim for s in specs} >= set(HEAD_DIMS)
    assert {s.dtype for s in specs} == {"fp16", "bf16", "fp32"}
    assert {s.heads_q // s.heads_kv for s in specs} >= {1, 4, 8}
    assert any(s.heads_kv == 1 and s.heads_q > 1 for s in specs)  # MQA
    assert any(s.causal and s.seq_q > s.seq_kv for s in specs)
    assert any(s.causal and s.seq_q < s.seq_kv for s in specs)
    assert {c.layout for c in GRID} == set(LAYOUTS)
    assert any(s.batch > 1 for s in specs)


# --- long sequences (1000+), the split loop with many full tiles ---------------------------
LONG = [
    Case(FlashAttentionSpec(1, 1, 1, 1029, 1029, 32, "bf16", True)),
    Case(FlashAttentionSpec(1, 2, 1, 77, 1100, 64, "fp16", True)),
    Case(FlashAttentionSpec(1, 1, 1, 1100, 300, 32, "fp16", True)),
    Case(FlashAttentionSpec(1, 1, 1, 1000, 1000, 64, "bf16", False), "bshd"),
]
LONG_CONFIGS = [FlashAttentionConfig(128, 128, 8, 3, True, False), FlashAttentionConfig(128, 64, 4, 2, False, True)]


@pytest.mark.parametrize("case", LONG, ids=[c.id for c in LONG])
def test_long(case: Case) -> None:
    for i, cfg in enumerate(LONG_CONFIGS):
        check(case, cfg, seed=i)


# --- every loop structure of the template on one ragged causal shape ------------------------
@pytest.mark.parametrize("split_diag,use_tma", [(True, False), (False, False), (True, True), (False, True)])
@pytest.mark.parametrize("block_m,block_n", [(16, 16), (16, 64), (64, 16), (32, 32), (128, 64)])
def test_loop_structures(split_diag: bool, use_tma: bool, block_m: int, block_n: int) -> None:
    case = Case(FlashAttentionSpec(1, 2, 1, 91, 150, 64, "bf16", True), "bshd")
    check(case, FlashAttentionConfig(block_m, block_n, 4, 2, split_diag, use_tma))


# --- log-sum-exp output and per-batch key windows ------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_lse_output(causal: bool) -> None:
    spec = FlashAttentionSpec(2, 4, 2, 45, 30, 64, "fp16", causal)  # causal: some rows see no key
    inputs = FAMILY.make_inputs(spec, "cpu", 3)
    lse = torch.full((2, 4, 45), float("nan"))
    out = launch(inputs, FlashAttentionConfig(16, 16, 4, 1, True, False), lse=lse)
    _, ref_lse = attention_math(inputs["q"], inputs["k"], inputs["v"], causal=causal, scale=None, dtype=torch.float64)
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert torch.allclose(lse[finite], ref_lse[finite].float(), atol=1e-3, rtol=1e-4)
    if causal:  # rows that see no key give 0, like flash-attn
        assert bool((out[:, :, : 45 - 30] == 0).all())


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("split_diag", [True, False])
def test_kv_window(causal: bool, split_diag: bool) -> None:
    spec = FlashAttentionSpec(4, 4, 1, 29, 70, 32, "bf16", causal)
    inputs = FAMILY.make_inputs(spec, "cpu", 5)
    # left padding, a window inside one tile, an empty window, a static-cache style tail
    inputs["kv_window"] = torch.tensor([[13, 70, 41], [40, 45, 20], [0, 0, 0], [0, 50, 21]], dtype=torch.int32)
    out = torch.full_like(inputs["q"], float("nan"))
    launch(inputs, FlashAttentionConfig(16, 16, 4, 1, split_diag, False), out=out)
    result = compare(out, reference(inputs), baseline(inputs))
    assert result.ok, result.message
    assert bool((out[2] == 0).all())


# --- an additive score bias (T5's relative position bias) ----------------------------------
@pytest.mark.parametrize(("spec", "bias_shape", "bias_dtype", "config"), [
    # T5's [1, H, Sq, Skv] bias on a ragged causal shape, two loop structures
    (FlashAttentionSpec(2, 4, 2, 37, 37, 32, "fp16", True), (1, 4, 37, 37), torch.float32,
     FlashAttentionConfig(16, 16, 4, 1, True, False)),
    (FlashAttentionSpec(2, 4, 2, 37, 37, 32, "fp16", True), (1, 4, 37, 37), torch.float32,
     FlashAttentionConfig(32, 32, 4, 2, False, True)),  # use_tma: a biased launch takes pointers
    # a per-batch bias shared by the heads, non-causal Sq != Skv, bias in the input dtype
    (FlashAttentionSpec(2, 2, 1, 19, 45, 64, "bf16", False), (2, 1, 19, 45), torch.bfloat16,
     FlashAttentionConfig(16, 32, 4, 1, True, False)),
    # one decode row over a long cache
    (FlashAttentionSpec(1, 2, 2, 1, 70, 32, "bf16", True), (1, 2, 1, 70), torch.float32,
     FlashAttentionConfig(16, 16, 4, 1, True, False)),
], ids=["t5-split", "t5-tma", "per-batch", "decode"])
def test_additive_bias(spec, bias_shape, bias_dtype, config) -> None:
    inputs = FAMILY.make_inputs(spec, "cpu", 7)
    gen = torch.Generator().manual_seed(8)
    # large enough to move the softmax (a kernel that dropped it would miss the rule by far),
    # with some keys pushed to -inf, as a mask folded into a bias does
    bias = torch.randn(bias_shape, generator=gen) * 4
    bias[..., 3] = float("-inf")
    inputs["bias"] = bias.to(bias_dtype)
    out = torch.full_like(inputs["q"], float("nan"))
    launch(inputs, config, out=out)
    result = compare(out, reference(inputs), baseline(inputs))
    assert result.ok, result.message
    without = {**inputs, "bias": None}
    assert not compare(out, reference(without), baseline(without)).ok  # the bias mattered


def test_additive_bias_with_a_key_window() -> None:
    spec = FlashAttentionSpec(4, 4, 1, 29, 70, 32, "bf16", True)
    inputs = FAMILY.make_inputs(spec, "cpu", 5)
    inputs["kv_window"] = torch.tensor([[13, 70, 41], [40, 45, 20], [0, 0, 0], [0, 50, 21]], dtype=torch.int32)
    inputs["bias"] = torch.randn(1, 4, 29, 70, generator=torch.Generator().manual_seed(9)) * 4
    out = torch.full_like(inputs["q"], float("nan"))
    launch(inputs, FlashAttentionConfig(16, 16, 4, 1, True, False), out=out)
    result = compare(out, reference(inputs), baseline(inputs))
    assert result.ok, result.message
    assert bool((out[2] == 0).all())  # an empty window stays empty whatever the bias


# --- the family contract the tuner relies on ------------------------------------------------
def test_family_contract() -> None:
    assert get_family("flash_attention") is FAMILY
    spec = FlashAttentionSpec(1, 2, 1, 40, 40, 64, "bf16", True)
    inputs = FAMILY.make_inputs(spec, "cpu", 7)
    again = FAMILY.make_inputs(spec, "cpu", 7)
    other = FAMILY.make_inputs(spec, "cpu", 8)
    assert torch.equal(inputs["q"], again["q"]) and not torch.equal(inputs["q"], other["q"])
    assert all(bool((inputs[n] != 0).all()) for n in ("q", "k", "v"))  # never zeros
    assert inputs["q"].dtype == TORCH_DTYPES["bf16"]
    verdict = FAMILY.verify(spec, FAMILY.default_config(spec, HW), "cpu", seed=1)
    assert verdict.ok and verdict.error <= verdict.allowed
    assert FAMILY.work(spec)["flops"] == 4 * 1 * 2 * 40 * 40 * 64 / 2
    assert len(FAMILY.source_hash) == 12


def test_verify_catches_a_wrong_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch that leaves part of the output unwritten, or is slightly off, must fail."""
    import tritune.kernels.flash_attention as fa

    spec = FlashAttentionSpec(1, 2, 2, 33, 33, 32, "fp16", False)
    cfg = FAMILY.default_config(spec, HW)
    real = fa.launch

    def partial(inputs, config, out=None, lse=None):
        real(inputs, config, out=out)
        out[:, :, -1] = float("nan")
        return out

    monkeypatch.setattr(fa, "launch", partial)
    assert not FAMILY.verify(spec, cfg, "cpu", seed=0).ok

    def off(inputs, config, out=None, lse=None):
        real(inputs, config, out=out)
        out.mul_(1.02)
        return out

    monkeypatch.setattr(fa, "launch", off)
    assert not FAMILY.verify(spec, cfg, "cpu", seed=0).ok


def test_bf16_dot_workaround_is_needed() -> None:
    """The DOT_FP32 flag exists because bf16 tl.dot is wrong in the interpreter (triton#11584).

    If this starts failing, upstream fixed the interpreter and the flag can go.
    """
    import triton
    import triton.language as tl

    @triton.jit
    def _dot(a_ptr, b_ptr, c_ptr, N: tl.constexpr):
        r = tl.arange(0, N)
        a = tl.load(a_ptr + r[:, None] * N + r[None, :])
        b = tl.load(b_ptr + r[:, None] * N + r[None, :])
        tl.store(c_ptr + r[:, None] * N + r[None, :], tl.dot(a, b))

    a = torch.randn(16, 16).bfloat16()
    b = torch.randn(16, 16).bfloat16()
    c = torch.empty(16, 16)
    _dot[(1,)](a, b, c, N=16)
    assert not torch.allclose(c, a.float() @ b.float(), atol=1e-1)


# --- property test --------------------------------------------------------------------------
@st.composite
def problems(draw: st.DrawFn) -> tuple[FlashAttentionSpec, FlashAttentionConfig, str]:
    heads_kv = draw(st.sampled_from((1, 2)))
    group = draw(st.sampled_from((1, 2, 4)))
    spec = FlashAttentionSpec(
        batch=draw(st.integers(1, 2)), heads_q=heads_kv * group, heads_kv=heads_kv,
        seq_q=draw(st.integers(1, 130)), seq_kv=draw(st.integers(1, 130)),
        head_dim=draw(st.sampled_from(HEAD_DIMS + (16, 40, 48))),
        dtype=draw(st.sampled_from(("fp16", "bf16"))), causal=draw(st.booleans()),
    )
    config = FlashAttentionConfig.from_dict(draw(st.sampled_from(affordable_configs(spec, budget=16))))
    return spec, config, draw(st.sampled_from(LAYOUTS))


@settings(max_examples=16, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_property_random_shapes_and_configs(problem) -> None:
    spec, config, layout = problem
    check(Case(spec, layout), config, seed=spec.seq_q)


def test_scale_argument() -> None:
    spec = FlashAttentionSpec(1, 2, 2, 20, 20, 64, "fp16", False)
    inputs = FAMILY.make_inputs(spec, "cpu", 0)
    inputs["scale"] = 0.3
    out = launch(inputs, FAMILY.default_config(spec, HW))
    assert compare(out, reference(inputs), baseline(inputs)).ok
    assert not torch.allclose(out.float(), launch({**inputs, "scale": 1 / math.sqrt(64)},
                                                  FAMILY.default_config(spec, HW)).float(), atol=1e-3)


@pytest.mark.parametrize("kernel", ["flash_attention", "paged_attention"])
def test_verify_reuses_the_reference_until_the_inputs_change(kernel, monkeypatch):
    """Landscapes verify hundreds of configs per shape: the reference is computed once per shape,
    and a config that scribbles on the cached inputs forces a fresh one instead of a false verdict."""
    import importlib

    from tritune.search_space import PagedAttentionSpec, default_config

    family = get_family(kernel)
    module = importlib.import_module(family.module_name)
    spec = (FlashAttentionSpec(1, 2, 1, 19, 19, 32, "fp16", True) if kernel == "flash_attention"
            else PagedAttentionSpec(2, 2, 1, 32, 21, 16, "fp16"))
    config = default_config(spec, Hardware.cpu_interpreter())
    calls = {"n": 0}
    real = module.reference

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "reference", counting)
    family._expected_cache = None
    assert family.verify(spec, config, "cpu", 5).ok
    first = calls["n"]
    assert first >= 1
    assert family.verify(spec, config, "cpu", 5).ok and calls["n"] == first  # reused
    inputs = family._expected_cache[1][0]
    inputs["q"].mul_(-1.0)  # a kernel that wrote into its inputs
    assert family.verify(spec, config, "cpu", 5).ok and calls["n"] == 2 * first  # recomputed, still right
    assert family.verify(spec, config, "cpu", 6).ok and calls["n"] == 3 * first  # another seed, another reference
