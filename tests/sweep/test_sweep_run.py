"""Sweeps: process pool == in-process, the per-cell cache, the CLI, and resume after a kill."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from dpbalance.cli.main import app
from dpbalance.results.schema import TABLE_FIELDS
from dpbalance.sweep import expand, run_cells

DETERMINISTIC = (
    "throughput_tok_s",
    "avg_imbalance_gap",
    "avg_imbalance_maxmin",
    "idle_fraction",
    "energy_j",
    "tpot_p95_ms",
    "ttft_p99_s",
    "steps",
    "completed",
    "makespan_s",
)


def small_cells():
    return expand(
        {"trace": "sample", "max_requests": 300, "slots": 8},
        {
            "policy": ["jsq_tokens", "random", "fcfs"],
            "workers": [2, 4],
            "load": [{"arrival": "saturated"}, {"arrival": "replay", "rate_scale": 10}],
        },
    )


def test_pool_equals_inline_and_cache_resumes(tmp_path):
    cells = small_cells()
    a = run_cells(cells, tmp_path / "pool", processes=2)
    b = run_cells(cells, tmp_path / "inline", processes=1)
    assert a.computed == b.computed == len(cells) == 12
    for x, y in zip(a.outcomes, b.outcomes):
        assert x.cell == y.cell
        for f in DETERMINISTIC:
            assert getattr(x.result, f) == getattr(y.result, f), f
        assert x.result.completed == 300
    # a second run computes nothing and returns the same numbers
    c = run_cells(cells, tmp_path / "pool", processes=2)
    assert c.computed == 0 and c.cached == 12 and all(o.cached for o in c.outcomes)
    assert [o.result.avg_imbalance_gap for o in c.outcomes] == [o.result.avg_imbalance_gap for o in a.outcomes]
    # a grown grid computes only the new cells
    more = cells + expand({"trace": "sample", "max_requests": 300, "slots": 8, "policy": "p2c"})
    d = run_cells(more, tmp_path / "pool", processes=1)
    assert d.computed == 1 and d.cached == 12


def test_cell_json_is_a_section4_result_with_the_cell(tmp_path):
    cells = small_cells()[:2]
    rep = run_cells(cells, tmp_path, processes=1)
    for o in rep.outcomes:
        d = json.loads((tmp_path / "cells" / f"{o.hash}.json").read_text())
        assert set(TABLE_FIELDS) <= set(d)
        assert d["config"]["sweep"]["hash"] == o.hash
        assert d["config"]["sweep"]["cell"]["policy"] == o.cell.policy.label
        assert d["config"]["sweep"]["replayed"] == 300
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 2 and rows[0]["cell_hash"] == rep.outcomes[0].hash
    assert float(rows[0]["throughput_tok_s"]) == pytest.approx(rep.outcomes[0].result.throughput_tok_s)
    assert len(json.loads((tmp_path / "results.json").read_text())) == 2
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return
    t = pq.read_table(tmp_path / "results.parquet")
    assert t.num_rows == 2 and "avg_imbalance_maxmin" in t.column_names


def test_corrupt_cache_file_is_recomputed(tmp_path):
    cells = small_cells()[:1]
    rep = run_cells(cells, tmp_path, processes=1)
    p = tmp_path / "cells" / f"{rep.outcomes[0].hash}.json"
    p.write_text("{ truncated")
    rep2 = run_cells(cells, tmp_path, processes=1)
    assert rep2.computed == 1
    assert json.loads(p.read_text())["steps"] == rep.outcomes[0].result.steps


def test_cli_sweep_and_dry_run(tmp_path):
    g = tmp_path / "grid.yaml"
    g.write_text(
        "name: cli\nbase: {trace: sample, max_requests: 200, slots: 8, workers: 2}\n"
        "axes: {policy: [jsq_count, round_robin]}\n"
    )
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", "--grid", str(g), "--out", str(tmp_path / "o"), "--processes", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "results.csv").exists()
    assert len(list((tmp_path / "o" / "cells").glob("*.json"))) == 2
    r = runner.invoke(app, ["sweep", "--grid", str(g), "--out", str(tmp_path / "o"), "--dry-run"])
    assert r.exit_code == 0 and r.output.count("yes") == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: {policy: [nope]}\n")
    r = runner.invoke(app, ["sweep", "--grid", str(bad), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "unknown policy 'nope'" in r.output


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    g = tmp_path / "grid.yaml"
    g.write_text("base: {trace: sample, max_requests: 100}\n")
    r = CliRunner().invoke(app, ["sweep", "--grid", str(g), "--backend", "ray", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "pip install -e '.[ray]'" in r.output.replace("\n", "")


def test_killed_sweep_resumes_only_missing_cells(tmp_path):
    """Run a sweep in a subprocess, kill it once some cells are cached, re-run: cached cells are not recomputed."""
    g = tmp_path / "grid.yaml"
    # G = 1, B = 2 makes each cell ~70k decode steps (~0.3 s), so the sweep is still running when killed
    g.write_text(
        "name: kill\nbase: {trace: sample, max_requests: 400, workers: 1, slots: 2}\n"
        "axes:\n  policy: [jsq_tokens, jsq_count, fcfs, round_robin, random, p2c]\n  seed: [0, 1, 2]\n"
    )
    out = tmp_path / "o"
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dpbalance", "sweep", "--grid", str(g), "--out", str(out), "-j", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    cells_dir = out / "cells"
    deadline = time.time() + 60
    while time.time() < deadline:
        if cells_dir.exists() and len(list(cells_dir.glob("*.json"))) >= 3:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.json")}
    assert 3 <= len(done_before) < 18, f"kill came too late or too early: {len(done_before)} cells cached"
    from dpbalance.sweep import load_grid

    grid = load_grid(g)
    rep = run_cells(grid.cells, out, processes=1)
    assert rep.cached == len(done_before)
    assert rep.computed == 18 - len(done_before)
    for name, mtime in done_before.items():
        assert (cells_dir / name).stat().st_mtime_ns == mtime  # not rewritten
    assert len(list(cells_dir.glob("*.json"))) == 18
    assert not list(cells_dir.glob("*.tmp"))
