"""Trained advisors cached on disk by what they were trained on (records + training options).

Leave-one-out evaluations train one model per held-out landscape (1.5-3 minutes each on one
core); ``tritune advisor eval`` and the search strategies' leave-one-out runs (``bench-search``)
train on the same records, so they share these models instead of training them twice. The
cache lives under ``$TRITUNE_CACHE_DIR/advisor/<fingerprint>`` (default ``~/.cache/tritune``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tritune.search_space import TuningRecord, config_key

log = logging.getLogger(__name__)


# The modules whose code decides what training produces: a model cached by other code (an older
# version, or an experiment in the same cache directory) must not pass for this code's.
_TRAINING_SOURCES = ("_corpus.py", "_language.py", "_model.py", "_options.py", "_tlm.py")


def _training_code_hash() -> bytes:
    h = hashlib.sha256()
    for name in _TRAINING_SOURCES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.digest()


def fingerprint(records: Sequence[TuningRecord], options: Any) -> str:
    """Stable hash of the records, the training options and the training code (the cache key)."""
    h = hashlib.sha256(repr(dataclasses.asdict(options)).encode())
    h.update(_training_code_hash())
    for r in sorted(records, key=lambda r: (r.group, config_key(r.config))):
        h.update(f"{r.group}|{config_key(r.config)}|{r.time_ms}|{r.status}\n".encode())
    return h.hexdigest()[:20]


def cache_dir() -> Path:
    return Path(os.environ.get("TRITUNE_CACHE_DIR") or Path.home() / ".cache" / "tritune") / "advisor"


def cached_train(records: Sequence[TuningRecord], options: Any = None) -> Any:
    """A TensorLM trained on ``records`` with ``options`` (a ``TrainOptions``), from the cache
    when the same records and options were trained before; trained and cached otherwise."""
    from tritune.llm_advisor._model import TensorLM
    from tritune.llm_advisor._options import TrainOptions
    from tritune.llm_advisor._tlm import train

    options = options or TrainOptions()
    cache = cache_dir() / fingerprint(records, options)
    if (cache / "model.safetensors").exists():
        try:
            return TensorLM.load(cache)
        except (OSError, ValueError) as exc:
            log.warning("advisor cache %s unreadable (%s); retraining", cache, exc)
    log.info("training the advisor on %d records (cached as %s)", len(records), cache)
    lm = train(records, options=options)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent))
        lm.save(tmp)
        tmp.replace(cache)  # atomic: a concurrent reader never sees half a checkpoint
    except OSError as exc:
        log.warning("could not cache the advisor in %s: %s", cache, exc)
    return lm
