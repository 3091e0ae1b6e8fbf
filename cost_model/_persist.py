"""Saving and loading cost models, with the feature version they were trained with.

A model file is a pickle of ``{"format", "feature_version", "sklearn", "tritune", "model"}``,
gzip-compressed when its name ends in ``.gz`` (the shipped model: 4.7 MB -> 1.7 MB).
Pickles run code when loaded: load only model files you (or your team) wrote.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

from ._base import CostModel
from ._features import FEATURE_VERSION

FORMAT = "tritune-cost-model"
# Trained on every landscape the repository records (data/kernel_tuner_cache, data/gpu_runs):
#   tritune cost-model train --landscape data/kernel_tuner_cache data/gpu_runs --output cost_model/checkpoint/cost_model.pkl.gz
SHIPPED_MODEL = Path(__file__).parent / "checkpoint" / "cost_model.pkl.gz"

log = logging.getLogger("tritune.cost_model")


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
    with _opener(p)(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(p)
    return p


def _opener(path: Path) -> Any:
    return gzip.open if path.name.endswith(".gz") else open


def read_payload(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"cost model file {p} does not exist; train one with 'tritune cost-model train'")
    try:
        with _opener(p)(p, "rb") as f:
            payload = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError, ImportError,
            gzip.BadGzipFile) as exc:
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


def load_shipped(path: str | Path | None = None) -> CostModel | None:
    """The cost model shipped with the package, or None (logged) when it is missing or unusable.

    A pickle written by another scikit-learn or feature version may not load or may predict
    nonsense; the default search then learns from the target's measurements alone rather than
    failing, and says so once.
    """
    p = Path(path) if path is not None else SHIPPED_MODEL
    if not p.exists():
        log.info("no shipped cost model at %s; the search learns from the target's measurements only", p)
        return None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            payload = read_payload(p)
            if payload.get("feature_version") != FEATURE_VERSION:
                raise ModelVersionError(f"feature version {payload.get('feature_version')}, this tritune computes "
                                        f"{FEATURE_VERSION}")
            model = payload["model"]
    except (ValueError, OSError) as exc:
        log.warning("the shipped cost model %s is unusable here (%s); the search learns from the target's "
                    "measurements only (retrain it with 'tritune cost-model train')", p, exc)
        return None
    if caught:
        import sklearn

        log.warning("the shipped cost model was written by scikit-learn %s (this is %s): %s",
                    payload.get("sklearn"), sklearn.__version__, caught[0].message)
    return model
