"""Learned cost model: rank configs of a problem before measuring them.

``GBTCostModel`` (gradient-boosted trees per device, mixed by learned hardware similarity and
refit online) implements the ``CostModel`` contract; ``save_model``/``load_model`` persist it
with its feature version; ``evaluate_logo`` is the leave-one-GPU-out evaluation behind
``tritune cost-model eval``.
"""

from ._base import CostModel
from ._evaluate import evaluate_logo, naive_transfer_scores
from ._features import (
    FEATURE_VERSION,
    CompilerFeatures,
    ConfigBatch,
    Featurizer,
    HardwareInfo,
    kernel_hook,
    kernel_tuner_features,
    occupancy,
    register_kernel_features,
)
from ._metrics import pairwise_accuracy, peak_at_k, ranking_report
from ._model import GBTCostModel
from ._persist import SHIPPED_MODEL, ModelVersionError, load_model, load_shipped, save_model
from ._pooled import PooledGBTCostModel

__all__ = [
    "FEATURE_VERSION",
    "CompilerFeatures",
    "ConfigBatch",
    "CostModel",
    "Featurizer",
    "GBTCostModel",
    "HardwareInfo",
    "ModelVersionError",
    "PooledGBTCostModel",
    "SHIPPED_MODEL",
    "evaluate_logo",
    "kernel_hook",
    "kernel_tuner_features",
    "load_model",
    "load_shipped",
    "naive_transfer_scores",
    "occupancy",
    "pairwise_accuracy",
    "peak_at_k",
    "ranking_report",
    "register_kernel_features",
    "save_model",
]
