"""Report writer: files, images, tables and ratios computed against the right baseline."""

import json
import math

import numpy as np
import pytest

from dpbalance.core import Workload
from dpbalance.results.report import format_table, markdown_table, ratios, write_report
from dpbalance.sim import SimConfig, run_simulation


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(0)
    w = Workload.from_arrays(np.zeros(300), rng.integers(100, 5000, 300), rng.integers(1, 80, 300), name="r")
    cfg = SimConfig(workers=4, slots=8, arrival="saturated")
    return [run_simulation(w, p, cfg) for p in ("fcfs", "jsq_count", "jsq_tokens")]


def test_ratios_against_named_and_default_baseline(runs):
    results = [r for r, _ in runs]
    rat = ratios(results)  # jsq_count is the default baseline
    assert rat["jsq_count"]["throughput_tok_s"] == 1.0
    f = results[0]
    assert rat["fcfs"]["avg_imbalance_maxmin"] == pytest.approx(f.avg_imbalance_maxmin / results[1].avg_imbalance_maxmin)
    rat2 = ratios(results, "fcfs")
    assert rat2["fcfs"]["energy_j_per_token"] == 1.0
    with pytest.raises(ValueError):
        ratios(results, "nope")


def test_write_report_files(tmp_path, runs):
    path = write_report(tmp_path, runs, baseline="jsq_tokens", title="T")
    md = path.read_text()
    assert md.startswith("# T") and "Ratios against `jsq_tokens`" in md
    assert "p_idle_w = 100" in md  # energy figures come with their constants
    pngs = list(tmp_path.glob("*.png"))
    assert len(pngs) == 5
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"]({p.name})" in md
    assert len(json.loads((tmp_path / "results.json").read_text())) == 3
    assert len(list((tmp_path / "series").glob("*.npz"))) == 3
    # the table rows carry the Result numbers
    for r, _ in runs:
        assert f"{r.throughput_tok_s:,.0f}" in markdown_table([r])


def test_nan_fields_render_as_dash(runs):
    r = runs[0][0]
    r2 = type(r)(**{**r.__dict__, "tpot_p95_ms": math.nan, "label": "nan-run"})
    assert "–" in markdown_table([r2])
    assert format_table([r, r2], baseline=r.name).row_count == 2
