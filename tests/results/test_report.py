"""Report writer: files, images, tables and ratios computed against the right baseline; settings printed once."""

import json
import math
import re

import pytest

from dpbalance.results.report import FIGURES, format_table, markdown_table, ratios, write_report
from tests.helpers import saturated_runs


@pytest.fixture(scope="module")
def runs():
    return saturated_runs(("fcfs", "jsq_count", "jsq_tokens"), n=300, max_prompt=5000, max_output=80, G=4, B=8, seed=0)


def test_ratios_against_named_and_default_baseline(runs):
    results = [r for r, _ in runs]
    rat = ratios(results)  # jsq_count is the default baseline
    assert rat["jsq_count"]["throughput_tok_s"] == 1.0
    f, j = results[0], results[1]
    assert rat["fcfs"]["avg_imbalance_maxmin"] == pytest.approx(f.avg_imbalance_maxmin / j.avg_imbalance_maxmin)
    assert rat["fcfs"]["throughput_all_tok_s"] == pytest.approx(f.throughput_all_tok_s / j.throughput_all_tok_s)
    rat2 = ratios(results, "fcfs")
    assert rat2["fcfs"]["energy_j_per_token"] == 1.0
    with pytest.raises(ValueError):
        ratios(results, "nope")


def test_write_report_files(tmp_path, runs):
    path = write_report(tmp_path, runs, baseline="jsq_tokens", title="T")
    md = path.read_text()
    assert md.startswith("# T") and "Ratios against `jsq_tokens`" in md
    assert "p_idle_w = 100" in md  # energy figures come with their constants
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(name for _, name, _ in FIGURES)
    for p in tmp_path.glob("*.png"):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"]({p.name})" in md
    assert len(json.loads((tmp_path / "results.json").read_text())) == 3
    assert len(list((tmp_path / "series").glob("*.npz"))) == 3
    for r, _ in runs:  # the table rows carry the Result numbers
        assert f"{r.throughput_tok_s:,.0f}" in markdown_table([r])


def test_settings_are_printed_once(tmp_path, runs):
    md = write_report(tmp_path, runs, title="dpbalance compare — r").read_text()
    assert md.count("## Settings") == 1
    assert md.count("G = 4 workers × B = 8 slots") == 1
    assert md.count("`saturated`, 16 requests visible") == 1
    assert md.count("measurement window") >= 1 and md.count("| measurement window") == 1
    assert "these runs have other settings" not in md
    with pytest.raises(ValueError, match="repeats a setting"):
        write_report(tmp_path, runs, context={"cluster": "again"})


def test_tables_show_queueing_and_both_throughputs(runs):
    head = markdown_table([r for r, _ in runs]).splitlines()[0]
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols[1:5] == ["tok/s window", "tok/s whole run", "TTFT p99 s", "max wait s"]
    t = format_table([r for r, _ in runs])
    heads = [c.header for c in t.columns]
    for h in ("tok/s window", "tok/s whole", "TTFT p99 s", "max wait s", "finished"):
        assert h in heads
    assert "steady" in t.title


def test_nan_fields_render_as_dash(runs):
    r = runs[0][0]
    r2 = type(r)(**{**r.__dict__, "tpot_p95_ms": math.nan, "label": "nan-run"})
    assert "–" in markdown_table([r2])
    assert format_table([r, r2], baseline=r.name).row_count == 2


def test_finished_column_says_what_is_left(runs):
    r = runs[0][0]
    r2 = type(r)(**{**r.__dict__, "completed": r.requests - 3, "running": 2, "never_admitted": 1})
    row = markdown_table([r2]).splitlines()[2]
    assert re.search(rf"{r.requests - 3}/{r.requests} \(2 running, 1 never admitted\)", row)
