"""Use the tuned FlashAttention kernel in transformers models: ``attn_implementation="tritune"``.

Call ``tritune.register_transformers()`` once (nothing is registered at import), then load or
build a model with ``attn_implementation="tritune"``. Two functions are registered under that
name:

- a mask function (``AttentionMaskInterface``) that turns the 2-D padding mask into what the
  kernel understands: nothing at all for an unpadded causal or bidirectional batch, else one
  int32 row per sequence ``(lo, hi, shift)``: keys ``lo <= j < hi`` are visible and query i sees
  keys ``j <= i + shift``. That covers left padding, right padding and the empty slots of a
  static cache. Patterns it cannot express (sliding windows, packed sequences, custom 4-D masks)
  get sdpa's boolean 4-D mask;
- an attention function (``AttentionInterface``) that runs the Triton kernel for the first two
  cases and PyTorch SDPA for a 4-D mask, so every model still runs correctly.
"""

from __future__ import annotations

from typing import Any

import torch
from tritune._flash_op import flash_attention

NAME = "tritune"
# Bidirectional attention is causal attention with a shift no row ever reaches.
NO_CAUSAL_LIMIT = 1 << 30

_REGISTERED = False


def register_transformers(name: str = NAME) -> str:
    """Register the ``tritune`` attention and mask functions with transformers (idempotent).

    Returns the name to pass as ``attn_implementation``. Names containing "flash" or "/" are
    refused: transformers gives those a meaning of its own.
    """
    global _REGISTERED
    if "flash" in name or "/" in name:
        raise ValueError(f"name={name!r}: transformers treats names with 'flash' or '/' specially; pick another")
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, tritune_attention_forward)
    AttentionMaskInterface.register(name, tritune_mask)
    _REGISTERED = True
    return name


def tritune_mask(batch_size: int, q_length: int, kv_length: int, q_offset: Any = 0, kv_offset: int = 0,
                 mask_function: Any = None, attention_mask: torch.Tensor | None = None,
                 local_size: int | None = None, **kwargs: Any) -> torch.Tensor | None:
    """The mask function of ``attn_implementation="tritune"`` (transformers' mask contract).

    Returns None (no padding; the attention function uses the module's causal flag), an int32
    ``[batch, 3]`` window tensor, or sdpa's boolean ``[batch, 1, q, kv]`` mask as a fallback.
    """
    from transformers.masking_utils import (
        bidirectional_mask_function,
        causal_mask_function,
        prepare_padding_mask,
        sdpa_mask,
    )
    from transformers.utils.import_utils import is_tracing

    if mask_function is None:
        mask_function = causal_mask_function
    causal = mask_function is causal_mask_function
    simple = (causal or mask_function is bidirectional_mask_function) and local_size is None
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    traced = (padding is not None and is_tracing(padding)) or (isinstance(q_offset, torch.Tensor) and is_tracing(q_offset))
    if simple and not traced:
        window = _window(padding, batch_size, q_length, kv_length, q_offset, kv_offset, causal,
                         kwargs.get("device"))
        if window is not False:
            return window
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                     local_size=local_size, **kwargs)


def _window(padding: torch.Tensor | None, batch_size: int, q_length: int, kv_length: int, q_offset: Any,
            kv_offset: int, causal: bool, device: Any = None) -> torch.Tensor | None | bool:
    """The window form of the mask; None when no mask is needed, False when it has no window form."""
    shift = int(q_offset) - kv_offset if causal else NO_CAUSAL_LIMIT
    if padding is not None:
        keys = padding[:, kv_offset:kv_offset + kv_length].to(torch.int32)
        device = keys.device
    else:
        keys = None  # the window goes to the device transformers builds masks on
    plain_shift = kv_length - q_length if causal else NO_CAUSAL_LIMIT
    if keys is None or bool(keys.all()):
        # Unpadded causal: None (the module's causal flag) is exact when the diagonal is the
        # default one. Bidirectional always gets a window: None would mean "causal" to a
        # decoder module whose config asks for bidirectional attention.
        if causal and shift == plain_shift and (q_length == kv_length or q_length == 1):
            return None
        lo = torch.zeros(batch_size, dtype=torch.int32, device=device)
        hi = torch.full((batch_size,), kv_length, dtype=torch.int32, device=device)
    else:
        count = keys.sum(dim=1)
        positions = torch.arange(kv_length, device=device, dtype=torch.int32)
        lo = torch.where(keys.bool(), positions, kv_length).amin(dim=1)
        hi = torch.where(keys.bool(), positions + 1, 0).amax(dim=1)
        empty = count == 0
        lo = torch.where(empty, 0, lo)
        hi = torch.where(empty, 0, hi)
        if bool((count != hi - lo).any()):
            return False  # holes in the padding mask: not a window
        lo, hi = lo.to(torch.int32), hi.to(torch.int32)
    shift_col = torch.full_like(lo, shift)
    return torch.stack([lo, hi, shift_col], dim=1).contiguous()


def _is_window(mask: Any) -> bool:
    return isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.dtype == torch.int32 and mask.shape[1] == 3


UNSUPPORTED_KWARGS = ("softcap", "s_aux", "position_bias")


def tritune_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, dropout: float = 0.0,
                              scaling: float | None = None, is_causal: bool | None = None,
                              **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention contract: q ``[B, Hq, q, D]``, k/v ``[B, Hkv, kv, D]`` -> ``[B, q, Hq, D]``."""
    window = _is_window(attention_mask)
    unsupported = (dropout and module.training) or any(kwargs.get(k) is not None for k in UNSUPPORTED_KWARGS)
    if unsupported or (attention_mask is not None and not window):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    q_length = query.shape[2]
    if window:
        out = flash_attention(query, key, value, causal=True, scale=scaling, kv_window=attention_mask)
    else:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal = bool(causal) and q_length > 1
        if causal and key.shape[2] > q_length:
            # No mask with more keys than queries only comes from a static cache's first
            # prefill, whose extra slots are empty: the same crop as sdpa's integration.
            key, value = key[:, :, :q_length], value[:, :, :q_length]
        out = flash_attention(query, key, value, causal=causal, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


__all__ = ["NAME", "register_transformers", "tritune_attention_forward", "tritune_mask"]
