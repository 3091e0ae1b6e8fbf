"""Plots (matplotlib, an optional dependency): tuning convergence and bench-search curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plots need matplotlib: pip install matplotlib (or pip install 'tritune[plot]')") from None
    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt

    return plt


def plot_convergence(report: Any, path: str | Path) -> Path:
    """Best time found vs real evaluations, one line per problem (a TuneReport)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in report.problems:
        points = [(n, b) for n, b in p.curve if b is not None]
        if points:
            ax.step([n for n, _ in points], [b for _, b in points], where="post", label=p.problem.name[:60])
    unit = "ms" if report.real_timing else "ms (CPU interpreter, not GPU)"
    ax.set_xlabel("real evaluations")
    ax.set_ylabel(f"best time found, {unit}")
    ax.set_yscale("log")
    ax.set_title(f"tritune tune ({report.backend})")
    ax.grid(True, alpha=0.3)
    if report.problems:
        ax.legend(fontsize=7)
    return _save(fig, plt, path)


def plot_bench(report: Any, path: str | Path) -> Path:
    """Mean fraction of optimum vs budget, per strategy, one panel per landscape (a BenchReport)."""
    plt = _pyplot()
    rows = report.summary()
    landscapes = list(dict.fromkeys(r["landscape"] for r in rows))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    cols = min(3, len(landscapes)) or 1
    nrows = (len(landscapes) + cols - 1) // cols or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    for ax, landscape in zip(axes.flat, landscapes, strict=False):
        for s in strategies:
            sel = [r for r in rows if r["landscape"] == landscape and r["strategy"] == s]
            xs = [r["budget"] for r in sel]
            ax.errorbar(xs, [r["fraction_mean"] for r in sel], yerr=[r["fraction_std"] for r in sel],
                        marker="o", capsize=3, label=s)
        sel = [r for r in rows if r["landscape"] == landscape and r["strategy"] == strategies[0]]
        ax.plot([r["budget"] for r in sel], [r["random_expected_fraction"] for r in sel], "k--", label="random (exact)")
        ax.set_title(landscape, fontsize=9)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("real evaluations")
        ax.set_ylabel("fraction of optimum")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(landscapes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("fraction of optimum = optimum time / best found (mean ± std over repeats)", fontsize=9)
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
