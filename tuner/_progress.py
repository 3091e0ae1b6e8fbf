"""A live progress bar per problem: trials, current best, failures, ETA (tqdm, on stderr)."""

from __future__ import annotations

import sys
from typing import Any

from tritune.tuner._backend import MeasureResult


class ProblemProgress:
    """tqdm bar over the problem's trial budget; disabled (or without a TTY) it prints nothing."""

    def __init__(self, name: str, total: int | None, *, enabled: bool = True, real_timing: bool = True) -> None:
        self.name = name
        self.total = total
        self.enabled = enabled
        self.unit = "ms" if real_timing else "ms cpu"
        self.bar: Any = None

    def start(self, done: int, best_ms: float | None) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=min(done, self.total or done), desc=_short(self.name), unit="trial",
                        file=sys.stderr, dynamic_ncols=True, leave=True,
                        bar_format="{desc} {n_fmt}/{total_fmt} trials |{bar}| {elapsed}<{remaining} {postfix}"
                        if self.total else None)
        self._postfix(best_ms, 0)

    def update(self, result: MeasureResult, best_ms: float | None, failures: int) -> None:
        if self.bar is None:
            return
        if result.status.costs_evaluation:
            self.bar.update(1)
        self._postfix(best_ms, failures)

    def _postfix(self, best_ms: float | None, failures: int) -> None:
        best = f"{best_ms:.4g} {self.unit}" if best_ms is not None else "-"
        self.bar.set_postfix_str(f"best {best}, failed {failures}", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _short(name: str, limit: int = 48) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."
