"""The KV-cache write of the vLLM backend: new K/V rows into their cache slots through ``slot_mapping``.

vLLM hands each layer one cache tensor (logical ``[num_blocks, Hkv, block_size, 2*D]``, any
physical order) and a ``slot_mapping`` ``[num_tokens]`` int64: token t goes to page
``slot // block_size``, row ``slot % block_size``; a negative slot (padding tokens of a CUDA
graph batch) is skipped. One Triton program per (token, KV head) moves one head row, so the
write reads no tensor value on the host (no device sync) and runs on strided views as they
are. The cache has the rows' dtype: FP8 caches are refused by the backend (see backend.py).

No vLLM import here: the kernel is plain Triton (it runs under ``TRITON_INTERPRET=1`` too).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_kv_kernel(key, value, k_cache, v_cache, slots,
                     key_t, key_h, value_t, value_h,
                     kc_block, kc_row, kc_head, vc_block, vc_row, vc_head,
                     block_size, head_dim, D_PAD: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    slot = tl.load(slots + t).to(tl.int64)
    # A negative slot writes nothing: no lane is below a width of 0. Its addresses are clamped
    # to slot 0 so that they stay inside the cache.
    width = head_dim * (slot >= 0).to(tl.int32)
    slot = tl.maximum(slot, 0)
    page = slot // block_size
    row = slot % block_size
    d = tl.arange(0, D_PAD)
    mask = d < width
    k = tl.load(key + t * key_t + h * key_h + d, mask=mask)
    v = tl.load(value + t * value_t + h * value_h + d, mask=mask)
    tl.store(k_cache + page * kc_block + row * kc_row + h * kc_head + d, k, mask=mask)
    tl.store(v_cache + page * vc_block + row * vc_row + h * vc_head + d, v, mask=mask)


def write_kv_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor) -> None:
    """Store ``key``/``value`` ``[num_tokens, Hkv, D]`` into the pages of ``k_cache``/``v_cache``.

    ``k_cache``/``v_cache``: ``[num_blocks, block_size, Hkv, D]`` views with any strides
    (stride(-1) 1), in the rows' dtype. ``slot_mapping``: ``[n]`` integer slots,
    ``n <= num_tokens``; rows past ``n`` and rows with a negative slot are not written.
    """
    num_blocks, block_size, heads_kv, head_dim = k_cache.shape
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache.shape={tuple(v_cache.shape)} must equal k_cache.shape={tuple(k_cache.shape)}")
    for name, t in (("key", key), ("value", value)):
        if t.dim() != 3 or tuple(t.shape[1:]) != (heads_kv, head_dim):
            raise ValueError(f"{name} must be [num_tokens, {heads_kv}, {head_dim}], got {tuple(t.shape)}")
    for name, t in (("key", key), ("value", value), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous along head_dim (stride(-1) is {t.stride(-1)})")
        if t.dtype != key.dtype:
            raise ValueError(f"{name}.dtype={t.dtype} must equal key.dtype={key.dtype}")
    n = slot_mapping.shape[0] if slot_mapping.dim() == 1 else -1
    if n < 0 or n > key.shape[0] or n > value.shape[0]:
        raise ValueError(f"slot_mapping must be 1-D with at most num_tokens={key.shape[0]} entries, got "
                         f"{tuple(slot_mapping.shape)}")
    if n == 0:
        return
    _write_kv_kernel[(n, heads_kv)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_size, head_dim, D_PAD=triton.next_power_of_2(head_dim),
    )
