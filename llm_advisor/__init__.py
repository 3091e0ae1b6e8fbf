"""The tensor-language-model advisor: proposes configs for a problem on some hardware.

- ``TLMAdvisor``: a small GPT-2 trained from scratch on tuning records (the TLM recipe:
  pre-train on sampled valid configs, fine-tune on measured ones by quality); proposes the k
  most likely fastest valid configs. ``TLMAdvisor.load()`` gives the shipped checkpoint.
- ``train``: records (landscapes, ``TuningDB.records()``) -> a trained ``TensorLM``.
- ``evaluate``: leave-one-out transfer to an unseen GPU on recorded landscapes.
- ``PromptAdvisor``: a local instruction-tuned model asked for JSON, answers filtered strictly.

Names are imported on first use (PEP 562): importing the package does not import torch or
transformers, so ``tritune --help`` and the tuner's registry stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Advisor": "_base", "Proposal": "_base",
    "CorpusOptions": "_options", "TrainOptions": "_options",
    "TargetResult": "_eval", "evaluate": "_eval", "geomean": "_eval", "landscape_problem": "_eval",
    "naive_transfer": "_eval",
    "ValidPrefixProcessor": "_generate", "ValidSet": "_generate",
    "Vocabulary": "_language", "hardware_words": "_language", "problem_words": "_language", "sentence": "_language",
    "TensorLM": "_model",
    "PromptAdvisor": "_prompt", "Rejection": "_prompt", "build_prompt": "_prompt", "parse_answer": "_prompt",
    "DEFAULT_CHECKPOINT": "_tlm", "TLMAdvisor": "_tlm", "attention_spaces": "_tlm", "train": "_tlm",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tritune.llm_advisor' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tritune.llm_advisor.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
