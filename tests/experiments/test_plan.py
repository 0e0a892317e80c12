"""The time budget: the estimate by hand, and the plan shrinking to fit — without simulating anything."""

import gzip

import pytest

from dpbalance.experiments import main_table, plan
from dpbalance.experiments.base import WL, Ctx
from dpbalance.experiments.driver import run_reproduce
from dpbalance.experiments.registry import BY_NAME
from dpbalance.sweep.grid import Cell


def fixed_costs(families):
    return {f: 1e-3 for f in families}


def size_from_selection(cell):
    """(requests, mean output) straight from the cell's settings: no trace is read."""
    return cell.trace.resample or cell.trace.max_requests or 1000, 100.0


def test_cell_estimate_by_hand():
    wl = WL("w", "sample", max_requests=1000)
    br0 = wl.cell("t", "br0", workers=8, slots=72, arrival="saturated")
    # 1000 requests × 100 tokens over 8 × 72 slots at 90 % occupancy = 192.9 steps; look-ahead cost grows as
    # 0.3 + 0.7·G/8 = 1 at G = 8; plus 0.1 s per cell
    assert plan.cell_seconds(br0, 1e-3, 1000, 100.0) == pytest.approx(1000 * 100 / (8 * 72 * 0.9) * 1e-3 + 0.1)
    jsq16 = wl.cell("t", "jsq_tokens", workers=16, slots=72, arrival="replay")
    # replay counts 1.5× the steps; a baseline's cost grows as 0.7 + 0.3·G/8 = 1.3 at G = 16
    assert plan.cell_seconds(jsq16, 1e-3, 1000, 100.0) == pytest.approx(
        1000 * 100 / (16 * 72 * 0.9) * 1.5 * 1e-3 * 1.3 + 0.1
    )
    bfio = wl.cell("t", "bfio", workers=8, slots=72, arrival="saturated")
    assert plan.cell_seconds(bfio, 1e-6, 1000, 100.0) == pytest.approx(
        1000 * 100 / (8 * 72 * 0.9) * plan.SOLVER_MIN_STEP_S + 0.1
    )  # the MILP is never estimated cheaper than this


def test_families_keep_the_predictor_and_drop_other_options():
    assert plan.family(Cell(policy="brh:beta=8,gamma=0.9,H=80", predictor="oracle")) == "brh:predictor=oracle"
    assert plan.family(Cell(policy="brh:predictor=survival,H=20")) == "brh:predictor=survival"
    assert plan.family(Cell(policy="jsq_count")) == "jsq_count"


def _ctx(tmp_path, quick=False):
    return Ctx(quick=quick, out_dir=tmp_path, trace_dir=None, traces={"bfio-arxiv", "bfio-burst", "bfio-longbench"})


def test_plan_shrinks_to_fit_the_budget(tmp_path):
    exps = [BY_NAME["bfio"], BY_NAME["theory"]]
    roomy = plan.make_plan(_ctx(tmp_path), exps, budget_s=1e9, processes=2, costs=fixed_costs, size=size_from_selection)
    tight_ctx = _ctx(tmp_path)
    tight = plan.make_plan(tight_ctx, exps, budget_s=1.0, processes=2, costs=fixed_costs, size=size_from_selection)
    assert roomy.level == 0 and tight.level == plan.MAX_LEVEL == tight_ctx.level
    assert len(tight.all_cells) < len(roomy.all_cells)
    assert tight.estimate_s < roomy.estimate_s
    assert roomy.estimate_s == pytest.approx(
        plan.estimate_seconds(
            roomy.all_cells, fixed_costs({plan.family(c) for c in roomy.all_cells}), size_from_selection
        )
        / 2
    )
    assert "grid level 0" in roomy.lines()[-1] and f"{len(roomy.all_cells)} cells" in roomy.lines()[-1]


def test_quick_keeps_its_grid_whatever_the_budget(tmp_path):
    p = plan.make_plan(
        _ctx(tmp_path, quick=True),
        [BY_NAME["bfio"]],
        budget_s=0.001,
        processes=1,
        costs=fixed_costs,
        size=size_from_selection,
    )
    assert p.level == 0 and p.all_cells


def test_dry_run_prints_the_plan_and_simulates_nothing(tmp_path, monkeypatch):
    def no_simulation(*a, **k):
        raise AssertionError("a dry run with given costs must not simulate")

    monkeypatch.setattr(plan, "run_simulation", no_simulation)
    lines = []

    class Console:
        def print(self, *a, **k):
            lines.append(" ".join(map(str, a)))

    assert (
        run_reproduce(tmp_path, dry_run=True, budget_min=0.01, console=Console(), only=["theory"], costs=fixed_costs)
        is None
    )
    total = [ln for ln in lines if ln.strip().startswith("total")]
    assert total and f"grid level {plan.MAX_LEVEL}" in total[0]
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "cells").exists()


def test_user_supplied_azure_2024_trace_runs_the_papers_setting(tmp_path):
    """With azure-conv-2024 in the trace directory, the main table runs the paper's filter (outputs > 1000)."""
    tdir = tmp_path / "traces"
    tdir.mkdir()
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(60):
        out = 1200 + 10 * i if i % 2 else 300  # half the rows pass the > 1000 filter
        rows.append(f"2024-05-10 00:00:{i:02d}.009930+00:00,{500 + 7 * i},{out}")
    with gzip.open(tdir / "azure-conv-2024.csv.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    ctx = Ctx(quick=True, out_dir=tmp_path, trace_dir=str(tdir), traces={"azure-conv-2024"})
    cells = main_table.cells(ctx)
    assert cells and {c.trace.trace for c in cells} == {"azure-conv-2024"}
    assert all(c.trace.min_output == 1001 for c in cells)
    assert "paper" in cells[0].tag
    # 30 rows pass the filter, fewer than the 1,000 asked for: the first 20 % train, the rest is replayed
    assert all(c.trace.train_split == 0.2 for c in cells)
    lines = []

    class Console:
        def print(self, *a, **k):
            lines.append(" ".join(map(str, a)))

    run_reproduce(tmp_path / "out", quick=True, trace_dir=str(tdir), dry_run=True, only=["main"], console=Console())
    assert "azure-conv-2024" in lines[0]
