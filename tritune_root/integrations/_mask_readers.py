"""Which transformers models read the attention mask themselves (and so must get eager's mask).

transformers accepts a registered attention name for every model, but only layers that look up
``ALL_ATTENTION_FUNCTIONS`` call the registered attention function; the mask function is called
by every model that builds its masks with ``masking_utils`` (``create_causal_mask`` and friends).
A layer that computes ``softmax(q @ k.T + mask)`` itself (RoFormer, BigBird, MPNet, MVP, and
BigBird-Pegasus's encoder next to its interface-dispatching decoder) would add tritune's window
rows to its scores as a bias, or run unmasked where tritune hands no mask at all (an unpadded
causal batch): silently wrong wherever the shapes broadcast. So would a layer that edits the
mask before dispatching (DeepSeek V3.2's sparse attention and its indexer, GLM-5's, ...). Such
models get eager's additive mask instead, which is exactly what their code expects.

The verdict is per modeling module (found next to the config's class, cached by that class):

- the module never names ``ALL_ATTENTION_FUNCTIONS``: every layer reads the mask itself;
- it does, and none of its attention classes reads the mask (``reads_mask``): the rows are safe;
- both kinds (mixed; classes built from another config class, such as Gemma 4's audio
  attention next to its text model, do not count): decided per call by the module whose
  ``forward`` asked for the mask (the first frame up the stack with a module as ``self``):
  eager's mask if any of its submodules reads it, cached by that module's class.

One more per-module fact: whether transformers ever hands the module's models a skipped mask.
For an unpadded causal batch the mask function returns None and the attention function takes
causality from the layer's ``is_causal``, as SDPA and flash-attn do; transformers relies on that
flag only in models that claim SDPA or flash-attn support, and a module whose models claim
neither may leave it False on causal layers (BigBird-Pegasus's decoder self-attention), so its
models get explicit rows instead of None (``skips_mask``).

The errors these rules can make go the safe way: a layer wrongly taken for a mask reader gets
eager's 4-D mask, which the attention function runs in PyTorch (correct, not tuned).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import Any

import torch
from tritune.integrations._class_tables import ADAPTED_MODULES

INTERFACE = "ALL_ATTENTION_FUNCTIONS"
_SCORING = frozenset({"matmul", "softmax", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention"})
_EDITING = frozenset({"masked_fill", "masked_fill_"})

# Models that edit the mask tensor before attention in ways the module scan cannot see (DeepSeek V4
# pads it to its compressed KV slots, Doge reads its values). Any other model that mangles the
# window rows is caught in the attention function (an int32 tensor that is not rows) and refused,
# never read as a mask.
MASK_EDITING_MODELS = frozenset({"deepseek_v4", "doge"})

_BY_CONFIG: dict[type, tuple[str, bool]] = {}  # config class -> ("interface" | "own" | "mixed", skips_mask)
_BY_CALLER: dict[type, bool] = {}  # mask-building module class (mixed modules) -> reads the mask itself


def mask_reader_reason(config: Any) -> str | None:
    """Why the model asking for a mask with ``config`` must get eager's mask, or None."""
    if config is None:
        return None
    cls = type(config)
    model_type = getattr(config, "model_type", "") or cls.__name__
    if model_type in MASK_EDITING_MODELS:
        return f"model_type {model_type!r}, which edits its attention mask tensor"
    if getattr(config, "alibi", False) is True:
        return f"model_type {model_type!r} with alibi=True (its layers add the ALiBi bias to the mask)"
    verdict = _verdict(cls)[0]
    if verdict == "own":
        return (f"model_type {model_type!r}, whose attention does not go through transformers' AttentionInterface "
                f"(its layers add the mask to their scores themselves)")
    if verdict == "mixed":
        caller = _caller_reads_mask()
        if caller is not None:
            return f"{caller} (model_type {model_type!r}), whose layers read or edit the mask themselves"
    return None


