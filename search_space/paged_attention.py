"""Search space of the paged-attention decode template (kernels/paged_attention.py).

Parameters:

- ``block_n``: tokens gathered per inner step (any power of two; steps smaller than a page read
  one page id per step, larger ones one per token).
- ``num_splits``: programs each sequence's tokens are cut into (flash-decoding); 1 is a single
  pass without the merge kernel.
- ``group_block``: rows of the query-head tile, i.e. how the ``G = Hq/Hkv`` query heads sharing
  a KV head are laid out. Every head of the group is in one program (K/V read once per group);
  ``>= 16`` multiplies on tensor cores (``tl.dot`` needs every dimension >= 16, so the group is
  padded to 16 rows), below 16 with FMAs on exactly ``pow2(G)`` rows.
- ``num_warps``, ``num_stages``: launch options (``num_stages > 1`` software-pipelines the loads).
- ``fold_combine``: with ``num_splits > 1``, the split program that finishes a row last (an
  atomic arrival counter) merges the partial results itself, so a decode step is one launch
  instead of two; pointless (and rejected) without splits.

Constraints mirror what fails or wastes on the GPU: shared memory (the estimate is checked
against the compiler's figure in tests/kernels/test_paged_compile.py), tl.dot shapes, register
pressure, steps and splits longer than the context. Step size and page size combine freely
(the kernel gathers page ids per token when a step spans pages), so no rule ties them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tritune.search_space._space import (
    Config,
    Constraint,
    Param,
    SearchSpace,
    Value,
    first_passing,
    passes,
    pow2_ceil,
)
from tritune.search_space._specs import DTYPE_BYTES, PagedAttentionSpec
from tritune.search_space.hardware import Hardware

BLOCK_N = (8, 16, 32, 64, 128, 256)
NUM_SPLITS = (1, 2, 4, 8, 16, 32, 64, 128)
GROUP_BLOCK = (1, 2, 4, 8, 16, 32, 64, 128)
NUM_WARPS = (1, 2, 4, 8)
NUM_STAGES = (1, 2, 3)
# Register budgets, in tile values per thread, fitted on the compile tier (sm_90, 788 configs):
# configs under them used at most 16 B of stack, those over them spilled up to 2 KB. Tensor cores: K and V steps, query tile, accumulator and
# probabilities; FMA: the [group, block_n, D] product.
DOT_VALUES_PER_THREAD = 384
FMA_VALUES_PER_THREAD = 64


@dataclass(frozen=True)
class PagedAttentionConfig(Config):
    block_n: int = 64  # tokens per inner step
    num_splits: int = 1  # KV splits (flash-decoding); 1 = single pass
    group_block: int = 16  # rows of the query-head tile; >= 16 uses tl.dot
    num_warps: int = 4
    num_stages: int = 2
    fold_combine: bool = False  # with splits: the last split of a row merges, no merge kernel

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PagedAttentionConfig:
        """Records from before ``fold_combine`` existed ran the separate merge kernel."""
        if "fold_combine" not in values and "num_splits" in values:
            values = {**values, "fold_combine": False}
        return super().from_dict(values)


def padded_head_dim(head_dim: int) -> int:
    """Head dims that are not powers of two run padded to the next one (masked loads)."""
    return max(16, pow2_ceil(head_dim))


def group_size(spec: PagedAttentionSpec) -> int:
    return spec.heads_q // spec.heads_kv


def group_block_choices(spec: PagedAttentionSpec) -> tuple[int, ...]:
    """The useful query-tile heights: pow2(G) (FMA, when below 16) and max(16, pow2(G)) (tl.dot)."""
    g = pow2_ceil(group_size(spec))
    return tuple(sorted({g, max(16, g)}))


def smem_bytes(spec: PagedAttentionSpec, values: Mapping[str, Value]) -> int:
    """Dynamic shared memory of one decode program (bytes), as Triton 3.x allocates it.

    Fitted to the compiler's figure (sm_80/sm_90, tests/kernels/test_paged_compile.py checks it
    never under-estimates and stays close): the tensor-core path stages K and V through shared
    memory, one tile for both without pipelining and one each with it (deeper ``num_stages``
    add no K/V buffers: the loads wait on the page-id load, so only those are prefetched
    further), plus the query tile and the probabilities as ``tl.dot`` operands. The FMA path
    needs only reduction scratch.
    """
    elt = DTYPE_BYTES[spec.dtype]
    d = padded_head_dim(spec.head_dim)
    n = int(values["block_n"])
    rows = int(values["group_block"])
    stages = int(values["num_stages"])
    warps = int(values["num_warps"])
    if rows < 16:
        return 512 if warps == 1 else min(1024 * warps, 2 * rows * n * d)
    tile = n * d * elt
    total = tile * (2 if stages >= 2 else 1)
    if warps == 1:  # one warp exchanges the probabilities through registers
        total += rows * d * elt + (min(8 * n, 512) if stages >= 2 else 0)
    else:
        total += rows * (d + n) * elt
    if stages >= 3:  # page ids prefetched a step further: one per step, or one per token
        total += 4 * (n if n > spec.block_size else 1)
    return total


def values_per_thread(spec: PagedAttentionSpec, values: Mapping[str, Value]) -> float:
    """Register pressure proxy: tile values one thread holds (see the budgets above)."""
    threads = 32 * int(values["num_warps"])
    n, rows, d = int(values["block_n"]), int(values["group_block"]), padded_head_dim(spec.head_dim)
    if rows < 16:
        return rows * n * d / threads
    return (2 * n * d + 2 * rows * d + 2 * rows * n) / threads


def constraints(spec: PagedAttentionSpec, hardware: Hardware) -> tuple[Constraint, ...]:
    g = group_size(spec)
    ctx_steps_cap = max(16, pow2_ceil(spec.context_len))

    def grouping(values: Mapping[str, Value]) -> str | None:
        gb = int(values["group_block"])
        if gb not in group_block_choices(spec):
            return (f"group_block={gb} does not fit a group of {g} query heads; use "
                    f"{' or '.join(map(str, group_block_choices(spec)))}")
        return None

    def dot_shapes(values: Mapping[str, Value]) -> str | None:
        if int(values["group_block"]) >= 16 and int(values["block_n"]) < 16:
            return f"tl.dot needs every dimension >= 16, block_n={values['block_n']}"
        return None

    def step_vs_context(values: Mapping[str, Value]) -> str | None:
        n = int(values["block_n"])
        if n > ctx_steps_cap:
            return f"block_n={n} is longer than the context ({spec.context_len} tokens)"
        return None

    def splits_vs_context(values: Mapping[str, Value]) -> str | None:
        splits, n = int(values["num_splits"]), int(values["block_n"])
        steps = -(-spec.context_len // n)
        if splits > steps:
            return f"num_splits={splits} leaves splits without a step of {n} tokens (context {spec.context_len})"
        return None

    def folding(values: Mapping[str, Value]) -> str | None:
        if values["fold_combine"] and int(values["num_splits"]) == 1:
            return "fold_combine merges splits: it needs num_splits > 1"
        return None

    def registers(values: Mapping[str, Value]) -> str | None:
        held = values_per_thread(spec, values)
        budget = DOT_VALUES_PER_THREAD if int(values["group_block"]) >= 16 else FMA_VALUES_PER_THREAD
        if held > budget:
            return f"{held:.0f} tile values per thread > {budget}: the compiler would spill registers"
        return None

    def smem(values: Mapping[str, Value]) -> str | None:
        need = smem_bytes(spec, values)
        if need > hardware.smem_per_block:
            return f"needs {need} B of shared memory, the device allows {hardware.smem_per_block} B per block"
        return None

    return (
        Constraint("query_grouping", grouping),
        Constraint("dot_shapes", dot_shapes),
        Constraint("step_vs_context", step_vs_context),
        Constraint("splits_vs_context", splits_vs_context),
        Constraint("fold_combine", folding),
        Constraint("registers", registers),
        Constraint("shared_memory", smem),
    )


def space(spec: PagedAttentionSpec, hardware: Hardware) -> SearchSpace:
    return SearchSpace(
        name=f"paged_attention[{spec.describe()}]",
        params=(
            Param("block_n", BLOCK_N, "tokens per inner step"),
            Param("num_splits", NUM_SPLITS, "KV splits per sequence (flash-decoding)"),
            Param("group_block", GROUP_BLOCK, "rows of the query-head tile (>= 16: tl.dot)"),
            Param("num_warps", NUM_WARPS),
            Param("num_stages", NUM_STAGES),
            Param("fold_combine", (False, True), "the last split of a row merges (one launch, no merge kernel)"),
        ),
        constraints=constraints(spec, hardware),
        default_values=default_config(spec, hardware).to_dict(),
        config_type=PagedAttentionConfig,
        context={"spec": spec.to_dict(), "hardware": hardware.to_dict()},
    )


def default_config(spec: PagedAttentionSpec, hardware: Hardware) -> PagedAttentionConfig:
    """A valid config for every spec on every device: the runtime's untuned fallback.

    Tensor-core grouping, pipelined loads, the longest step (64 tokens at most) that fits the
    register and shared-memory budgets with 4 warps, else 8; then as many splits as keep
    sequences x KV heads x splits within about two programs per SM (flash-decoding for small
    batches) while every split gets whole steps.
    """
    rules = constraints(spec, hardware)
    group_block = max(16, pow2_ceil(group_size(spec)))
    candidates = [
        {"block_n": n, "num_splits": 1, "group_block": group_block, "num_warps": w, "num_stages": st,
         "fold_combine": False}
        for st in (2, 1) for n in (64, 32, 16) for w in (4, 8)
    ]
    values = first_passing(candidates, rules) or candidates[-1]
    programs = spec.num_seqs * spec.heads_kv
    target = 2 * max(1, hardware.sm_count)
    while True:
        more = {**values, "num_splits": 2 * int(values["num_splits"])}
        if more["num_splits"] > NUM_SPLITS[-1] or programs * more["num_splits"] > target:
            break
        if not passes(more, rules):
            break
        values = more
    return PagedAttentionConfig(**values)
