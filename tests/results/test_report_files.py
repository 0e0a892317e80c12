"""Report details not covered by test_report.py: safe file names, every table number, series round-trip."""

import math

import numpy as np
import pytest

from dpbalance.results.report import COLUMNS, _fmt, finished, markdown_table, ratios, safe_name, write_report
from dpbalance.results.schema import Series, read_results
from tests.helpers import saturated_runs


@pytest.fixture(scope="module")
def runs():
    return saturated_runs(
        ("round_robin", "jsq_tokens", "br0:preset=paper"), n=200, max_prompt=3000, max_output=60, G=3, B=6, seed=1
    )


def test_safe_names_and_series_roundtrip(tmp_path, runs):
    write_report(tmp_path, runs)
    for res, s in runs:
        p = tmp_path / "series" / f"{safe_name(res.name)}.npz"
        assert p.exists() and not set(p.name) & set(":=,")
        back = Series.load(p)
        np.testing.assert_array_equal(back.maxmin, s.maxmin)
    assert [r.name for r in read_results(tmp_path / "results.json")] == [r.name for r, _ in runs]


def test_default_baseline_is_first_without_jsq_count(tmp_path, runs):
    md = write_report(tmp_path, runs).read_text()
    assert "Ratios against `round_robin`" in md
    rat = ratios([r for r, _ in runs])
    b, x = runs[0][0], runs[2][0]
    assert rat[x.name]["tpot_p95_ms"] == pytest.approx(x.tpot_p95_ms / b.tpot_p95_ms)


def test_every_table_cell_is_the_result_field(runs):
    for res, _ in runs:
        row = [c.strip() for c in markdown_table([res]).splitlines()[2].strip("|").split("|")]
        assert row[0] == f"`{res.name}`" and row[-1] == finished(res) == f"{res.completed}/{res.requests}"
        for cell, (_, f, fmt, _) in zip(row[1:-1], COLUMNS):
            v = getattr(res, f)
            assert cell == ("–" if not math.isfinite(v) else fmt.format(v))
    assert _fmt("{:.1f}", math.nan) == "–"
