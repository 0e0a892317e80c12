"""PNG plots for comparison reports (matplotlib, Agg backend, no global style changes).

Every ``*_figure`` function builds and returns a matplotlib ``Figure`` (so tests can inspect its axes);
``save`` writes it and closes it. On every plot over time the measurement window is shaded: the metrics in
the tables average over that window, and what happens after it (the drain of a saturated run, when no new
request arrives and workers empty out one by one) is drawn faded.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .schema import Result, Series  # noqa: E402

DPI = 110
TIMELINE = (11.5, 4.2)  # time plots: the legend sits right of the axes
WINDOW_COLOR = "tab:blue"
Runs = list[tuple[Result, Series]]


def save(fig: Figure, path: Path) -> str:
    """Write ``fig`` as a PNG, close it and return the file name."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path).name


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _bucket_means(t: np.ndarray, y: np.ndarray, points: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Bucket means so 10^5-step series stay readable."""
    if len(y) <= points:
        return t, y
    k = int(np.ceil(len(y) / points))
    n = len(y) // k * k
    return t[:n].reshape(-1, k).mean(1), y[:n].reshape(-1, k).mean(1)


def shade_window(ax, runs: Runs) -> None:
    """Shade the measurement window: solid up to the earliest window end, lighter up to the latest."""
    ends = sorted(s.window_end_t for _, s in runs)
    whole = all(r.window == "all" for r, _ in runs)
    label = "measurement window" + (" (every step)" if whole else " (up to the last admission)")
    ax.axvspan(0.0, ends[0], color=WINDOW_COLOR, alpha=0.10, lw=0, label=label, zorder=0)
    if ends[-1] > ends[0] * 1.002:
        ax.axvspan(
            ends[0],
            ends[-1],
            color=WINDOW_COLOR,
            alpha=0.04,
            lw=0,
            zorder=0,
            label="window ends (dotted line per run)" if not whole else "runs end",
        )


def _legend_right(ax) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _line(ax, t: np.ndarray, y: np.ndarray, end: float, color, label: str, lw: float = 1.2) -> None:
    """Solid inside the run's window, faded after it, with a dotted mark at the window end."""
    inside = t <= end
    ax.plot(t[inside], y[inside], color=color, lw=lw, label=label)
    if (~inside).any():
        k = max(0, int(inside.sum()) - 1)
        ax.plot(t[k:], y[k:], color=color, lw=0.8, alpha=0.35)
        ax.axvline(end, color=color, ls=":", lw=0.9, alpha=0.8)


def imbalance_figure(runs: Runs) -> Figure:
    fig, ax = plt.subplots(figsize=TIMELINE)
    shade_window(ax, runs)
    for (res, s), c in zip(runs, _colors(len(runs))):
        t, y = _bucket_means(s.t, s.maxmin)
        _line(ax, t, np.maximum(y, 1), s.window_end_t, c, f"{res.name} (window mean {res.avg_imbalance_maxmin:,.0f})")
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("max − min worker load (tokens, log)")
    ax.set_title("Load imbalance over time (bucket means; faded: after the run's window)")
    ax.grid(alpha=0.3, which="both")
    _legend_right(ax)
    return fig


def idle_figure(runs: Runs) -> Figure:
    fig, ax = plt.subplots(figsize=TIMELINE)
    shade_window(ax, runs)
    for (res, s), c in zip(runs, _colors(len(runs))):
        t, y = _bucket_means(s.t, s.idle)
        _line(ax, t, 100 * y, s.window_end_t, c, f"{res.name} (window mean {100 * res.idle_fraction:.1f} %)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("barrier idle (% of worker time)")
    ax.set_title("Idle fraction (G·M − ΣL) / (G·M) over time (faded: after the run's window)")
    ax.grid(alpha=0.3)
    _legend_right(ax)
    return fig


def _time_bins(runs: Runs, n: int = 150) -> np.ndarray:
    t_max = max(float(s.t[-1]) for _, s in runs if len(s.t))
    return np.linspace(0.0, t_max, n + 1)


def throughput_in_bins(s: Series, edges: np.ndarray) -> np.ndarray:
    """Output tokens per second in each time bin; tokens are spread evenly over their step, so bins do not
    alias with the step length and the bins' tokens add up to the run's."""
    done = np.interp(edges, np.concatenate([[0.0], s.t]), np.concatenate([[0.0], np.cumsum(s.tokens)]))
    return np.diff(done) / np.diff(edges)


def occupancy_in_bins(s: Series, edges: np.ndarray, workers: int, slots: int) -> np.ndarray:
    """Share of the G·B slots busy in each time bin: the mean over the decode steps ending in it (0 when none).
    A step ending exactly on an edge ran before it, so bins are (a, b]."""
    n = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, s.t, side="left") - 1, 0, n - 1)
    tok = np.bincount(idx, weights=s.tokens, minlength=n)
    steps = np.bincount(idx, minlength=n)
    return np.divide(tok, steps * workers * slots, out=np.zeros(len(tok)), where=steps > 0)


