"""The training record shared by the cost model and the advisor.

Both learn from measurements, whether they come from the tuning database or from recorded
landscapes; this is the one shape those measurements take on the way in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._space import Value
from .hardware import Hardware


@dataclass(frozen=True)
class TuningRecord:
    """One measured config of one problem on one device.

    ``group`` names the problem instance (hardware + kernel + shape): rankings and "fraction of
    optimum" only make sense inside a group. ``time_ms`` is None when the config failed.
    """

    hardware: Hardware
    kernel: str
    problem: Mapping[str, Any]
    config: Mapping[str, Value]
    time_ms: float | None
    status: str
    group: str
