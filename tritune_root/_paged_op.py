"""``tritune.paged_attention``: the decode op over a paged KV cache, with the tuned config.

The public function validates its arguments (errors name the argument), asks the runtime for the
config of this shape on this device, and calls the ``tritune::paged_attention`` torch operator,
which launches the Triton template. The operator has a fake implementation, so it traces under
``torch.compile`` and passes ``torch.library.opcheck``.

Checks that read tensor *values* (sequence lengths, page ids) cost a device synchronization on a
GPU, so they run by default only on CPU tensors (tests, the interpreter) and can be switched with
``set_validation(True/False)`` or ``TRITUNE_VALIDATE=1/0``. Shape and dtype checks always run.
"""

from __future__ import annotations

import os

import torch
from tritune.search_space import PagedAttentionConfig, PagedAttentionSpec, interpreting

_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16"}
_VALIDATE: bool | None = None  # None: by device (on for CPU tensors), or TRITUNE_VALIDATE
MAX_HEAD_DIM = PagedAttentionSpec.MAX_HEAD_DIM


def set_validation(enabled: bool | None) -> None:
    """Force value checks on (True) or off (False); None restores the default (CPU only)."""
    global _VALIDATE
    _VALIDATE = enabled


def _value_checks_on(device: torch.device) -> bool:
    if _VALIDATE is not None:
        return _VALIDATE
    env = os.environ.get("TRITUNE_VALIDATE")
    if env not in (None, ""):
        return env not in ("0", "false", "no", "off")
    return device.type == "cpu"