def throughput_occupancy_figure(runs: Runs) -> Figure:
    """Top: output tokens per second in time bins. Bottom: share of the G·B slots that hold a request."""
    fig, (a, b) = plt.subplots(2, 1, figsize=(11.5, 6.6), sharex=True)
    edges = _time_bins(runs)
    mid = (edges[:-1] + edges[1:]) / 2
    for ax in (a, b):
        shade_window(ax, runs)
    for (res, s), c in zip(runs, _colors(len(runs))):
        _line(
            a,
            mid,
            throughput_in_bins(s, edges),
            s.window_end_t,
            c,
            f"{res.name} (window {res.throughput_tok_s:,.0f}, whole run {res.throughput_all_tok_s:,.0f} tok/s)",
        )
        _line(b, mid, 100 * occupancy_in_bins(s, edges, res.workers, res.slots), s.window_end_t, c, res.name)
    a.set_ylim(bottom=0)
    a.set_ylabel("output tokens / s")
    a.set_title("Throughput over time (time bins; faded: after the run's window)")
    _legend_right(a)
    b.set_ylim(0, 105)
    b.set_xlim(left=0)
    b.set_ylabel("slots busy (% of G·B)")
    b.set_xlabel("simulated time (s)")
    b.set_title("Slot occupancy over time (mean over the decode steps in each bin; 0 when none ran)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return fig


def worker_loads_figure(runs: Runs) -> Figure:
    n = len(runs)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols + 0.8, 2.8 * rows + 0.8), squeeze=False, sharex=True, sharey=True
    )
    top = max((float(s.sample_rows.max()) for _, s in runs if s.sample_rows.size), default=1.0) / 1e3
    t_end = max((float(s.t[-1]) for _, s in runs if len(s.t)), default=1.0)
    for ax, (res, s) in zip(axes.flat, runs):
        ax.axvspan(0.0, s.window_end_t, color=WINDOW_COLOR, alpha=0.10, lw=0, zorder=0, label="measurement window")
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
        ax.set_xlim(0, t_end)
        ax.set_ylim(0, 1.05 * top)
        ax.tick_params(labelbottom=True)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("worker load (k tokens)", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Per-worker token load (thin lines: each worker; shaded: measurement window)", fontsize=10)
    return fig


#: waits shorter than this count as "no wait" on the log axes (float noise is ~1e-16 s)
TAIL_FLOOR_S = 1e-3


def _ccdf(ax, x: np.ndarray, color, label: str) -> None:
    """P(X ≥ x) on log-log axes from ``TAIL_FLOOR_S`` on; the curve's left end is the share that waited at all."""
    x = np.sort(np.asarray(x, dtype=float)[np.isfinite(x)])
    if len(x) == 0:
        return
    p = 1.0 - np.arange(len(x)) / len(x)
    keep = x >= TAIL_FLOOR_S
    x, p = x[keep], p[keep]
    if len(x) > 3000:
        idx = np.unique(np.concatenate([np.linspace(0, len(x) - 1, 2500).astype(int), np.arange(len(x) - 500, len(x))]))
        x, p = x[idx], p[idx]
    ax.step(x, p, where="post", color=color, lw=1.2, label=label)


def queueing_figure(runs: Runs) -> Figure:
    """Tails of the wait for a slot and of the time to first token: complementary CDFs on log axes."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.5, 4.2 + 0.18 * ((len(runs) + 1) // 2)), sharey=True)
    for (res, s), c in zip(runs, _colors(len(runs))):
        _ccdf(a, s.wait, c, f"{res.name} (max {res.wait_max_s:.3g} s)")
        _ccdf(b, s.ttft, c, f"{res.name} (p99 {res.ttft_p99_s:.3g} s)")
    a.set_xlabel("wait for a slot: arrival → admission (s, log)")
    b.set_xlabel("time to first token (s, log)")
    a.set_ylabel("share of requests waiting at least this long (log)")
    for ax, title in ((a, f"Wait tail (waits under {TAIL_FLOOR_S * 1e3:g} ms not drawn)"), (b, "TTFT tail")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(left=TAIL_FLOOR_S)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        for p, txt in ((0.01, "1 % of requests"), (0.001, "0.1 %")):
            ax.axhline(p, color="k", lw=0.6, ls="--", alpha=0.5)
            ax.text(0.01, p, txt, transform=ax.get_yaxis_transform(), fontsize=7, va="bottom", ha="left", alpha=0.7)
    return fig


def tpot_figure(runs: Runs) -> Figure:
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for (res, s), c in zip(runs, _colors(len(runs))):
        if len(s.tpot_ms):
            xs = np.sort(s.tpot_ms)
            ys = np.arange(1, len(xs) + 1) / len(xs)
            if len(xs) > 2000:
                idx = np.linspace(0, len(xs) - 1, 2000).astype(int)
                xs, ys = xs[idx], ys[idx]
            ax.plot(xs, ys, color=c, lw=1.2, label=f"{res.name} (p95 {res.tpot_p95_ms:.1f} ms)")
    ax.set_xlabel("time per output token (ms)")
    ax.set_ylabel("share of requests at or below")
    ax.set_ylim(0, 1.02)
    ax.set_title("TPOT distribution (requests with more than one output token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def throughput_energy_figure(runs: Runs, baseline: str | None) -> Figure:
    """Bars from zero: throughput over the window and over the whole run, and energy per token; each bar is
    labelled with its value and its ratio to the baseline."""
    names = [r.name for r, _ in runs]
    base = next((r for r, _ in runs if r.name == baseline), None)
    fig, (a, b) = plt.subplots(
        1, 2, figsize=(max(10.0, 1.3 * len(names) + 4), 4.6), gridspec_kw={"width_ratios": [3, 2]}
    )
    x = np.arange(len(names))

    def label(v: float, ref: float | None, fmt: str) -> str:
        if not np.isfinite(v):
            return "–"
        return fmt.format(v) + (f"\n×{v / ref:.2f}" if ref and np.isfinite(ref) else "")

    w = 0.4
    win = [r.throughput_tok_s for r, _ in runs]
    whole = [r.throughput_all_tok_s for r, _ in runs]
    bw = a.bar(x - w / 2, win, w, color="tab:blue", label="measurement window")
    ba = a.bar(x + w / 2, whole, w, color="tab:orange", label="whole run")
    a.bar_label(bw, [label(v, base and base.throughput_tok_s, "{:,.0f}") for v in win], fontsize=6)
    a.bar_label(ba, [label(v, base and base.throughput_all_tok_s, "{:,.0f}") for v in whole], fontsize=6)
    a.set_ylabel("output tokens / s")
    a.set_title("Throughput (bars from zero; × = ratio to the baseline)", fontsize=10)
    a.legend(fontsize=7, loc="upper center", ncol=2)
    ej = [r.energy_j_per_token for r, _ in runs]
    be = b.bar(x, ej, 0.6, color=["tab:gray" if n == baseline else "tab:green" for n in names])
    b.bar_label(be, [label(v, base and base.energy_j_per_token, "{:.3f}") for v in ej], fontsize=6)
    b.set_ylabel("energy per output token, whole run (J)")
    b.set_title("Energy per token (gray: baseline)", fontsize=10)
    for ax, vals, head in ((a, win + whole, 1.3), (b, ej, 1.15)):
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        finite = [v for v in vals if np.isfinite(v)]
        ax.set_ylim(0.0, head * max(finite) if finite else 1.0)
    if baseline:
        fig.suptitle(f"baseline: {baseline}", fontsize=9, x=0.01, ha="left")
    return fig
