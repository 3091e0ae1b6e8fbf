"""Saving and loading cost models, with the feature version they were trained with.

A model file is a pickle of ``{"format", "feature_version", "sklearn", "tritune", "model"}``.
Pickles run code when loaded: load only model files you (or your team) wrote.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ._base import CostModel
from ._features import FEATURE_VERSION

FORMAT = "tritune-cost-model"


class ModelVersionError(ValueError):
    """The model file was trained with other feature definitions than this tritune computes."""


def save_model(model: CostModel, path: str | Path, *, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (atomically: a crash leaves the old file in place)."""
    import sklearn
    from tritune import __version__

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "feature_version": FEATURE_VERSION, "sklearn": sklearn.__version__,
               "tritune": __version__, "meta": dict(meta or {}), "model": model}
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(p)
    return p


def read_payload(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"cost model file {p} does not exist; train one with 'tritune cost-model train'")
    try:
        with open(p, "rb") as f:
            payload = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise ValueError(f"{p} is not a readable tritune cost model ({type(exc).__name__}: {exc}); "
                         "retrain it with 'tritune cost-model train'") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{p} is not a tritune cost model file (written by 'tritune cost-model train')")
    return payload


def load_model(path: str | Path) -> CostModel:
    """Load a model; refuse one whose feature version differs from this tritune's."""
    payload = read_payload(path)
    version = payload.get("feature_version")
    if version != FEATURE_VERSION:
        raise ModelVersionError(
            f"cost model {path} was trained with feature version {version}, but this tritune computes feature "
            f"version {FEATURE_VERSION}: its predictions would be meaningless. Retrain it with "
            "'tritune cost-model train --landscape FILES... | --db PATH --output MODEL'")
    return payload["model"]
