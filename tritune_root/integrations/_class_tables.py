"""Models that pick their attention class from a table keyed by the implementation name.

A few transformers models (Falcon, GPT-Neo, Bark, GIT, SAM's vision encoder, ...) do not dispatch
through the AttentionInterface: their layers index a module-level ``*_ATTENTION_CLASSES`` dict by
``config._attn_implementation``, so any registered name raises ``KeyError`` while the model is
built. ``register_class_tables`` adds the name to those tables:

- where the table's flash-attention class hands its work to transformers'
  ``_flash_attention_forward`` and nothing else (``FLASH_ADAPTED``: Falcon), a subclass whose
  ``forward`` calls the tritune attention function there instead: the layer runs the kernels,
  with the rows of tritune's mask function (Falcon's ALiBi layers, which add their bias to the
  mask themselves, are built with the table's SDPA class instead);
- elsewhere the table's SDPA class (else its eager one): the model loads and runs in PyTorch,
  with eager's mask (those modules never name the AttentionInterface, see ``_mask_readers``).
  GPT-Neo is one: its flash class never applies the local layers' window.

Nothing is changed in transformers' modules beyond the added table entries.
"""

from __future__ import annotations

import importlib
import logging
import types
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("tritune.integrations.transformers")

# Modeling modules (transformers.models.<name>.modeling_<name>) with attention-class tables.
CLASS_TABLE_MODELS = ("falcon", "gpt_neo", "bark", "git", "superglue", "sam", "sam_hq", "deepseek_ocr2",
                      "unlimited_ocr")
FLASH_ADAPTED = frozenset({"falcon"})
# Modules whose tables route to the kernels: their masks are the rows (``_mask_readers``).
ADAPTED_MODULES: set[str] = set()


def register_class_tables(name: str, attention: Callable[..., Any]) -> None:
    """Add ``name`` to every attention-class table (see the module doc); idempotent."""
    for model in CLASS_TABLE_MODELS:
        try:
            module = importlib.import_module(f"transformers.models.{model}.modeling_{model}")
        except ImportError:  # another transformers version: no such model
            continue
        for table_name, table in list(vars(module).items()):
            if not (table_name.endswith("_ATTENTION_CLASSES") and isinstance(table, dict)) or name in table:
                continue
            plain = table.get("sdpa") or table.get("eager")
            if plain is None:
                continue
            flash = table.get("flash_attention_2")
            if model in FLASH_ADAPTED and flash is not None:
                table[name] = _alibi_aware(_flash_adapter(flash, attention), plain)
                ADAPTED_MODULES.add(module.__name__)
            else:
                table[name] = plain


def _alibi_aware(adapted: type, plain: type) -> Callable[..., Any]:
    """The layer class for a config: ALiBi layers (Falcon's ``alibi=True``) stay in PyTorch."""
    def build(config: Any, *args: Any, **kwargs: Any) -> torch.nn.Module:
        return (plain if getattr(config, "alibi", False) else adapted)(config, *args, **kwargs)

    return build


def _flash_adapter(flash: type, attention: Callable[..., Any]) -> type:
    """A subclass of ``flash`` whose ``forward`` calls ``attention`` where it called transformers'
    ``_flash_attention_forward`` (the same code, with that one global name bound differently)."""
    base = flash.forward

    def flash_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                      query_length: int, is_causal: bool, dropout: float = 0.0, position_ids: Any = None,
                      softmax_scale: float | None = None, sliding_window: int | None = None,
                      use_top_left_mask: bool = False, softcap: float | None = None, **kwargs: Any) -> torch.Tensor:
        # flash-attn's [B, S, H, D] in and out; the attention function takes transformers' [B, H, S, D]
        layer = _Layer(training=dropout > 0, is_causal=is_causal, groups=query.shape[2] // key.shape[2])
        out, _ = attention(layer, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attention_mask,
                           dropout=dropout, scaling=softmax_scale, is_causal=is_causal, sliding_window=sliding_window,
                           softcap=softcap, position_ids=position_ids)
        return out

    scope = {**base.__globals__, "_flash_attention_forward": flash_forward}
    forward = types.FunctionType(base.__code__, scope, base.__name__, base.__defaults__, base.__closure__)
    forward.__kwdefaults__ = base.__kwdefaults__
    forward.__doc__ = base.__doc__
    return type(f"Tritune{flash.__name__}", (flash,), {"forward": forward, "__module__": flash.__module__})


class _Layer(torch.nn.Module):
    """What the attention function reads of a layer: training, causality, GQA groups."""

    def __init__(self, *, training: bool, is_causal: bool, groups: int) -> None:
        super().__init__()
        self.train(training)
        self.is_causal = is_causal
        self.num_key_value_groups = groups
