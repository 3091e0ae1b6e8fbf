"""Serving steps laid out as vLLM 0.33 lays them out, for the vLLM tests (torch only, no vllm import).

A step is a list of requests ``(cached, new)``: ``cached`` tokens already in the cache,
``new`` tokens scheduled now (1: decode, 2-8: speculative verification, more: a chunked-prefill
chunk, with ``cached`` 0 a fresh prefill). As vLLM's model runner builds it:
``query_start_loc`` int32 ``[R+1]`` over the new tokens, ``seq_lens`` int32 ``cached + new``,
``block_table`` int32 ``[R, max_blocks]`` of pages drawn from a permutation of an
over-provisioned pool, ``slot_mapping`` int64 ``[num_tokens]`` (``page * block_size + row`` of
each new token's position, -1 for the padding tokens a CUDA-graph batch carries at its end),
and one per-layer cache tensor, logical ``[num_blocks, Hkv, block_size, 2*D]`` with K in
``[..., :D]`` and V in ``[..., D:]``, physically HND (contiguous) or NHD (``[num_blocks,
block_size, Hkv, 2*D]`` in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# decode rows, a chunked-prefill chunk on a cached prefix, a speculative row, a fresh prefill
MIXED = ((37, 1), (30, 20), (5, 1), (23, 4), (0, 9))
DECODE = ((40, 1), (17, 1), (3, 1), (64, 1))


@dataclass
class Step:
    requests: tuple[tuple[int, int], ...]
    block_size: int
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    slot_mapping: torch.Tensor
    num_actual_tokens: int
    max_query_len: int
    max_seq_len: int
    kv_cache: torch.Tensor  # logical [num_blocks, Hkv, block_size, 2*D], prefix K/V written
    query: torch.Tensor  # [num_tokens, Hq, D] (num_tokens = actual + padding)
    key: torch.Tensor  # [num_tokens, Hkv, D]: this step's new keys
    value: torch.Tensor

    def caches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V ``[num_blocks, block_size, Hkv, D]`` views, as vLLM's Triton backend takes them."""
        d = self.key.shape[-1]
        return self.kv_cache.transpose(1, 2).split(d, dim=-1)

    def common_metadata(self):
        """vLLM's ``CommonAttentionMetadata`` of this step."""
        from vllm.v1.attention.backend import CommonAttentionMetadata

        return CommonAttentionMetadata(
            query_start_loc=self.query_start_loc, query_start_loc_cpu=self.query_start_loc.clone(),
            seq_lens=self.seq_lens, num_reqs=len(self.requests), num_actual_tokens=self.num_actual_tokens,
            max_query_len=self.max_query_len, max_seq_len=self.max_seq_len, block_table_tensor=self.block_table,
            slot_mapping=self.slot_mapping, causal=True)


def make_step(requests, *, heads_q: int, heads_kv: int, head_dim: int, dtype: torch.dtype, block_size: int = 16,
              layout: str = "HND", padding: int = 2, seed: int = 0) -> Step:
    g = torch.Generator().manual_seed(seed)
    lens = [c + n for c, n in requests]
    pages = [-(-s // block_size) for s in lens]
    max_blocks = max(pages) + 1  # vLLM's block table rows are wider than any request needs
    num_blocks = 2 * sum(pages) + 3
    pool = torch.randperm(num_blocks, generator=g).to(torch.int32)
    block_table = torch.zeros(len(requests), max_blocks, dtype=torch.int32)
    used = 0
    for r, p in enumerate(pages):
        block_table[r, :p] = pool[used:used + p]
        used += p
    shape = (num_blocks, heads_kv, block_size, 2 * head_dim)
    if layout == "HND":
        kv_cache = torch.zeros(shape, dtype=dtype)
    elif layout == "NHD":  # physical [num_blocks, block_size, Hkv, 2D], same logical shape
        kv_cache = torch.zeros(num_blocks, block_size, heads_kv, 2 * head_dim, dtype=dtype).transpose(1, 2)
    else:
        raise ValueError(f"layout={layout!r}")
    k_cache, v_cache = kv_cache.transpose(1, 2).split(head_dim, dim=-1)
    for r, (cached, _) in enumerate(requests):  # the cached prefixes
        for pos in range(cached):
            page, row = int(block_table[r, pos // block_size]), pos % block_size
            k_cache[page, row] = torch.randn(heads_kv, head_dim, generator=g).to(dtype)
            v_cache[page, row] = torch.randn(heads_kv, head_dim, generator=g).to(dtype)
    slots = []
    for r, (cached, new) in enumerate(requests):
        for pos in range(cached, cached + new):
            slots.append(int(block_table[r, pos // block_size]) * block_size + pos % block_size)
    actual = len(slots)
    slots += [-1] * padding
    starts = [0]
    for _, new in requests:
        starts.append(starts[-1] + new)
    tokens = actual + padding
    return Step(
        requests=tuple(requests), block_size=block_size,
        query_start_loc=torch.tensor(starts, dtype=torch.int32), seq_lens=torch.tensor(lens, dtype=torch.int32),
        block_table=block_table, slot_mapping=torch.tensor(slots, dtype=torch.int64), num_actual_tokens=actual,
        max_query_len=max(n for _, n in requests), max_seq_len=max(lens), kv_cache=kv_cache,
        query=torch.randn(tokens, heads_q, head_dim, generator=g).to(dtype),
        key=torch.randn(tokens, heads_kv, head_dim, generator=g).to(dtype),
        value=torch.randn(tokens, heads_kv, head_dim, generator=g).to(dtype))


def write_reference(step: Step) -> torch.Tensor:
    """The cache after this step's K/V are stored, computed in plain PyTorch (a copy)."""
    kv = step.kv_cache.clone()
    d = step.key.shape[-1]
    k_cache, v_cache = kv.transpose(1, 2).split(d, dim=-1)
    for t, slot in enumerate(step.slot_mapping.tolist()):
        if slot >= 0:
            k_cache[slot // step.block_size, slot % step.block_size] = step.key[t]
            v_cache[slot // step.block_size, slot % step.block_size] = step.value[t]
    return kv
