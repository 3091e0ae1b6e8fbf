"""``PagedKVCache``: a block pool for decode, the data structure ``paged_attention`` reads.

K and V live in two tensors ``[num_blocks, block_size, Hkv, D]``; each sequence owns an ordered
list of block ids (its row of the block table) and a length. Blocks come from a free list and go
back to it when no sequence references them. ``fork`` shares every block of a sequence with a new
one by reference count (a common prompt prefix, beam search); the first write into a shared,
partially filled block copies it for the writer (copy-on-write), so sequences never see each
other's tokens. Full shared blocks are never written again and stay shared.

Bookkeeping (free list, reference counts, block lists) is host-side Python; only token data and
the block-table/length tensors handed to the kernel live on the device. Every operation checks
that it can complete before changing anything, so an ``OutOfBlocksError`` leaves the cache as it
was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch


class OutOfBlocksError(RuntimeError):
    """The cache has fewer free blocks than an append needs."""


@dataclass
class _Sequence:
    blocks: list[int] = field(default_factory=list)
    length: int = 0


class PagedKVCache:
    """A paged K/V cache of ``num_blocks`` blocks of ``block_size`` tokens.

    Typical decode loop::

        cache = PagedKVCache(num_blocks=1024, block_size=16, num_kv_heads=8, head_dim=128,
                             dtype=torch.bfloat16, device="cuda")
        a = cache.add_sequence()
        cache.extend(a, k_prompt, v_prompt)          # [T, Hkv, D] each
        b = cache.fork(a)                            # shares a's blocks
        cache.append([a, b], k_new, v_new)           # [2, Hkv, D]: one token each
        out = cache.attention(q, [a, b])             # [2, Hq, D]
        cache.free(b)
    """

    def __init__(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, *,
                 dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu") -> None:
        for name, value in (("num_blocks", num_blocks), ("block_size", block_size),
                            ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if block_size & (block_size - 1):
            raise ValueError(f"block_size={block_size} must be a power of two")
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: pop() hands out low ids first
        self._refs = [0] * num_blocks
        self._seqs: dict[int, _Sequence] = {}
        self._next_id = 0

    # --- introspection ---------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self.k.shape[0]

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def device(self) -> torch.device:
        return self.k.device

    def sequences(self) -> list[int]:
        return list(self._seqs)

    def __contains__(self, seq_id: object) -> bool:
        return seq_id in self._seqs

    def seq_len(self, seq_id: int) -> int:
        return self._get(seq_id).length

    def blocks(self, seq_id: int) -> list[int]:
        """The block ids of ``seq_id`` in token order (a copy)."""
        return list(self._get(seq_id).blocks)

    def ref_count(self, block: int) -> int:
        return self._refs[block]

    # --- sequence lifetime -----------------------------------------------------------------------
    def add_sequence(self, seq_id: int | None = None) -> int:
        """Register an empty sequence; returns its id (a fresh one unless ``seq_id`` is given)."""
        if seq_id is None:
            while self._next_id in self._seqs:
                self._next_id += 1
            seq_id = self._next_id
            self._next_id += 1
        elif seq_id in self._seqs:
            raise ValueError(f"seq_id={seq_id} already exists in the cache")
        self._seqs[seq_id] = _Sequence()
        return seq_id

    def fork(self, src: int, dst: int | None = None) -> int:
        """A new sequence sharing every block (and token) of ``src``; no data is copied."""
        parent = self._get(src)
        dst = self.add_sequence(dst)
        self._seqs[dst] = _Sequence(list(parent.blocks), parent.length)
        for b in parent.blocks:
            self._refs[b] += 1
        return dst

    def free(self, seq_id: int) -> None:
        """Drop ``seq_id``; blocks no other sequence references return to the free list."""
        seq = self._get(seq_id)
        del self._seqs[seq_id]
        for b in reversed(seq.blocks):
            self._refs[b] -= 1
            if self._refs[b] == 0:
                self._free.append(b)

    # --- writing ---------------------------------------------------------------------------------
    def append(self, seq_ids: Sequence[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Append one token to each of ``seq_ids``: ``k``/``v`` are ``[len(seq_ids), Hkv, D]``.

        ``[len(seq_ids), T, Hkv, D]`` appends ``T`` tokens to each.
        """
        ids = list(seq_ids)
        if len(set(ids)) != len(ids):
            raise ValueError(f"seq_ids repeats a sequence: {ids}")
        if k.dim() == 3:
            k, v = k.unsqueeze(1), v.unsqueeze(1)
        if k.dim() != 4 or k.shape[0] != len(ids) or k.shape[2:] != self.k.shape[2:]:
            raise ValueError(f"k must be [{len(ids)}, Hkv={self.k.shape[2]}, D={self.k.shape[3]}] or "
                             f"[{len(ids)}, T, Hkv, D], got {tuple(k.shape)}")
        if v.shape != k.shape:
            raise ValueError(f"v shape {tuple(v.shape)} must equal k shape {tuple(k.shape)}")
        self._write({s: (k[i], v[i]) for i, s in enumerate(ids)})

    def extend(self, seq_id: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append ``T`` tokens to one sequence (a prompt): ``k``/``v`` are ``[T, Hkv, D]``."""
        if k.dim() != 3 or k.shape[1:] != self.k.shape[2:] or v.shape != k.shape:
            raise ValueError(f"k and v must be [T, Hkv={self.k.shape[2]}, D={self.k.shape[3]}], "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}")
        self._write({seq_id: (k, v)})

    def _write(self, items: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        seqs = {s: self._get(s) for s in items}
        # Plan first: count the blocks every sequence needs (copy-on-write + growth), then fail
        # before touching anything if the pool cannot supply them.
        need = 0
        for s, (k, _) in items.items():
            seq, n = seqs[s], k.shape[0]
            filled = seq.length % self.block_size
            if n and filled and self._refs[seq.blocks[-1]] > 1:
                need += 1
            room = (self.block_size - filled) if filled else 0
            need += -(-max(0, n - room) // self.block_size)
        if need > len(self._free):
            raise OutOfBlocksError(
                f"PagedKVCache is out of blocks: this append needs {need} new block(s), {len(self._free)} of "
                f"{self.num_blocks} are free; free finished sequences or create a larger cache")
        dst_blocks: list[torch.Tensor] = []
        dst_slots: list[torch.Tensor] = []
        ks, vs = [], []
        for s, (k, v) in items.items():
            n = k.shape[0]
            if n == 0:
                continue
            seq = seqs[s]
            filled = seq.length % self.block_size
            if filled and self._refs[seq.blocks[-1]] > 1:
                self._copy_on_write(seq, filled)
            while len(seq.blocks) * self.block_size < seq.length + n:
                seq.blocks.append(self._allocate())
            pos = torch.arange(seq.length, seq.length + n)
            table = torch.tensor(seq.blocks, dtype=torch.long)
            dst_blocks.append(table[pos // self.block_size])
            dst_slots.append(pos % self.block_size)
            ks.append(k)
            vs.append(v)
            seq.length += n
        if ks:
            blocks = torch.cat(dst_blocks).to(self.device)
            slots = torch.cat(dst_slots).to(self.device)
            self.k[blocks, slots] = torch.cat(ks).to(self.k.dtype)
            self.v[blocks, slots] = torch.cat(vs).to(self.v.dtype)

    def _copy_on_write(self, seq: _Sequence, filled: int) -> None:
        old = seq.blocks[-1]
        new = self._allocate()
        self.k[new, :filled] = self.k[old, :filled]
        self.v[new, :filled] = self.v[old, :filled]
        self._refs[old] -= 1
        seq.blocks[-1] = new

    def _allocate(self) -> int:
        block = self._free.pop()
        self._refs[block] = 1
        return block

    # --- reading ---------------------------------------------------------------------------------
    def block_table(self, seq_ids: Iterable[int]) -> torch.Tensor:
        """``[len(seq_ids), max_blocks]`` int32 on the cache's device; as wide as the longest of
        these sequences (the op keys its tuned config on that width), padded with block 0."""
        rows = [self._get(s).blocks for s in seq_ids]
        width = max([len(r) for r in rows] + [1])
        table = torch.zeros((len(rows), width), dtype=torch.int32)
        for i, r in enumerate(rows):
            table[i, : len(r)] = torch.tensor(r, dtype=torch.int32)
        return table.to(self.device)

    def seq_lens(self, seq_ids: Iterable[int]) -> torch.Tensor:
        return torch.tensor([self._get(s).length for s in seq_ids], dtype=torch.int32, device=self.device)

    def gather(self, seq_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens of ``seq_id`` as contiguous ``[length, Hkv, D]`` K and V (for checking)."""
        seq = self._get(seq_id)
        blocks = torch.tensor(seq.blocks, dtype=torch.long, device=self.device)
        k = self.k[blocks].reshape(-1, *self.k.shape[2:])[: seq.length]
        v = self.v[blocks].reshape(-1, *self.v.shape[2:])[: seq.length]
        return k, v

    def attention(self, q: torch.Tensor, seq_ids: Sequence[int], *, scale: float | None = None) -> torch.Tensor:
        """Decode attention of ``q`` ``[len(seq_ids), Hq, D]`` over these sequences' cached tokens."""
        from tritune._paged_op import paged_attention

        ids = list(seq_ids)
        return paged_attention(q, self.k, self.v, self.block_table(ids), self.seq_lens(ids), scale=scale)

    def _get(self, seq_id: int) -> _Sequence:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise KeyError(f"seq_id={seq_id} is not in the cache (known: {sorted(self._seqs)[:20]})") from None


__all__ = ["OutOfBlocksError", "PagedKVCache"]
