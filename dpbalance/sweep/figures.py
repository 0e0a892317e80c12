"""Small matplotlib helpers for the reproduction report (Agg backend, PNG files, no global state kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(path: Path, groups: Sequence[str], series: dict[str, Sequence[float]], *, ylabel: str, title: str,
                 hline: float | None = None, logy: bool = False) -> Path:
    """One bar per (group, series) pair: e.g. throughput gain per workload (group) and policy (series)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4.0))
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for j, (name, vals) in enumerate(series.items()):
        v = np.array([np.nan if a is None else a for a in vals], dtype=float)
        ax.bar(x + (j - (n - 1) / 2) * width, v, width, label=name)
    if hline is not None:
        ax.axhline(hline, color="k", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lines(path: Path, xs: dict[str, Sequence[float]], ys: dict[str, Sequence[float]], *, xlabel: str, ylabel: str,
          title: str, logx: bool = False, logy: bool = False, styles: dict[str, str] | None = None) -> Path:
    """One line per series name; ``xs[name]`` and ``ys[name]`` are matching sequences."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in ys:
        x = np.asarray(xs[name], dtype=float)
        y = np.asarray([np.nan if a is None else a for a in ys[name]], dtype=float)
        ax.plot(x, y, (styles or {}).get(name, "o-"), label=name, ms=4)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmap(path: Path, rows: Sequence[str], cols: Sequence[str], values: np.ndarray, *, title: str,
            fmt: str = "{:.0f}") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.6 * len(rows) + 1.8))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
