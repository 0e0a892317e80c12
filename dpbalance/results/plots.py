"""PNG plots for comparison reports (matplotlib, Agg backend, no global style changes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .schema import Result, Series  # noqa: E402

DPI = 110
WIDE = (9.5, 4.2)


def _smooth(t: np.ndarray, y: np.ndarray, points: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Bucket means so 10^5-step series stay readable."""
    if len(y) <= points:
        return t, y
    k = int(np.ceil(len(y) / points))
    n = len(y) // k * k
    return t[:n].reshape(-1, k).mean(1), y[:n].reshape(-1, k).mean(1)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path.name


def imbalance_over_time(runs: list[tuple[Result, Series]], path: Path) -> str:
    fig, ax = plt.subplots(figsize=WIDE)
    for res, s in runs:
        t, y = _smooth(s.t, s.maxmin)
        ax.plot(t, np.maximum(y, 1), label=res.name, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("max − min worker load (tokens)")
    ax.set_title("Load imbalance over time (bucket means)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def idle_over_time(runs: list[tuple[Result, Series]], path: Path) -> str:
    fig, ax = plt.subplots(figsize=WIDE)
    for res, s in runs:
        t, y = _smooth(s.t, s.idle)
        ax.plot(t, 100 * y, label=f"{res.name} (mean {100 * res.idle_fraction:.1f} %)", lw=1.2)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("barrier idle (% of worker time)")
    ax.set_title("Idle fraction I / (G·M) over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def worker_loads(runs: list[tuple[Result, Series]], path: Path) -> str:
    n = len(runs)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.8, 2.8 * rows + 0.6), squeeze=False, sharey=True)
    for ax, (res, s) in zip(axes.flat, runs):
        if len(s.sample_rows):
            t, rows_ = s.sample_t, s.sample_rows
            if len(t) > 800:
                idx = np.linspace(0, len(t) - 1, 800).astype(int)
                t, rows_ = t[idx], rows_[idx]
            ax.plot(t, rows_ / 1e3, lw=0.5, alpha=0.6)
            ax.plot(t, rows_.max(1) / 1e3, color="k", lw=1.0, label="max (envelope)")
            ax.plot(t, rows_.min(1) / 1e3, color="k", lw=1.0, ls="--", label="min")
        ax.set_title(res.name, fontsize=9)
        ax.set_xlabel("time (s)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("worker load (k tokens)", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Per-worker token load (thin lines: each worker)", fontsize=10)
    return _save(fig, path)


def _cdf(ax, x: np.ndarray, label: str) -> None:
    if len(x) == 0:
        return
    xs = np.sort(x)
    ys = np.arange(1, len(xs) + 1) / len(xs)
    if len(xs) > 2000:
        idx = np.linspace(0, len(xs) - 1, 2000).astype(int)
        xs, ys = xs[idx], ys[idx]
    ax.plot(xs, ys, label=label, lw=1.2)


def latency_cdfs(runs: list[tuple[Result, Series]], path: Path) -> str:
    fig, (a, b) = plt.subplots(1, 2, figsize=WIDE)
    for res, s in runs:
        _cdf(a, s.ttft, res.name)
        _cdf(b, s.tpot_ms, res.name)
    a.set_xlabel("TTFT (s)")
    b.set_xlabel("TPOT (ms)")
    for ax, title in ((a, "Time to first token"), (b, "Time per output token")):
        ax.set_ylabel("fraction of requests")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    a.set_xscale("symlog", linthresh=0.01)
    b.legend(fontsize=8)
    return _save(fig, path)


def throughput_energy_bars(runs: list[tuple[Result, Series]], baseline: str | None, path: Path) -> str:
    names = [r.name for r, _ in runs]
    tput = [r.throughput_tok_s for r, _ in runs]
    ej = [r.energy_j_per_token for r, _ in runs]
    colors = ["tab:gray" if n == baseline else "tab:blue" for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(9.5, 1.1 * len(names) + 3), 4.4))
    x = np.arange(len(names))
    a.bar_label(a.bar(x, tput, color=colors), fmt="%.0f", fontsize=7)
    a.set_ylabel("throughput (output tok/s)")
    a.set_title("Throughput (measurement window)")
    b.bar_label(b.bar(x, ej, color=[("tab:gray" if n == baseline else "tab:green") for n in names]), fmt="%.3f", fontsize=7)
    b.set_ylabel("energy per output token (J)")
    b.set_title("Energy per token")
    for ax, vals in ((a, tput), (b, ej)):
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        finite = [v for v in vals if np.isfinite(v)]
        if finite:
            lo, hi = min(finite), max(finite)
            ax.set_ylim(max(0.0, lo - 0.25 * (hi - lo + 1e-9) - 0.02 * hi), hi * 1.04)
    if baseline:
        a.text(0.01, 0.97, f"gray: baseline {baseline}", transform=a.transAxes, va="top", fontsize=8)
    return _save(fig, path)
