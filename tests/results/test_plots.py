"""The plots read honestly: bars from zero, the measurement window shaded, tails and rates computed right."""

import numpy as np
import pytest
from matplotlib import pyplot as plt

from dpbalance.results import plots
from dpbalance.results.schema import Series
from tests.helpers import saturated_runs


@pytest.fixture(scope="module")
def runs():
    return saturated_runs(
        ("fcfs", "jsq_tokens", "br0"), n=400, max_prompt=5000, max_output=120, G=4, B=8, seed=3, name="p"
    )


def _windows(ax):
    return [p for p in ax.patches if str(p.get_label()).startswith("measurement window")]


def test_bars_start_at_zero(runs):
    fig = plots.throughput_energy_figure(runs, "fcfs")
    for ax in fig.axes:
        assert ax.get_ylim()[0] == 0.0
        assert all(bar.get_y() == 0.0 for bar in ax.patches)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert any(lab.endswith("×1.00") for lab in labels)  # the baseline's own ratio is printed on its bar
    plt.close(fig)


def test_every_time_plot_shades_the_window(runs):
    first_end = min(s.window_end_t for _, s in runs)
    for make in (plots.imbalance_figure, plots.idle_figure, plots.throughput_occupancy_figure):
        fig = make(runs)
        for ax in fig.axes:
            (span,) = _windows(ax)
            assert span.get_x() == 0.0 and span.get_width() == pytest.approx(first_end)
        plt.close(fig)
    fig = plots.worker_loads_figure(runs)
    for ax, (_, s) in zip(fig.axes, runs):  # one panel per run, each with its own window
        (span,) = _windows(ax)
        assert span.get_width() == pytest.approx(s.window_end_t)
    plt.close(fig)
    assert all(s.window_end_t < s.t[-1] for _, s in runs)  # saturated runs drain after the window


def _series(t, tokens, wait=(), ttft=()):
    n = len(t)
    return Series(
        t=np.asarray(t, float),
        maxmin=np.zeros(n),
        gap=np.zeros(n),
        idle=np.zeros(n),
        tokens=np.asarray(tokens, float),
        sample_t=np.empty(0),
        sample_rows=np.empty((0, 2)),
        ttft=np.asarray(ttft, float),
        tpot_ms=np.empty(0),
        e2e=np.empty(0),
        wait=np.asarray(wait, float),
        window_end_t=float(t[-1]),
    )


def test_throughput_and_occupancy_in_bins_by_hand():
    # steps of 0.1 s, 4 tokens each, for 1 s, then nothing for 1 s: G·B = 8 slots, half busy
    s = _series(np.arange(1, 11) * 0.1, [4] * 10)
    edges = np.array([0.0, 0.5, 1.0, 2.0])
    assert plots.throughput_in_bins(s, edges) == pytest.approx([40.0, 40.0, 0.0])
    assert (plots.throughput_in_bins(s, edges) * np.diff(edges)).sum() == pytest.approx(40)  # every token counted
    assert plots.occupancy_in_bins(s, edges, workers=2, slots=4) == pytest.approx([0.5, 0.5, 0.0])


def test_tails_are_complementary_cdfs_on_log_axes():
    fig, ax = plt.subplots()
    plots._ccdf(ax, np.array([0.0, 1e-12, 0.5, 1.0, 2.0]), "k", "x")
    xy = ax.lines[0].get_xydata()
    # P(X ≥ x) over five values; waits below the 1 ms floor are not drawn on the log axis
    assert xy.tolist() == [[0.5, 0.6], [1.0, 0.4], [2.0, pytest.approx(0.2)]]
    plt.close(fig)
    fig = plots.queueing_figure([(r, s) for r, s in _runs_with_tails()])
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in fig.axes)
    plt.close(fig)


def _runs_with_tails():
    from dpbalance.results.schema import Result

    s = _series([1.0, 2.0], [1, 1], wait=[0.0, 0.2, 3.0], ttft=[0.1, 0.3, 3.1])
    r = Result(
        **{f: 0 for f in Result.__dataclass_fields__ if f not in ("window", "label", "config", "schema_version")}
    )
    return [(r, s)]
