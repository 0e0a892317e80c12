"""The reproduction report's charts (matplotlib, Agg backend, PNG files, no global state kept).

Bars start at zero: a gain chart draws the gain itself (a bar from 0 %), never a zoomed absolute value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullLocator

from ..results.plots import plt, save  # plots selects the Agg backend before pyplot loads


def grouped_bars(
    path: Path, groups: Sequence[str], panels: dict[str, dict[str, Sequence[float | None]]], *, ylabel: str, title: str
) -> Path:
    """Bars from zero with a line at zero, one panel per entry of ``panels`` (panel title → series) sharing the y
    axis: one bar per (group, series) pair, e.g. the throughput gain (%) per workload (group) and policy (series).
    Missing values leave a gap."""
    n_panels = len(panels)
    fig, axes = plt.subplots(
        1, n_panels, figsize=(n_panels * max(5.5, 1.3 * len(groups) + 2.0), 4.4), sharey=True, squeeze=False
    )
    x = np.arange(len(groups))
    for ax, (head, series) in zip(axes[0], panels.items()):
        series = {k: v for k, v in series.items() if any(a is not None and np.isfinite(a) for a in v)}  # drawn ones
        n = max(1, len(series))
        width = 0.8 / n
        for j, (name, vals) in enumerate(series.items()):
            v = np.array([np.nan if a is None else a for a in vals], dtype=float)
            ax.bar(x + (j - (n - 1) / 2) * width, v, width, label=name, color=plt.get_cmap("tab10")(j % 10))
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
        ax.set_title(head, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    save(fig, path)
    return path


@dataclass(frozen=True)
class Panel:
    """One chart of lines: ``xs[name]`` and ``ys[name]`` are matching sequences per series."""

    xs: dict[str, Sequence[float]]
    ys: dict[str, Sequence[float | None]]
    ylabel: str
    title: str = ""
    logy: bool = False
    zero_line: bool = False


#: default marker and dash per series, so series that coincide stay visible (later ones drawn smaller, dashed)
MARKERS = "osD^v<>ph*"
DASHES = ("-", "--", "-.", ":")


def _draw(ax, p: Panel, logx: bool, styles: dict[str, str]) -> None:
    for j, name in enumerate(p.ys):
        x = np.asarray(p.xs[name], dtype=float)
        y = np.asarray([np.nan if a is None else a for a in p.ys[name]], dtype=float)
        if name in styles:
            ax.plot(x, y, styles[name], label=name)
        else:
            ax.plot(
                x,
                y,
                marker=MARKERS[j % len(MARKERS)],
                ls=DASHES[j % len(DASHES)],
                ms=max(3.0, 6.5 - 0.7 * j),
                color=plt.get_cmap("tab10")(j % 10),
                label=name,
            )
    if logx:  # log axis, ticks at the values that were run, written as plain numbers
        ax.set_xscale("log", base=2)
        ticks = sorted({float(v) for name in p.ys for v in p.xs[name]})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    if p.logy:
        ax.set_yscale("log")
    if p.zero_line:
        ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylabel(p.ylabel)
    ax.set_title(p.title, fontsize=9)
    ax.grid(alpha=0.3, which="both" if p.logy else "major")


def line_panels(
    path: Path,
    panels: Sequence[Panel],
    *,
    xlabel: str,
    title: str,
    logx: bool = False,
    styles: dict[str, str] | None = None,
) -> Path:
    """Panels side by side over the same x axis, one legend (the first panel's)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels) + 0.4, 4.2), squeeze=False)
    for ax, p in zip(axes[0], panels):
        _draw(ax, p, logx, styles or {})
        ax.set_xlabel(xlabel)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save(fig, path)
    return path


def lines(
    path: Path,
    xs: dict[str, Sequence[float]],
    ys: dict[str, Sequence[float | None]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    styles: dict[str, str] | None = None,
    zero_line: bool = False,
) -> Path:
    """One chart, one line per series name."""
    return line_panels(
        path,
        [Panel(xs, ys, ylabel, logy=logy, zero_line=zero_line)],
        xlabel=xlabel,
        title=title,
        logx=logx,
        styles=styles,
    )


def heatmap(
    path: Path,
    rows: Sequence[str],
    cols: Sequence[str],
    values: np.ndarray,
    *,
    title: str,
    fmt: str = "{:,.0f}",
    colorbar: str = "",
    diverging: bool = False,
) -> Path:
    """A labelled grid of values (e.g. throughput over β × γ); each cell prints its value. ``diverging`` centres
    a red–blue scale on zero (for margins: blue better, red worse); all-empty columns are left out."""
    keep = ~np.all(np.isnan(values), axis=0) if values.size else np.ones(len(cols), bool)
    values = values[:, keep]
    cols = [c for c, k in zip(cols, keep) if k]
    fig, ax = plt.subplots(figsize=(max(7.5, 0.75 * len(cols) + 4.0), 0.34 * len(rows) + 2.2))
    finite = values[np.isfinite(values)]
    if diverging:
        lim = float(np.max(np.abs(finite))) if finite.size else 1.0
        im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, fontsize=7, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    mid = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            if np.isfinite(v):
                dark = abs(v) > 0.6 * lim if diverging else v <= mid
                ax.text(j, i, fmt.format(v), ha="center", va="center", color="w" if dark else "k", fontsize=6)
    fig.colorbar(im, ax=ax, label=colorbar)
    ax.set_title(title, fontsize=10)
    save(fig, path)
    return path