def refuse_grad(op: str, **tensors: torch.Tensor | None) -> None:
    """ValueError when grad mode is on and an input requires grad: the kernels have no backward,
    and an output that silently drops out of the autograd graph would train wrong weights."""
    if not torch.is_grad_enabled():
        return
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.requires_grad:
            raise ValueError(f"{name} requires grad: {op} is forward-only (no backward kernel); call it under "
                             "torch.no_grad()/torch.inference_mode() or pass detached tensors (train with "
                             "PyTorch's scaled_dot_product_attention)")


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                    seq_lens: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Decode attention for one new token per sequence over a paged KV cache.

    q ``[S, Hq, D]``; k_cache/v_cache ``[num_blocks, block_size, Hkv, D]``; block_table
    ``[S, max_blocks]`` int32 (page ids in token order); seq_lens ``[S]`` int32 (tokens in the
    cache, >= 1). ``Hq % Hkv == 0`` (query head ``h`` reads KV head ``h // (Hq/Hkv)``); fp16 or
    bf16; ``scale`` defaults to ``1/sqrt(D)``. Returns ``[S, Hq, D]`` in q's dtype.
    """
    check_arguments(q, k_cache, v_cache, block_table, seq_lens)
    refuse_grad("tritune.paged_attention", q=q, k_cache=k_cache, v_cache=v_cache)
    if scale is None:
        scale = 1.0 / float(q.shape[-1]) ** 0.5
    if (not _is_fake(seq_lens)) and _value_checks_on(q.device) and not torch.compiler.is_compiling():
        check_values(k_cache, block_table, seq_lens)
    return torch.ops.tritune.paged_attention(q, k_cache, v_cache, block_table, seq_lens, float(scale))


def check_arguments(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                    seq_lens: torch.Tensor) -> None:
    """Shape, dtype and device checks (no tensor values read); ValueError naming the argument."""
    if q.dim() != 3:
        raise ValueError(f"q must be [num_seqs, heads_q, head_dim], got shape {tuple(q.shape)}")
    if k_cache.dim() != 4:
        raise ValueError(f"k_cache must be [num_blocks, block_size, heads_kv, head_dim], got shape {tuple(k_cache.shape)}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache shape {tuple(v_cache.shape)} must equal k_cache shape {tuple(k_cache.shape)}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} has dtype {t.dtype}; supported: torch.float16, torch.bfloat16")
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"k_cache/v_cache dtype ({k_cache.dtype}/{v_cache.dtype}) must equal q's ({q.dtype})")
    for name, t in (("block_table", block_table), ("seq_lens", seq_lens)):
        if t.dtype != torch.int32:
            raise ValueError(f"{name} must be torch.int32, got {t.dtype} (use .to(torch.int32))")
    num_seqs, heads_q, head_dim = q.shape
    _, block_size, heads_kv, cache_dim = k_cache.shape
    if cache_dim != head_dim:
        raise ValueError(f"k_cache/v_cache head_dim {cache_dim} does not match q's head_dim {head_dim}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim={head_dim} is not supported; supported: 1..{MAX_HEAD_DIM}")
    if heads_kv < 1 or heads_q % heads_kv:
        raise ValueError(f"q has {heads_q} heads, not a multiple of the cache's {heads_kv} KV heads (k_cache dim 2)")
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"k_cache block_size (dim 1) = {block_size} must be a power of two")
    if block_table.dim() != 2 or block_table.shape[0] != num_seqs:
        raise ValueError(f"block_table must be [num_seqs={num_seqs}, max_blocks], got shape {tuple(block_table.shape)}")
    if seq_lens.dim() != 1 or seq_lens.shape[0] != num_seqs:
        raise ValueError(f"seq_lens must be [num_seqs={num_seqs}], got shape {tuple(seq_lens.shape)}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous along head_dim (stride(-1) is {t.stride(-1)})")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache), ("block_table", block_table), ("seq_lens", seq_lens)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, q on {q.device}; all arguments must share a device")
    if q.device.type not in ("cuda", "meta") and not interpreting():
        raise ValueError(f"q is on {q.device}; tritune.paged_attention runs on CUDA GPUs "
                         "(or on CPU with TRITON_INTERPRET=1 set before tritune is imported)")


def check_values(k_cache: torch.Tensor, block_table: torch.Tensor, seq_lens: torch.Tensor) -> None:
    """Checks that read values: lengths in 1..capacity, the used page ids inside the cache."""
    num_blocks, block_size = k_cache.shape[0], k_cache.shape[1]
    capacity = block_table.shape[1] * block_size
    if seq_lens.numel() == 0:
        return
    lens = seq_lens.long()
    low = int(lens.min())
    if low < 1:
        at = int((lens < 1).nonzero()[0, 0])
        raise ValueError(f"seq_lens[{at}] = {int(lens[at])}: every sequence needs at least one cached token")
    high = int(lens.max())
    if high > capacity:
        at = int((lens > capacity).nonzero()[0, 0])
        raise ValueError(f"seq_lens[{at}] = {int(lens[at])} is beyond the block table's capacity "
                         f"({block_table.shape[1]} blocks x {block_size} tokens = {capacity})")
    used = torch.arange(block_table.shape[1], device=block_table.device)[None, :] < (-(-lens // block_size))[:, None]
    bad = used & ((block_table < 0) | (block_table >= num_blocks))
    if bool(bad.any()):
        s, c = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"block_table[{s}, {c}] = {int(block_table[s, c])} is not a block of the cache "
                         f"(valid ids: 0..{num_blocks - 1})")


def spec_of(q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor) -> PagedAttentionSpec:
    """The runtime key of a call. The context is the block table's capacity (known without a
    device sync, stable under CUDA graphs); keep block tables as wide as the longest sequence."""
    num_seqs, heads_q, head_dim = q.shape
    _, block_size, heads_kv, _ = k_cache.shape
    return PagedAttentionSpec(num_seqs=max(1, num_seqs), heads_q=heads_q, heads_kv=heads_kv, head_dim=head_dim,
                              context_len=max(1, block_table.shape[1] * block_size), block_size=block_size,
                              dtype=_DTYPES[q.dtype])


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor) or t.device.type == "meta"


@torch.library.custom_op("tritune::paged_attention", mutates_args=())
def _paged_attention_op(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                        seq_lens: torch.Tensor, scale: float) -> torch.Tensor:
    # Imported here: defining the kernels pins TRITON_INTERPRET, which callers set before first use.
    from tritune.kernels.paged_attention import paged_decode

    if q.stride(-1) != 1:
        q = q.contiguous()
    return paged_decode(q, k_cache, v_cache, block_table, seq_lens, tuned_config(q, k_cache, block_table), scale=scale)


def tuned_config(q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor) -> PagedAttentionConfig:
    """The runtime's config for this call; a warm call is one dict lookup on the raw sizes."""
    from tritune import runtime

    key = ("paged_attention", q.shape[0], q.shape[1], q.shape[2], k_cache.shape[1], k_cache.shape[2],
           block_table.shape[1], q.dtype)
    return runtime.dispatcher(q.device).lookup_by(key, lambda: spec_of(q, k_cache, block_table)).config


@_paged_attention_op.register_fake
def _paged_attention_fake(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                          seq_lens: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(q)


__all__ = ["check_arguments", "check_values", "paged_attention", "set_validation", "spec_of", "tuned_config"]