def skips_mask(config: Any) -> bool:
    """Whether an unpadded causal batch may get no mask (None): the layers' ``is_causal`` is set."""
    return config is None or _verdict(type(config))[1]


def _verdict(config_class: type) -> tuple[str, bool]:
    found = _BY_CONFIG.get(config_class)
    if found is None:
        found = _BY_CONFIG[config_class] = _module_verdict(config_class)
    return found


@torch.compiler.disable  # imports and inspects modules: under torch.compile only a first call breaks the graph
def _module_verdict(config_class: type) -> tuple[str, bool]:
    name = config_class.__module__.replace(".configuration_", ".modeling_")
    try:
        module = sys.modules.get(name) or importlib.import_module(name)
    except ImportError:
        return "interface", True  # no modeling module beside the config (a custom layout): trust the interface
    classes = [c for c in vars(module).values()
               if inspect.isclass(c) and issubclass(c, torch.nn.Module) and c.__module__ == module.__name__]
    skips = any(getattr(c, "_supports_sdpa", False) or getattr(c, "_supports_flash_attn", False) for c in classes)
    if module.__name__ in ADAPTED_MODULES:
        return "interface", skips  # its attention-class table routes to the kernels (_class_tables)
    if INTERFACE not in vars(module):
        return "own", skips
    own = [c for c in classes if reads_mask(c) and not _built_from_another_config(c, config_class)]
    return ("mixed" if own else "interface"), skips


def _built_from_another_config(module_class: type, config_class: type) -> bool:
    """Whether ``module_class.__init__`` declares a config of another class (Gemma 4's audio
    attention takes a ``Gemma4AudioConfig``: the text model's masks never reach it)."""
    try:
        annotation = inspect.signature(module_class.__init__).parameters["config"].annotation
    except (KeyError, TypeError, ValueError):
        return False
    if annotation is inspect.Parameter.empty:
        return False
    named = set(re.findall(r"\w+Config\b", str(annotation)))
    return bool(named) and config_class.__name__ not in named


def reads_mask(module_class: type) -> bool:
    """Whether ``module_class`` is an attention layer (or a sparse-attention indexer) whose
    ``forward`` takes the mask and reads it itself: it computes the scores without the interface,
    or it edits the mask (``masked_fill``: DeepSeek V3.2's indexer adds it to its index scores and
    its attention masks the unselected keys in it before dispatching). Only classes named like
    one count: a model's own forward may take the mask and matmul for other ends (CLIP's
    similarity logits), and encoders' convolution modules take the 2-D padding mask."""
    lowered = module_class.__name__.lower()
    if not any(word in lowered for word in ("attention", "attn", "indexer")):
        return False
    forward = inspect.unwrap(getattr(module_class, "forward", None) or (lambda: None))
    code = getattr(forward, "__code__", None)
    if code is None:
        return False
    params = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    names = set(code.co_names)
    if "attention_mask" not in params:
        return False
    return bool(names & _EDITING) or (INTERFACE not in names and bool(names & _SCORING))


@torch.compiler.disable  # reads the Python stack: only mixed modules (a handful of models) pay the graph break
def _caller_reads_mask() -> str | None:
    """The class name of the module that asked for this mask if its layers read it themselves, else None."""
    # the mask builders (masking_utils, decorators such as deprecate_kwarg, tritune_mask) run in
    # frames without a module's ``self``; the first frame with one is the model part asking
    frame, caller = sys._getframe(1), None
    for _ in range(16):
        if frame is None:
            break
        caller = frame.f_locals.get("self")
        if isinstance(caller, torch.nn.Module):
            break
        frame = frame.f_back
    if not isinstance(caller, torch.nn.Module):
        return "a mask built outside a module's forward"  # can't tell which layers read it: the safe side
    cls = type(caller)
    if cls not in _BY_CALLER:
        _BY_CALLER[cls] = any(reads_mask(type(m)) for m in caller.modules())
    return cls.__name__ if _BY_CALLER[cls] else None
