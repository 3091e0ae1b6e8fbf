"""PagedKVCache: random append/fork/free sequences against a dict model, and decode over the cache.

The stateful test writes tokens whose K/V values encode a unique token id, so any lost, reordered
or mixed-up token (a copy-on-write bug, a freed block still in use, a block handed out twice)
shows up as a mismatch with the model.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from tritune.kernels import compare
from tritune.kv_cache import OutOfBlocksError, PagedKVCache

HEAD_DIM = 2


def token_kv(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """K = (id, -id), V = (id + 0.5, 2 id) for each token id, shape [T, 1, 2]."""
    t = torch.tensor(ids, dtype=torch.float32)
    return torch.stack([t, -t], -1)[:, None], torch.stack([t + 0.5, 2 * t], -1)[:, None]


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.block_size = 4
        self.cache = PagedKVCache(num_blocks=12, block_size=self.block_size, num_kv_heads=1, head_dim=HEAD_DIM,
                                  dtype=torch.float32)
        self.model: dict[int, list[int]] = {}
        self.next_token = 1

    def _fresh(self, n: int) -> list[int]:
        ids = list(range(self.next_token, self.next_token + n))
        self.next_token += n
        return ids

    @rule()
    def add(self) -> None:
        seq = self.cache.add_sequence()
        assert seq not in self.model
        self.model[seq] = []

    @precondition(lambda self: self.model)
    @rule(data=st.data(), n=st.integers(1, 6))
    def append(self, data, n: int) -> None:
        live = sorted(self.model)
        seqs = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=len(live), unique=True))
        tokens = {s: self._fresh(n) for s in seqs}
        k = torch.stack([token_kv(tokens[s])[0] for s in seqs])
        v = torch.stack([token_kv(tokens[s])[1] for s in seqs])
        # Upper bound of the blocks needed: growth plus one copy-on-write per sequence.
        bound = sum(math.ceil((len(self.model[s]) + n) / self.block_size)
                    - math.ceil(len(self.model[s]) / self.block_size) + 1 for s in seqs)
        free_before = self.cache.num_free_blocks
        try:
            if n == 1:  # the decode shape, [B, Hkv, D]
                self.cache.append(seqs, k[:, 0], v[:, 0])
            else:
                self.cache.append(seqs, k, v)
        except OutOfBlocksError as exc:
            assert free_before < bound, f"refused with {free_before} free blocks for at most {bound}: {exc}"
            assert self.cache.num_free_blocks == free_before  # nothing changed
            return
        for s in seqs:
            self.model[s].extend(tokens[s])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def fork(self, data) -> None:
        src = data.draw(st.sampled_from(sorted(self.model)))
        dst = self.cache.fork(src)
        self.model[dst] = list(self.model[src])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free(self, data) -> None:
        seq = data.draw(st.sampled_from(sorted(self.model)))
        self.cache.free(seq)
        del self.model[seq]

    @invariant()
    def tokens_match_the_model(self) -> None:
        assert sorted(self.cache.sequences()) == sorted(self.model)
        for seq, ids in self.model.items():
            assert self.cache.seq_len(seq) == len(ids)
            k, v = self.cache.gather(seq)
            ek, ev = token_kv(ids)
            assert torch.equal(k, ek), f"sequence {seq}: K tokens {k[:, 0, 0].tolist()} != {ids}"
            assert torch.equal(v, ev)

    @invariant()
    def blocks_are_accounted_for(self) -> None:
        refs: dict[int, int] = {}
        for seq, ids in self.model.items():
            blocks = self.cache.blocks(seq)
            assert len(blocks) == math.ceil(len(ids) / self.block_size)
            for b in blocks:
                refs[b] = refs.get(b, 0) + 1
        for b in range(self.cache.num_blocks):
            assert self.cache.ref_count(b) == refs.get(b, 0)
        assert self.cache.num_free_blocks == self.cache.num_blocks - len(refs)


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


def test_copy_on_write_only_on_divergent_write():
    cache = PagedKVCache(num_blocks=8, block_size=4, num_kv_heads=1, head_dim=HEAD_DIM, dtype=torch.float32)
    a = cache.add_sequence()
    cache.extend(a, *token_kv([1, 2, 3, 4, 5, 6]))  # one full block, one half block
    b = cache.fork(a)
    assert cache.blocks(a) == cache.blocks(b) and cache.num_free_blocks == 6
    cache.append([b], *(t[:, 0][None] for t in token_kv([7])))  # b diverges: copies the half block
    assert cache.blocks(a)[0] == cache.blocks(b)[0]  # the full block stays shared
    assert cache.blocks(a)[1] != cache.blocks(b)[1]
    assert cache.ref_count(cache.blocks(a)[0]) == 2 and cache.ref_count(cache.blocks(a)[1]) == 1
    cache.append([a], *(t[:, 0][None] for t in token_kv([8])))  # a is now sole owner: in place
    assert cache.num_free_blocks == 5
    assert cache.gather(a)[0][:, 0, 0].tolist() == [1, 2, 3, 4, 5, 6, 8]
    assert cache.gather(b)[0][:, 0, 0].tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_out_of_blocks_is_a_clear_error_and_changes_nothing():
    cache = PagedKVCache(num_blocks=2, block_size=4, num_kv_heads=1, head_dim=HEAD_DIM, dtype=torch.float32)
    a, b = cache.add_sequence(), cache.add_sequence()
    cache.extend(a, *token_kv([1, 2, 3, 4, 5]))
    with pytest.raises(OutOfBlocksError, match="out of blocks.*needs 1 new block.*0 of 2 are free"):
        cache.extend(b, *token_kv([9]))
    assert cache.seq_len(b) == 0 and cache.seq_len(a) == 5
    cache.free(a)
    cache.extend(b, *token_kv([9]))
    assert cache.num_free_blocks == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="block_size"):
        PagedKVCache(num_blocks=4, block_size=6, num_kv_heads=1, head_dim=2)
    cache = PagedKVCache(num_blocks=4, block_size=4, num_kv_heads=1, head_dim=2, dtype=torch.float32)
    a = cache.add_sequence()
    with pytest.raises(ValueError, match="repeats"):
        cache.append([a, a], torch.zeros(2, 1, 2), torch.zeros(2, 1, 2))
    with pytest.raises(ValueError, match="k must be"):
        cache.append([a], torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(KeyError, match="seq_id=7"):
        cache.free(7)
    with pytest.raises(ValueError, match="already exists"):
        cache.add_sequence(a)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decode_over_the_cache_equals_contiguous_attention(dtype):
    """Prompts, a shared prefix (fork), divergent decode steps, a freed sequence; then one
    decode step through tritune.paged_attention == attention over each sequence's own tokens."""
    gen = torch.Generator().manual_seed(0)
    hq, hkv, d, bs = 4, 2, 16, 8

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    cache = PagedKVCache(num_blocks=40, block_size=bs, num_kv_heads=hkv, head_dim=d, dtype=dtype)
    history: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    a = cache.add_sequence()
    k, v = rand(13, hkv, d), rand(13, hkv, d)
    cache.extend(a, k, v)
    history[a] = ([k], [v])
    b = cache.fork(a)
    history[b] = (list(history[a][0]), list(history[a][1]))
    c = cache.add_sequence()
    k, v = rand(1, hkv, d), rand(1, hkv, d)
    cache.extend(c, k, v)
    history[c] = ([k], [v])
    doomed = cache.add_sequence()
    cache.extend(doomed, rand(20, hkv, d), rand(20, hkv, d))
    for _ in range(5):  # decode steps: every live sequence gets its own new token
        ids = [a, b, c]
        k, v = rand(3, hkv, d), rand(3, hkv, d)
        cache.append(ids, k, v)
        for i, s in enumerate(ids):
            history[s][0].append(k[i:i + 1])
            history[s][1].append(v[i:i + 1])
    cache.free(doomed)
    cache.extend(cache.add_sequence(), rand(9, hkv, d), rand(9, hkv, d))  # reuses freed blocks

    ids = [c, b, a]
    q = rand(3, hq, d)
    out = cache.attention(q, ids)

    def contiguous(precision):
        rows = []
        for i, s in enumerate(ids):
            k = torch.cat(history[s][0]).to(precision).repeat_interleave(hq // hkv, dim=1)
            v = torch.cat(history[s][1]).to(precision).repeat_interleave(hq // hkv, dim=1)
            scores = torch.einsum("hd,nhd->hn", q[i].to(precision), k) / math.sqrt(d)
            p = torch.softmax(scores.float(), -1).to(precision)
            rows.append(torch.einsum("hn,nhd->hd", p, v))
        return torch.stack(rows)

    result = compare(out, contiguous(torch.float32), contiguous(dtype))
    assert result.ok, result.message
    assert cache.seq_len(a) == cache.seq_len(b) == 18 and cache.seq_len(c) == 6
