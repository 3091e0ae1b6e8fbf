"""The paged-attention decode template against its fp32 reference, under the Triton interpreter.

Every case draws a random paged cache whose block table is a permutation of an over-provisioned
pool (pages no sequence owns and slots past each sequence's end are NaN, so a read past the end
poisons the output), launches into a NaN-filled output, and applies the dtype rule of
``tritune.kernels.compare``. Heads and head dims are small where the size does not matter: the
interpreter runs each program in Python.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from tritune.kernels import compare
from tritune.kernels.paged_attention import (
    FAMILY,
    gather_pages,
    launch,
    make_paged_inputs,
    reference,
)
from tritune.search_space import Hardware, PagedAttentionConfig, PagedAttentionSpec, space_for

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
HEADS = {"mha": (2, 2), "gqa4": (8, 2), "gqa8": (8, 1), "mqa": (4, 1)}  # (Hq, Hkv); gqa8 is also MQA


def run_case(lens, *, block_size, heads, head_dim, dtype, config, seed=0):
    hq, hkv = heads
    inputs = make_paged_inputs(len(lens), hq, hkv, head_dim, torch.tensor(lens), block_size=block_size,
                               dtype=DTYPES[dtype], device="cpu", seed=seed)
    out = torch.full_like(inputs["q"], float("nan"))
    launch(inputs, config, out=out)
    result = compare(out, reference(inputs, torch.float32), reference(inputs, DTYPES[dtype]))
    assert result.ok, f"{result.message} (lens={lens}, bs={block_size}, heads={heads}, D={head_dim}, {config})"
    return inputs, out


def _grid():
    """>= 150 deterministic cases covering every block size x head layout x dtype several ways."""
    rng = random.Random(5)
    cases = []
    splits_cycle = itertools.cycle((1, 2, 4, 16, 3, 8, 1, 5))
    for bs, layout, dtype, variant in itertools.product((8, 16, 32, 64, 128), HEADS, DTYPES, range(4)):
        hq, hkv = HEADS[layout]
        group = hq // hkv
        head_dim = (32, 16, 64, 48)[variant]
        # Lengths around page boundaries, 1, and (every other case) a longer one, in random order.
        lens = [1, bs - 1, bs + 1]
        if variant % 2 == 0:
            lens.append(rng.randint(2, 3 * bs + 7))
        if variant == 3:
            lens = [rng.randint(1, 3 * bs), 2 * bs]
        rng.shuffle(lens)
        splits = next(splits_cycle)
        tensor_cores = variant % 2 == 0 or group > 8
        group_block = max(16, group) if tensor_cores else 1 << (group - 1).bit_length()
        block_n = (bs // 2, bs, 2 * bs, 32)[(variant + bs) % 4]
        block_n = max(16 if tensor_cores else 8, min(block_n, 256))
        config = PagedAttentionConfig(block_n=block_n, num_splits=splits, group_block=group_block,
                                      num_warps=4, num_stages=2)
        cases.append(pytest.param(lens, bs, (hq, hkv), head_dim, dtype, config,
                                  id=f"bs{bs}-{layout}-{dtype}-v{variant}-n{block_n}-p{splits}-g{group_block}"))
    return cases


GRID = _grid()


@pytest.mark.parametrize("lens,block_size,heads,head_dim,dtype,config", GRID)
def test_grid(lens, block_size, heads, head_dim, dtype, config):
    run_case(lens, block_size=block_size, heads=heads, head_dim=head_dim, dtype=dtype, config=config,
             seed=hash((tuple(lens), block_size)) % 1000)


def test_grid_size():
    assert len(GRID) >= 150


@pytest.mark.parametrize("head_dim", [64, 128, 256, 80])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_head_dims(head_dim, dtype):
    cfg = PagedAttentionConfig(block_n=32, num_splits=2, group_block=16, num_warps=4, num_stages=2)
    run_case([37, 1, 70], block_size=16, heads=(4, 2), head_dim=head_dim, dtype=dtype, config=cfg)


@pytest.mark.parametrize("heads,head_dim", [((6, 2), 80), ((3, 1), 8), ((12, 4), 24)])
@pytest.mark.parametrize("group_block", ["fma", "dot"])
def test_odd_groups_and_head_dims(heads, head_dim, group_block):
    """Groups that are not powers of two (padded rows) and head dims padded to a power of two."""
    g = heads[0] // heads[1]
    rows = 1 << (g - 1).bit_length() if group_block == "fma" else 16
    cfg = PagedAttentionConfig(block_n=16, num_splits=3, group_block=rows, num_warps=4, num_stages=2)
    run_case([1, 30, 17], block_size=8, heads=heads, head_dim=head_dim, dtype="bf16", config=cfg)


@pytest.mark.parametrize("block_size,block_n", [(256, 128), (256, 256), (4, 16), (2, 32)])
def test_extreme_block_sizes(block_size, block_n):
    cfg = PagedAttentionConfig(block_n=block_n, num_splits=2, group_block=16, num_warps=4, num_stages=2)
    run_case([block_size + 3, 1, 2 * block_size - 1], block_size=block_size, heads=(4, 2), head_dim=16,
             dtype="fp16", config=cfg)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_long_mixed_batch(dtype):
    """A few thousand tokens next to 1-token sequences, split 16 ways."""
    cfg = PagedAttentionConfig(block_n=128, num_splits=16, group_block=16, num_warps=4, num_stages=2)
    run_case([4099, 1, 777, 2048], block_size=32, heads=(8, 2), head_dim=32, dtype=dtype, config=cfg)


@pytest.mark.slow
def test_64k_context():
    """A 64k+ token sequence (many splits) beside a short one, on a small head."""
    cfg = PagedAttentionConfig(block_n=256, num_splits=16, group_block=16, num_warps=4, num_stages=2)
    run_case([65536 + 17, 3], block_size=128, heads=(4, 1), head_dim=16, dtype="bf16", config=cfg)


@pytest.mark.parametrize("splits", [1, 4])
def test_split_count_one_equals_many(splits):
    """The single-pass path and the split + merge path agree (both against the reference too)."""
    base = PagedAttentionConfig(block_n=16, num_splits=1, group_block=16, num_warps=4, num_stages=2)
    a = run_case([50, 9, 33], block_size=8, heads=(8, 2), head_dim=32, dtype="fp16", config=base, seed=3)[1]
    b = run_case([50, 9, 33], block_size=8, heads=(8, 2), head_dim=32, dtype="fp16",
                 config=base.replace(num_splits=splits), seed=3)[1]
    assert torch.allclose(a.float(), b.float(), atol=2e-3)


@pytest.mark.parametrize("block_n", [16, 32])  # a step within a page / spanning pages
def test_cache_beyond_int32_offsets(block_n):
    """A cache of 65600 blocks whose used pages sit past 2^31 elements from its start.

    The cache is one ``torch.empty`` (virtual memory; untouched pages cost no RAM) with K and V
    interleaved in one storage; only the used pages are written. 32-bit page-offset arithmetic
    would wrap and read elsewhere (or fault).
    """
    num_blocks, block_size, hkv, head_dim = 65600, 16, 8, 256  # page stride 32768 elements
    base = torch.empty((num_blocks, block_size, 2 * hkv, head_dim), dtype=torch.float16)
    k_cache, v_cache = base[:, :, :hkv], base[:, :, hkv:]
    assert (num_blocks - 1) * k_cache.stride(0) > 2**31
    gen = torch.Generator().manual_seed(0)
    lens = [40, 17]
    pages = [[65590, 12, 65599], [65537, 65598]]  # high ids, one low, out of order
    table = torch.tensor([p + [0] * (3 - len(p)) for p in pages], dtype=torch.int32)
    for row in pages:
        for p in row:
            base[p] = torch.randn(base.shape[1:], generator=gen).half()
    q = torch.randn((2, 16, head_dim), generator=gen).half()
    inputs = {"q": q, "k_cache": k_cache, "v_cache": v_cache, "block_table": table,
              "seq_lens": torch.tensor(lens, dtype=torch.int32), "scale": head_dim ** -0.5}
    cfg = PagedAttentionConfig(block_n=block_n, num_splits=2, group_block=16, num_warps=4, num_stages=2)
    out = torch.full_like(q, float("nan"))
    launch(inputs, cfg, out=out)
    result = compare(out, reference(inputs, torch.float32), reference(inputs, torch.float16))
    assert result.ok, result.message


def test_reference_gathers_in_token_order():
    inputs = make_paged_inputs(2, 2, 1, 8, torch.tensor([5, 11]), block_size=4, dtype=torch.float16,
                               device="cpu", seed=0)
    k = gather_pages(inputs["k_cache"], inputs["block_table"], 1, 11)
    pages = inputs["block_table"][1, :3].long()
    assert torch.equal(k[4:8], inputs["k_cache"][pages[1]])
    assert not torch.isnan(k).any()  # slots past the end are NaN in the pool, not in the gather


def test_reads_past_the_end_would_be_caught():
    """The NaN poison is real: attention over one token more than the sequence has is NaN."""
    inputs = make_paged_inputs(1, 2, 1, 8, torch.tensor([5]), block_size=4, dtype=torch.float16,
                               device="cpu", seed=0)
    inputs = {**inputs, "seq_lens": torch.tensor([6], dtype=torch.int32)}
    assert torch.isnan(reference(inputs)).all()


# --- the family contract (what the tuner calls) -----------------------------------------------

SPEC = PagedAttentionSpec(num_seqs=3, heads_q=8, heads_kv=2, head_dim=32, context_len=100, block_size=16,
                          dtype="bf16")


def test_family_verify_default_and_sampled_configs():
    hw = Hardware.from_spec("H100")
    space = space_for(SPEC, hw)
    configs = [space.default(), *space.sample(random.Random(0), 3)]
    for values in configs:
        cfg = space.config(values)
        result = FAMILY.verify(SPEC, cfg, "cpu", seed=1)
        assert result.ok, (values, result.message)


def test_family_verify_rejects_a_wrong_kernel(monkeypatch):
    """verify must fail when the launch leaves the output unwritten or wrong."""
    import tritune.kernels.paged_attention as mod

    cfg = FAMILY.default_config(SPEC, Hardware.cpu_interpreter())
    monkeypatch.setattr(mod, "launch", lambda inputs, config, out=None: out)  # writes nothing
    assert not FAMILY.verify(SPEC, cfg, "cpu", seed=0).ok
    monkeypatch.setattr(mod, "launch", lambda inputs, config, out=None: out.copy_(inputs["q"]))
    assert not FAMILY.verify(SPEC, cfg, "cpu", seed=0).ok


def test_family_inputs_and_work():
    a = FAMILY.make_inputs(SPEC, "cpu", seed=4)
    b = FAMILY.make_inputs(SPEC, "cpu", seed=4, mixed=True)
    assert a["seq_lens"].tolist() == [100, 100, 100]
    assert max(b["seq_lens"].tolist()) == 100 and min(b["seq_lens"].tolist()) == 1
    table = a["block_table"][:, :7]
    assert table.unique().numel() == table.numel()  # no page shared between sequences
    assert not torch.equal(table.flatten().sort().values, table.flatten())  # not contiguous/sorted
    assert a["k_cache"].shape[0] > table.numel()  # over-provisioned pool
    assert not torch.equal(FAMILY.make_inputs(SPEC, "cpu", seed=5)["q"], a["q"])
    assert FAMILY.work(SPEC)["bytes"] == SPEC.bytes_moved
    assert torch.equal(FAMILY.launch(a, FAMILY.default_config(SPEC, Hardware.cpu_interpreter())).isnan().any(),
                       torch.tensor(False))
