"""Use the tuned kernels in transformers models: ``attn_implementation="tritune"``.

Call ``tritune.register_transformers()`` once (nothing is registered at import), then load or
build a model with ``attn_implementation="tritune"``. Two functions are registered under that
name:

- a mask function (``AttentionMaskInterface``) that turns transformers' mask pattern + 2-D
  padding mask into what the kernels understand: nothing at all for an unpadded causal batch,
  else one int32 row per sequence ``(lo, hi, shift)``, shaped ``[B, 1, 1, 3]``: keys
  ``lo <= j < hi`` are visible and query i sits at position ``i + shift`` (it sees keys
  ``j <= i + shift``). Sliding-window layers (Mistral, Qwen2, Gemma 2/3, gpt-oss) get a fourth
  column, ``left``: query i also needs ``j >= i + shift - left``. Bidirectional sliding-window
  layers (ModernBERT's local attention, ``|i - j| <= w``) get a fifth, ``right``: query i sees
  ``j <= i + shift + right`` instead of ``j <= i + shift``. Chunked layers (Llama 4) get causal
  rows whose ``lo`` is the first key of the sequence's current chunk when every real query of
  the step is in one chunk (decode, and any prompt shorter than the chunk), else seven columns
  ``(lo, hi, shift, -1, 0, chunk, phase)`` served one launch per sequence and chunk. That
  covers left padding, right padding, the empty slots of a static cache and sliding-window
  caches. Packed rows (several sequences in one row, the position ids restarting at each: no
  padding mask, no cache, as ``DataCollatorWithFlattening`` packs them) get each token's
  sequence id, int32 ``[B, 1, S, 1]`` (a second column: the sliding window's left edge), and
  run as one varlen launch over all the sequences. Patterns with no such form (holes in the
  padding mask, custom masks) get sdpa's boolean 4-D mask, and the log says so once. Models that read
  the mask themselves (their modeling module never dispatches through the AttentionInterface,
  e.g. RoFormer, BigBird, MPNet; or they edit it: ``MASK_EDITING_MODELS``) get eager's
  additive mask, since rows or no mask would be added to their scores. Under
  torch.compile the rows are built without a host sync, and holes in the padding mask fail a
  device-side assert instead;
- an attention function (``AttentionInterface``): plain layers run ``tritune.flash_attention``;
  sliding-window, soft-capped (``softcap``, Gemma 2) and sink (``s_aux``, gpt-oss) layers run
  ``tritune.varlen_attention`` over transformers' K/V as a strided ``[B, S_k, Hkv, D]`` view (no
  copy), the window rows as its ``kv_bounds``. A value head dim narrower than q/k's (latent
  attention: DeepSeek V2/V3) is zero-padded for the launch and sliced off after. T5's
  ``position_bias`` is the flash kernel's additive ``bias``. A 4-D mask, dropout in training,
  a position bias on a varlen layer or float32 inputs on those layers run in PyTorch instead
  (SDPA, or the eager math when softcap or sinks are on), logged once with the reason; so do
  inputs that require grad (training, or a forward outside ``torch.no_grad()``): the kernels
  have no backward pass.

Continuous batching (``model.generate_batch``) cannot use this implementation; see
``CONTINUOUS_BATCHING`` below for why.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from tritune._flash_op import flash_attention, pad_head_dims
from tritune._varlen_op import varlen_attention
from tritune.integrations._class_tables import register_class_tables
from tritune.integrations._mask_readers import MASK_EDITING_MODELS, mask_reader_reason, skips_mask

NAME = "tritune"
# Bidirectional attention is causal attention with a shift no row ever reaches.
NO_CAUSAL_LIMIT = 1 << 30

log = logging.getLogger("tritune.integrations.transformers")

CONTINUOUS_BATCHING = (
    "transformers 5.24's continuous batching (generate_batch) refuses attn_implementation='tritune': "
    "ContinuousBatchingManager.switch_to_cb_friendly_attn accepts only 'paged|eager', 'sdpa' or a name containing "
    "'flash'. A flash-named custom implementation is resolved by modeling_flash_attention_utils._lazy_imports: "
    "flash_attention_2/3/4 import the flash_attn packages, any other name must be a hub kernel 'org/repo' that "
    "integrations.hub_kernels.load_and_register_attn_kernel loads with the `kernels` package (get_kernel), which "
    "transformers accepts only in versions [0.18.2, 0.19.0); it is not installed here, the registry list has 0.17.2, "
    "and installing it into this repository's venv would be shadowed by the repository's own top-level kernels/ "
    "folder when Python runs from the repository root. The module's API is not the blocker: served as that hub "
    "module (tests/test_transformers_continuous_batching.py stands in for get_kernel), tritune.flash_attn runs "
    "generate_batch's attention through the varlen kernel and matches eager's greedy tokens. On a GPU the decode "
    "fast path would also call tritune.flash_attn.flash_attn_with_kvcache with block_table and cache_seqlens; "
    "transformers takes it only when torch.cuda.is_available() and the name matches 'flash...2' or 'flash...3'."
)

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
    register_class_tables(name, tritune_attention_forward)  # Falcon, GPT-Neo, ...: see _class_tables
    _REGISTERED = True
    return name


@functools.cache
def _fallback_once(reason: str) -> None:
    """Say once per reason that a case runs in PyTorch instead of the tuned kernel."""
    log.warning("attn_implementation=%r: %s; this case runs in PyTorch, not the tuned kernel", NAME, reason)


# --- mask function ---------------------------------------------------------------------------

def tritune_mask(batch_size: int, q_length: int, kv_length: int, q_offset: Any = 0, kv_offset: int = 0,
                 mask_function: Any = None, attention_mask: torch.Tensor | None = None,
                 local_size: int | None = None, **kwargs: Any) -> torch.Tensor | None:
    """The mask function of ``attn_implementation="tritune"`` (transformers' mask contract).

    Returns None (no padding; the attention function uses the module's causal flag), the window
    rows as an int32 ``[batch, 1, 1, 3]`` (full attention), ``[batch, 1, 1, 4]`` (sliding
    window) or ``[batch, 1, 1, 5]`` (bidirectional sliding window) tensor, or sdpa's boolean
    ``[batch, 1, q, kv]`` mask as a fallback.
    """
    from transformers.masking_utils import causal_mask_function, prepare_padding_mask, sdpa_mask
    from transformers.utils.import_utils import is_tracing

    if mask_function is None:
        mask_function = causal_mask_function
    kind, left = mask_pattern(mask_function, local_size)
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    config = kwargs.get("config")
    own = mask_reader_reason(config)
    if own is not None:
        # eager's additive float mask: what these models' own reads and edits expect
        from transformers.masking_utils import eager_mask

        _fallback_once(f"the mask function hands eager's 4-D mask to {own}")
        return eager_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                          kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask, **kwargs)
    traced_offset = isinstance(q_offset, torch.Tensor) and is_tracing(q_offset)
    traced = traced_offset or (padding is not None and is_tracing(padding))
    if kind is None:
        reason = "a mask pattern with no window form (custom masks, packed chunked layers)"
    elif kind in ("packed", "packed_sliding"):
        ids = _packed_parts(mask_function)[1]
        # Under torch.compile transformers hands packed ids for every batch without a padding mask
        # (it cannot test for packing while tracing); their boundaries would be read on the host.
        if (not traced and not is_tracing(ids) and padding is None and q_length == kv_length == ids.shape[1]
                and ids.shape[0] == batch_size):
            rows = ids.to(device=kwargs.get("device"), dtype=torch.int32).view(batch_size, 1, q_length, 1)
            return rows if left is None else torch.cat([rows, torch.full_like(rows, left)], dim=3)
        reason = "packed sequences under torch.compile (their boundaries are read on the host)"
    elif traced_offset or (traced and kind == "chunked"):
        reason = "a traced mask (torch.compile / torch.export) with a traced query offset or chunks"
    elif kind in ("blockwise", "blockwise_sliding"):
        rows = _block_rows(mask_function, kind, left, padding, batch_size, q_length, kv_length, q_offset, kv_offset,
                           kwargs.get("device"))
        if rows is not None:
            return rows
        reason = "image-token blocks on a step with cached keys, or a padding mask with holes"
    elif kind == "chunked":
        window = _window(padding, batch_size, q_length, kv_length, q_offset, kv_offset, True, kwargs.get("device"),
                         allow_none=False)
        if window is not False:
            window = _chunk_rows(window, _closure_value(_and_parts(mask_function)[0], "left_padding"), left,
                                 q_offset, q_length, kv_offset)
            return window.view(batch_size, 1, 1, window.shape[1])
        reason = "a padding mask with holes (not one run of keys per sequence)"
    else:
        window = _window(padding, batch_size, q_length, kv_length, q_offset, kv_offset, kind != "bidirectional",
                         kwargs.get("device"), allow_none=kind == "causal" and skips_mask(config), traced=traced)
        if window is None:
            return None
        if window is not False:
            if kind in ("sliding", "sliding_bidirectional"):
                edges = [left] if kind == "sliding" else [left, left]
                window = torch.cat([window, window.new_tensor(edges).expand(batch_size, len(edges))], dim=1)
            # 4-D, so that transformers passes it through as a prepared mask: generate() with a
            # static cache builds the masks ahead and hands them back as the model's attention_mask,
            # and a 2-D tensor there would be read as a padding mask.
            return window.view(batch_size, 1, 1, window.shape[1])
        reason = "a padding mask with holes (not one run of keys per sequence)"
    _fallback_once(f"the mask function hands SDPA's 4-D mask for {reason}")
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                     local_size=local_size, **kwargs)


def mask_pattern(mask_function: Any, local_size: int | None) -> tuple[str | None, int | None]:
    """("causal" | "bidirectional" | "sliding" | "sliding_bidirectional" | "chunked" | None, window
    left or chunk size) of transformers' mask function.

    The sliding pattern is ``and_masks(sliding_window_overlay(w), causal_mask_function)`` (key
    visible iff ``q - w < kv <= q``), which is flash-attn's window ``(w - 1, 0)``; the
    bidirectional one (ModernBERT) ``and_masks(sliding_window_bidirectional_overlay(w),
    bidirectional_mask_function)`` (``|q - kv| <= w``), flash-attn's ``(w, w)``; the chunked one
    (Llama 4) ``and_masks(chunked_overlay(c, left_padding), causal_mask_function)``: causal within
    chunks of c positions counted from each sequence's first token. They are built per call, so
    they are recognized by their structure, then confirmed on a small grid of indices.
    """
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function

    packed = _packed_parts(mask_function)
    if packed is not None:
        kind, left = mask_pattern(packed[0], local_size)
        return {"causal": ("packed", None), "sliding": ("packed_sliding", left)}.get(kind, (None, None))
    if _block_ids(mask_function) is not None:
        return "blockwise", None
    first, second = _and_parts(mask_function) or (None, None)
    window = _overlay_int(second, "sliding_window_overlay", "sliding_window") if _block_ids(first) is not None else None
    if window is not None and window >= 1:
        return "blockwise_sliding", window - 1
    if local_size is None:
        if mask_function is None or mask_function is causal_mask_function:
            return "causal", None
        if mask_function is bidirectional_mask_function:
            return "bidirectional", None
        return None, None
    if second is causal_mask_function and (chunk := _overlay_int(first, "chunked_overlay", "chunk_size")) is not None:
        left_padding = _closure_value(first, "left_padding")
        if chunk != local_size or chunk < 1 or not isinstance(left_padding, torch.Tensor) or left_padding.dim() != 1:
            return None, None
        n = torch.arange(3 * chunk + 2)
        lp = int(left_padding[0])
        expected = ((n[None, :] - lp) // chunk == (n[:, None] - lp) // chunk) & (n[None, :] <= n[:, None])
        return ("chunked", chunk) if _matches(mask_function, n, expected) else (None, None)
    if second is causal_mask_function:
        window = _overlay_int(first, "sliding_window_overlay", "sliding_window")
        if window is None or window != local_size or window < 1:
            return None, None
        return ("sliding", window - 1) if _confirmed(mask_function, window, window - 1, 0) else (None, None)
    if second is bidirectional_mask_function:
        window = _overlay_int(first, "sliding_window_bidirectional_overlay", "sliding_window")
        if window is None or window != local_size or window < 0:
            return None, None
        return ("sliding_bidirectional", window) if _confirmed(mask_function, window, window, window) else (None, None)
    return None, None


def _confirmed(mask_function: Any, window: int, left: int, right: int) -> bool:
    """Whether ``mask_function`` is ``q - left <= kv <= q + right`` on indices around the window's edges."""
    # Indices around both edges of the window (a full grid would be O(window^2) per forward).
    n = torch.tensor(sorted({max(0, x) for x in (0, 1, window - 2, window - 1, window, window + 1,
                                                2 * window - 1, 2 * window, 2 * window + 1)}))
    q_idx, kv_idx = n[:, None], n[None, :]
    return _matches(mask_function, n, (kv_idx <= q_idx + right) & (kv_idx >= q_idx - left))


def _matches(mask_function: Any, n: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether ``mask_function`` of batch 0 gives ``expected`` on the grid of indices ``n`` x ``n``."""
    try:
        got = mask_function(torch.tensor(0), torch.tensor(0), n[:, None], n[None, :])
    except Exception:  # noqa: BLE001 - anything unexpected: not the pattern we know
        return False
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and bool((got == expected).all())


def _block_rows(mask_function: Any, kind: str, left: int | None, padding: torch.Tensor | None, batch_size: int,
                q_length: int, kv_length: int, q_offset: Any, kv_offset: int, device: Any) -> torch.Tensor | None:
    """Image-token rows: int64 ``[B, 1, 1, 4 + 2K]`` = ``(lo, hi, shift, left, s1, e1, ..., -1...)``,
    the padding window, the sliding window's left edge (-1: none) and each sequence's image blocks
    ``[s, e)``, which see keys ``j < e`` (causal otherwise). None where they do not apply: a step
    with cached keys (decode needs none: the blocks are all in the past) or holes in the padding."""
    if int(q_offset) != 0 or kv_offset != 0 or q_length != kv_length:
        return None
    window = _window(padding, batch_size, q_length, kv_length, q_offset, kv_offset, True, device, allow_none=False)
    if window is False:
        return None
    inner = _and_parts(mask_function)[0] if kind == "blockwise_sliding" else mask_function
    ids = _block_ids(inner)[:, :kv_length].tolist()
    blocks = []
    for row in ids:
        runs, start = [], None
        for j, g in enumerate([*row, -1]):
            if start is not None and g != row[start]:
                runs.append((start, j))
                start = None
            if start is None and g >= 0:
                start = j
        blocks.append([x for run in runs for x in run])
    width = max((len(b) for b in blocks), default=0)
    extra = [[-1 if left is None else left, *b, *([-1] * (width - len(b)))] for b in blocks]
    rows = torch.cat([window.to(torch.int64), torch.tensor(extra, dtype=torch.int64, device=window.device)], dim=1)
    return rows.view(batch_size, 1, 1, rows.shape[1])


def block_rows(mask: Any) -> torch.Tensor | None:
    """The ``[B, 4 + 2K]`` rows of an image-token mask (int64 ``[B, 1, 1, 4 + 2K]``), else None."""
    if (isinstance(mask, torch.Tensor) and mask.dtype == torch.int64 and mask.dim() == 4
            and mask.shape[1:3] == (1, 1) and mask.shape[3] >= 4 and mask.shape[3] % 2 == 0):
        return mask.view(mask.shape[0], mask.shape[3])
    return None


def expand_blocks(rows: torch.Tensor, q_length: int, kv_length: int) -> torch.Tensor:
    """The boolean ``[B, 1, q, kv]`` mask of image-token rows."""
    visible = expand_window(rows[:, :3].to(torch.int32), q_length, kv_length)[:, 0]
    i = torch.arange(q_length, device=rows.device)[None, :, None]
    j = torch.arange(kv_length, device=rows.device)[None, None, :]
    lo, hi = rows[:, 0, None, None], rows[:, 1, None, None]
    for c in range(4, rows.shape[1], 2):
        s, e = rows[:, c, None, None], rows[:, c + 1, None, None]
        visible |= (i >= s) & (i < e) & (j >= lo) & (j < torch.minimum(hi, e))
    left = rows[:, 3, None, None]
    visible &= (left < 0) | (j >= i + rows[:, 2, None, None] - left)
    return visible[:, None]


def _chunk_rows(window: torch.Tensor, left_padding: torch.Tensor, chunk: int, q_offset: Any, q_length: int,
                kv_offset: int) -> torch.Tensor:
    """Causal window rows narrowed to each sequence's chunk; when a sequence's real queries span
    chunks, the 7-column rows ``(lo, hi, shift, -1, 0, chunk, phase)`` instead (chunks start at
    key slots ``phase + m * chunk``), which the attention function serves one chunk at a time."""
    lp = left_padding.to(window.device, torch.int64)
    # Chunks count from each sequence's first real token; queries on left padding see nothing
    # that matters, so only the real ones must share a chunk.
    first_query, last_query = int(q_offset), int(q_offset) + q_length - 1
    first = (torch.clamp(lp, min=first_query) - lp).div(chunk, rounding_mode="floor")
    last = (last_query - lp).div(chunk, rounding_mode="floor")
    if not bool(((first == last) | (last_query < lp)).all()):
        phase = (lp - kv_offset).to(torch.int32)
        extra = torch.stack([torch.full_like(phase, -1), torch.zeros_like(phase), torch.full_like(phase, chunk),
                             phase], dim=1)
        return torch.cat([window, extra], dim=1)
    start = (lp + first * chunk - kv_offset).to(torch.int32)  # the chunk's first key, in cache slots
    window = window.clone()
    window[:, 0] = torch.minimum(torch.maximum(window[:, 0], start), window[:, 1])
    return window


def _closure_value(fn: Any, name: str) -> Any:
    code = getattr(fn, "__code__", None)
    if code is None or fn.__closure__ is None or name not in code.co_freevars:
        return None
    return fn.__closure__[code.co_freevars.index(name)].cell_contents


def _and_parts(mask_function: Any) -> tuple[Any, Any] | None:
    """The two functions of ``and_masks(first, second)``, None for any other function."""
    return _combined_parts(mask_function, "and_masks", "and_mask")


def _combined_parts(mask_function: Any, combinator: str, inner: str) -> tuple[Any, Any] | None:
    """The two functions ``<combinator>(first, second)`` closes over, None for any other function."""
    if getattr(mask_function, "__qualname__", "") != f"{combinator}.<locals>.{inner}":
        return None
    parts = _closure_value(mask_function, "mask_functions")
    return parts if isinstance(parts, tuple) and len(parts) == 2 else None


def _packed_parts(mask_function: Any) -> tuple[Any, torch.Tensor] | None:
    """(the per-sequence mask function, the ``[B, S]`` sequence ids) of a packed batch's mask:
    ``and_masks(remap_positions_for_packed_sequence(fn, position_ids),
    packed_sequence_mask_function(ids))``, which transformers builds when the position ids restart
    inside a row (several sequences packed in one row, no padding mask, no cache); else None."""
    parts = _and_parts(mask_function)
    if parts is None:
        return None
    remap, same_sequence = parts
    if (getattr(remap, "__qualname__", "") != "remap_positions_for_packed_sequence.<locals>.inner_mask"
            or getattr(same_sequence, "__qualname__", "") != "packed_sequence_mask_function.<locals>.inner_mask"):
        return None
    inner, ids = _closure_value(remap, "mask_function"), _closure_value(same_sequence, "packed_sequence_mask")
    return (inner, ids) if callable(inner) and isinstance(ids, torch.Tensor) and ids.dim() == 2 else None


def _overlay_int(fn: Any, overlay: str, name: str) -> int | None:
    """The int ``name`` that ``fn``, an ``<overlay>(...)`` mask, closes over; None otherwise."""
    if getattr(fn, "__qualname__", "") != f"{overlay}.<locals>.inner_mask":
        return None
    value = _closure_value(fn, name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _block_ids(mask_function: Any) -> torch.Tensor | None:
    """The ``block_sequence_ids`` of ``or_masks(causal_mask_function, blockwise_overlay(ids))``
    (image tokens that see their whole image: Gemma 3, PaliGemma), None for any other function."""
    from transformers.masking_utils import causal_mask_function

    parts = _combined_parts(mask_function, "or_masks", "or_mask")
    if parts is None or parts[0] is not causal_mask_function:
        return None
    if getattr(parts[1], "__qualname__", "") != "blockwise_overlay.<locals>.inner_mask":
        return None
    ids = _closure_value(parts[1], "block_sequence_ids")
    return ids if isinstance(ids, torch.Tensor) and ids.dim() == 2 else None


def _window(padding: torch.Tensor | None, batch_size: int, q_length: int, kv_length: int, q_offset: Any,
            kv_offset: int, causal: bool, device: Any = None, *, allow_none: bool = True, traced: bool = False
            ) -> torch.Tensor | None | bool:
    """The ``(lo, hi, shift)`` rows of the mask; None when no mask is needed (and allowed), False
    when the padding has no window form.

    ``traced`` (torch.compile / torch.export): the padding's values cannot be read on the host,
    so the rows are always built (no None) and a padding mask with holes, which no row can
    express, fails a device-side assert instead of returning False.
    """
    shift = int(q_offset) - kv_offset if causal else NO_CAUSAL_LIMIT
    if padding is not None:
        keys = padding[:, kv_offset:kv_offset + kv_length].to(torch.int32)
        device = keys.device
    else:
        keys = None  # the window goes to the device transformers builds masks on
    plain_shift = kv_length - q_length if causal else NO_CAUSAL_LIMIT
    if traced and keys is not None:
        lo, hi, holes = _key_runs(keys)
        torch._assert_async(~holes.any(), "attn_implementation='tritune' under torch.compile: a padding mask "
                            "with holes (not one run of keys per sequence); run it uncompiled or with sdpa")
    elif keys is None or bool(keys.all()):
        # Unpadded causal: None (the module's causal flag) is exact when the diagonal is the
        # default one. Bidirectional always gets a window: None would mean "causal" to a
        # decoder module whose config asks for bidirectional attention.
        if allow_none and causal and shift == plain_shift and (q_length == kv_length or q_length == 1):
            return None
        lo = torch.zeros(batch_size, dtype=torch.int32, device=device)
        hi = torch.full((batch_size,), kv_length, dtype=torch.int32, device=device)
    else:
        lo, hi, holes = _key_runs(keys)
        if bool(holes.any()):
            return False  # holes in the padding mask: not a window
    shift_col = torch.full_like(lo, shift)
    return torch.stack([lo, hi, shift_col], dim=1).contiguous()


def _key_runs(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of a 0/1 key mask: the first visible key, one past the last ([0, 0) when none), and
    whether the visible keys have holes (are not that one run). No host sync."""
    kv_length = keys.shape[1]
    count = keys.sum(dim=1)
    positions = torch.arange(kv_length, device=keys.device, dtype=torch.int32)
    lo = torch.where(keys.bool(), positions, kv_length).amin(dim=1)
    hi = torch.where(keys.bool(), positions + 1, 0).amax(dim=1)
    empty = count == 0
    lo = torch.where(empty, 0, lo).to(torch.int32)
    hi = torch.where(empty, 0, hi).to(torch.int32)
    return lo, hi, count != hi - lo


def window_rows(mask: Any) -> torch.Tensor | None:
    """The ``[B, 3|4|5|7]`` rows of a window mask (int32 ``[B, 1, 1, 3|4|5|7]``), None for any other mask."""
    if (isinstance(mask, torch.Tensor) and mask.dtype == torch.int32 and mask.dim() == 4
            and mask.shape[1:3] == (1, 1) and mask.shape[3] in (3, 4, 5, 7)):
        return mask.view(mask.shape[0], mask.shape[3])
    return None


def packed_ids(mask: Any) -> torch.Tensor | None:
    """The ``[B, S, 1|2]`` rows of a packed batch's mask (int32 ``[B, 1, S, 1|2]``, S > 1): each
    token's sequence id, and the sliding window's left edge where the layer has one; else None."""
    if (isinstance(mask, torch.Tensor) and mask.dtype == torch.int32 and mask.dim() == 4
            and mask.shape[1] == 1 and mask.shape[2] > 1 and mask.shape[3] in (1, 2)):
        return mask[:, 0]
    return None


def expand_packed(ids: torch.Tensor, left: int | None = None) -> torch.Tensor:
    """The boolean ``[B, 1, S, S]`` mask of packed sequences: causal within each sequence."""
    i = torch.arange(ids.shape[1], device=ids.device)
    visible = (ids[:, :, None] == ids[:, None, :]) & (i[None, None, :] <= i[None, :, None])
    if left is not None:
        visible &= i[None, None, :] >= i[None, :, None] - left
    return visible[:, None]


def expand_window(window: torch.Tensor, q_length: int, kv_length: int, left: int | None = None) -> torch.Tensor:
    """The boolean ``[B, 1, q, kv]`` mask of window rows (on their device, no host sync)."""
    i = torch.arange(q_length, device=window.device)[None, :, None]
    j = torch.arange(kv_length, device=window.device)[None, None, :]
    lo, hi, shift = (window[:, c, None, None].long() for c in range(3))
    right = window[:, 4, None, None].long() if window.shape[1] >= 5 else 0
    visible = (j >= lo) & (j < hi) & (j <= i + shift + right)
    if left is None and window.shape[1] in (4, 5):
        left = window[:, 3, None, None].long()
    if left is not None:
        visible &= j >= i + shift - left
    if window.shape[1] == 7:  # chunked: the query's and the key's chunks must be the same
        chunk, phase = window[:, 5, None, None].long(), window[:, 6, None, None].long()
        visible &= (i + shift - phase).div(chunk, rounding_mode="floor") == (j - phase).div(chunk, rounding_mode="floor")
    return visible[:, None]


# --- attention function ----------------------------------------------------------------------

def tritune_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, dropout: float = 0.0,
                              scaling: float | None = None, is_causal: bool | None = None,
                              **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention contract: q ``[B, Hq, q, D]``, k/v ``[B, Hkv, kv, D]`` -> ``[B, q, Hq, D]``."""
    sliding_window = kwargs.get("sliding_window")
    softcap = kwargs.get("softcap") or 0.0
    sinks = kwargs.get("s_aux")
    blocks = block_rows(attention_mask)
    if blocks is not None:
        return _blocks_forward(module, query, key, value, blocks, dropout, scaling, is_causal, softcap, sinks,
                               kwargs), None
    packed = packed_ids(attention_mask)
    if packed is not None:
        return _packed_forward(module, query, key, value, packed, dropout, scaling, softcap, sinks, kwargs), None
    window = window_rows(attention_mask)
    if window is None and isinstance(attention_mask, torch.Tensor) and attention_mask.dtype == torch.int32:
        raise ValueError(
            f"attn_implementation={NAME!r}: the model changed the mask function's window rows (int32 "
            f"[batch, 1, 1, 3|4|5|7]) into an int32 tensor of shape {tuple(attention_mask.shape)}, which is no mask; "
            "this model edits its attention mask before attention: load it with attn_implementation='sdpa' "
            "(and report its model_type to add it to MASK_EDITING_MODELS)")
    # The window's left edge must be a host int: the model's sliding_window argument gives it.
    left = sliding_window - 1 if sliding_window is not None else None
    two_sided = window is not None and window.shape[1] == 5  # bidirectional sliding window: (left, left)
    chunked = window is not None and window.shape[1] == 7  # a prefill across chunks (Llama 4)
    varlen = (left is not None or softcap > 0 or sinks is not None
              or (window is not None and window.shape[1] in (4, 5)))
    reason = _fallback_reason(module, (query, key, value, sinks), attention_mask, window, dropout, left, varlen,
                              kwargs)
    if reason is not None:
        _fallback_once(reason)
        return _torch_attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, left,
                                softcap, sinks, kwargs)
    q_length = query.shape[2]
    if window is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal = bool(causal) and q_length > 1
        if causal and key.shape[2] > q_length:
            # No mask with more keys than queries only comes from a static cache's first
            # prefill, whose extra slots are empty: the same crop as sdpa's integration.
            key, value = key[:, :, :q_length], value[:, :, :q_length]
    else:
        # The window's shift carries the diagonal (beyond reach when bidirectional); a two-sided
        # window's shift is the real diagonal, and its right edge bounds the keys instead.
        causal = not two_sided
    if chunked:
        return _chunked_forward(query, key, value, window, scaling), None
    if not varlen:
        bias = kwargs.get("position_bias")  # T5's relative position bias, [1, H, q, kv]
        if bias is not None and bias.shape[-1] != key.shape[2]:
            bias = bias[..., :key.shape[2]]  # the static-cache crop above
        out = flash_attention(query, key, value, causal=causal, scale=scaling, kv_window=window, bias=bias)
        return out.transpose(1, 2).contiguous(), None
    right = left if two_sided else (0 if causal else -1)
    return _varlen_forward(query, key, value, window, causal, left, right, softcap, sinks, scaling), None


def _fallback_reason(module: torch.nn.Module, inputs: tuple[torch.Tensor | None, ...], attention_mask: Any,
                     window: Any, dropout: float, left: int | None, varlen: bool, kwargs: dict[str, Any]) -> str | None:
    query = inputs[0]
    if dropout and module.training:
        return "attention dropout in training"
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        # The kernels have no backward: their output would drop out of the autograd graph.
        return ("inputs that require grad (training, or a forward outside torch.no_grad()/torch.inference_mode(): "
                "run inference under one of those to use the kernels)")
    if kwargs.get("position_bias") is not None and (varlen or (window is not None and window.shape[1] == 7)):
        return "a position_bias (additive score bias) on a sliding-window, softcap, sink, packed or chunked layer"
    if kwargs.get("indices") is not None:
        return "sparse-attention key indices (DeepSeek V3.2's indexer: only the selected keys are attended)"
    if attention_mask is not None and window is None:
        return "a 4-D attention mask (a custom mask, or a pattern the mask function has no window form for)"
    if window is not None and window.shape[1] == 7 and varlen:
        return "chunked attention with a sliding window, softcap or sinks"
    if window is not None and window.shape[1] in (4, 5) and left is None:
        return "a sliding-window mask without the layer's sliding_window argument"
    if varlen and query.dtype not in (torch.float16, torch.bfloat16):
        return f"{query.dtype} inputs on a sliding-window/softcap/sink layer (the varlen kernel takes fp16/bf16)"
    return None


def _packed_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    rows: torch.Tensor, dropout: float, scaling: float | None, softcap: float,
                    sinks: torch.Tensor | None, kwargs: dict[str, Any]) -> torch.Tensor:
    """Packed sequences (rows holding several sequences; ``rows`` from ``packed_ids``): one varlen
    launch over all of them, each causal over its own keys, as flash-attn's ``cu_seqlens`` serve
    packing. The host reads the sequence boundaries once per layer call."""
    ids = rows[..., 0]
    left = int(rows[0, 0, 1]) if rows.shape[-1] == 2 else None
    batch, _, length, _ = query.shape
    if key.shape[2] != length:
        raise ValueError(f"attn_implementation={NAME!r}: a packed batch's mask covers {length} keys per row, "
                         f"but the layer attends over {key.shape[2]}; packing (position ids restarting inside a "
                         "row) works without a cache: pass use_cache=False, or pad the sequences instead")
    reason = _fallback_reason(module, (query, key, value, sinks), None, None, dropout, left, True, kwargs)
    if reason is not None:
        _fallback_once(reason)
        return _torch_attention(module, query, key, value, expand_packed(ids, left), dropout, scaling, True, left,
                                softcap, sinks, kwargs)[0]
    # A sequence starts where the id changes or a row starts (a sequence never spans two rows).
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    first = torch.cat([starts.flatten().nonzero().flatten(),
                       torch.tensor([batch * length], device=ids.device)]).to(torch.int32)
    longest = int((first[1:] - first[:-1]).max())  # one host read per layer call

    def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return varlen_attention(q, k, v, first, longest, longest, cu_seqlens_k=first, causal=True,
                                window_size=(-1 if left is None else left, 0), softcap=float(softcap),
                                sinks=None if sinks is None else sinks.float(), scale=scale)

    return _on_varlen(query, key, value, scaling, launch, packed_keys=True)


def _blocks_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    blocks: torch.Tensor, dropout: float, scaling: float | None, is_causal: bool | None,
                    softcap: float, sinks: torch.Tensor | None, kwargs: dict[str, Any]) -> torch.Tensor:
    """Image-token rows: per sequence, causal launches over its text runs and one launch per image
    block over the keys before the block's end (with the layer's sliding window, if any)."""
    host = blocks.tolist()
    window_left = host[0][3] if host and host[0][3] >= 0 else None
    reason = _fallback_reason(module, (query, key, value, sinks), None, None, dropout, None, True, kwargs)
    if reason is not None:
        _fallback_once(reason)
        mask = expand_blocks(blocks, query.shape[2], key.shape[2])
        return _torch_attention(module, query, key, value, mask, dropout, scaling, is_causal, window_left,
                                softcap, sinks, kwargs)[0]
    batch, heads_q, q_length, _ = query.shape
    out = query.new_empty(batch, q_length, heads_q, value.shape[-1])
    for b, (lo, hi, shift, _, *ends) in enumerate(host):
        images = [(s, e) for s, e in zip(ends[::2], ends[1::2], strict=True) if s >= 0]
        cuts = sorted({0, q_length, *(x for run in images for x in run)})
        for i0, i1 in zip(cuts, cuts[1:], strict=False):
            image = next(((s, e) for s, e in images if s == i0), None)
            top = hi if image is None else min(hi, image[1])
            rows = torch.tensor([[lo, top, shift + i0]], dtype=torch.int32, device=query.device)
            out[b:b + 1, i0:i1] = _varlen_forward(
                query[b:b + 1, :, i0:i1], key[b:b + 1], value[b:b + 1], rows, image is None, window_left,
                0 if image is None else -1, softcap, sinks, scaling)
    return out


def _chunked_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, window: torch.Tensor,
                     scaling: float | None) -> torch.Tensor:
    """Chunked attention over queries in several chunks: one causal launch per sequence and chunk,
    its rows' first key the chunk's (a long prefill: a few launches, one host read of the rows)."""
    batch, heads_q, q_length, _ = query.shape
    out = query.new_empty(batch, q_length, heads_q, value.shape[-1])
    for b, (lo, hi, shift, _, _, chunk, phase) in enumerate(window.tolist()):
        i = 0
        while i < q_length:
            m = (i + shift - phase) // chunk  # the chunk of query i (at key slot i + shift)
            end = min(q_length, phase + (m + 1) * chunk - shift)  # the next chunk's first query
            start = min(max(lo, phase + m * chunk), hi)
            rows = torch.tensor([[start, hi, shift + i]], dtype=torch.int32, device=query.device)
            part = flash_attention(query[b:b + 1, :, i:end], key[b:b + 1], value[b:b + 1], causal=True,
                                   scale=scaling, kv_window=rows)
            out[b, i:end] = part[0].transpose(0, 1)
            i = end
    return out


def _varlen_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, window: torch.Tensor | None,
                    causal: bool, left: int | None, right: int, softcap: float, sinks: torch.Tensor | None,
                    scaling: float | None) -> torch.Tensor:
    batch, q_length = query.shape[0], query.shape[2]
    cu_seqlens_q = torch.arange(batch + 1, dtype=torch.int32, device=query.device) * q_length
    bounds = window[:, :3].contiguous() if window is not None else None

    def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return varlen_attention(q, k, v, cu_seqlens_q, q_length, k.shape[1], kv_bounds=bounds, causal=causal,
                                window_size=(-1 if left is None else left, right), softcap=float(softcap),
                                sinks=None if sinks is None else sinks.float(), scale=scale)

    return _on_varlen(query, key, value, scaling, launch, packed_keys=False)


def _on_varlen(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None,
               launch: Any, *, packed_keys: bool) -> torch.Tensor:
    """``launch(q, k, v, scale)`` (a ``varlen_attention`` call) on transformers' ``[B, H, S, D]``
    q/k/v: q packed ``[B * S, Hq, D]``; k/v ``[B, S_k, Hkv, D]`` views of theirs (the op reads any
    strides), or packed ``[B * S_k, Hkv, D]`` with ``packed_keys`` (a view when B == 1). Returns
    ``[B, S, Hq, Dv]``: a value head dim narrower than q/k's (latent attention) is zero-padded
    for the launch and sliced off after."""
    value_dim = value.shape[-1]
    if scaling is None:
        scaling = query.shape[-1] ** -0.5  # of q's own head dim, before any padding
    query, key, value = pad_head_dims(query, key, value)
    batch, heads_q, q_length, head_dim = query.shape
    k, v = key.transpose(1, 2), value.transpose(1, 2)
    if packed_keys:
        k, v = k.reshape(-1, k.shape[2], head_dim), v.reshape(-1, v.shape[2], head_dim)
    if k.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    q = query.transpose(1, 2).reshape(batch * q_length, heads_q, head_dim)  # a copy unless q_length == 1
    out = launch(q, k, v, scaling).view(batch, q_length, heads_q, head_dim)
    return out if head_dim == value_dim else out[..., :value_dim].contiguous()


def _torch_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, dropout: float, scaling: float | None, is_causal: bool | None,
                     left: int | None, softcap: float, sinks: torch.Tensor | None,
                     kwargs: dict[str, Any]) -> tuple[torch.Tensor, None]:
    """The fallback: SDPA, or the eager math when softcap or sinks are on (SDPA has neither)."""
    if window_rows(attention_mask) is not None:
        attention_mask = expand_window(window_rows(attention_mask), query.shape[2], key.shape[2], left)
    if kwargs.get("indices") is not None:
        attention_mask = _selected_keys(attention_mask, kwargs["indices"], query.shape[2], key.shape[2])
    if not softcap and sinks is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        rest = {k: v for k, v in kwargs.items() if k not in ("softcap", "s_aux", "indices")}
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **rest)
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and (causal or left is not None):
        q_length, kv_length = scores.shape[-2:]
        everything = torch.ones(q_length, kv_length, dtype=torch.bool, device=scores.device)
        diagonal = kv_length - q_length  # bottom-right, as the kernels align it
        attention_mask = everything.tril(diagonal) if causal else everything
        if left is not None:
            attention_mask = attention_mask & ~everything.tril(diagonal - left - 1)
    if attention_mask is None:
        pass
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    else:
        scores = scores + attention_mask
    if sinks is not None:
        scores = torch.cat([scores, sinks.to(scores.dtype).reshape(1, -1, 1, 1).expand(*scores.shape[:3], 1)], dim=-1)
    probs = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(value.dtype)
    if sinks is not None:
        probs = probs[..., :-1]
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _selected_keys(mask: Any, indices: torch.Tensor, q_length: int, kv_length: int) -> torch.Tensor:
    """``mask`` restricted to the keys a sparse-attention indexer selected (``indices`` ``[B, q,
    topk]``, DeepSeek V3.2 / GLM-5 style), as those models do for eager and SDPA themselves: they
    hand the indices, not the restricted mask, to every other implementation."""
    unselected = torch.ones(indices.shape[0], q_length, kv_length, dtype=torch.bool, device=indices.device)
    unselected = unselected.scatter(-1, indices.long(), False).unsqueeze(1)
    if mask is None:  # the indexer's models always build their causal mask; this is the same one
        mask = torch.ones(q_length, kv_length, dtype=torch.bool, device=indices.device).tril(kv_length - q_length)
    if mask.dtype == torch.bool:
        return mask & ~unselected
    return mask.masked_fill(unselected, torch.finfo(mask.dtype).min)


__all__ = ["CONTINUOUS_BATCHING", "MASK_EDITING_MODELS", "NAME", "expand_packed", "expand_window", "mask_pattern",
           "packed_ids", "register_transformers", "tritune_attention_forward", "tritune_mask", "window_rows"]
