"""``dpbalance reproduce --quick`` end to end: every report section is there and the numbers are sane."""

import json
import math
import re

import pytest
from typer.testing import CliRunner

from dpbalance.cli.main import app
from dpbalance.policies import POLICIES
from dpbalance.sweep.reproduce import EXPERIMENTS

SECTIONS = ["Summary: paper figures vs ours", "BalanceRoute main table", "SPEC §8 anchors", "Scaling with G", "BR-H sensitivity", "BF-IO experiments",
            "BF-IO theory check", "Barrier idle and energy", "Predictor accuracy", "Distance to the offline optimum",
            "Load regimes beyond the paper", "Dispatch overhead", "Deviations from the papers"]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    r = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.timeout(400)
def test_quick_report_has_every_section(quick_report):
    md = (quick_report / "report.md").read_text()
    heads = re.findall(r"^## \d+\. (.+)$", md, flags=re.M)
    for s in SECTIONS:
        assert any(h.startswith(s) for h in heads), f"missing section {s!r}; have {heads}"
    assert "Rendering failed" not in md
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (quick_report / img).is_file(), img
    assert len(re.findall(r"!\[", md)) >= 5
    assert "paper" in md.lower() and "÷ JSQ" in md


def test_quick_report_numbers_are_sane(quick_report):
    results = json.loads((quick_report / "results.json").read_text())
    assert len(results) >= 40
    for r in results:
        assert r["completed"] == r["requests"] > 0
        assert r["throughput_tok_s"] > 0 and math.isfinite(r["throughput_tok_s"])
        assert 0.0 <= r["idle_fraction"] < 1.0
        assert r["avg_imbalance_maxmin"] >= 0 and r["avg_imbalance_gap"] >= r["avg_imbalance_maxmin"] - 1e-6
        assert r["energy_j_per_token"] > 0
        assert r["tpot_p95_ms"] >= r["tpot_p50_ms"] > 0
    # FCFS must be clearly worse balanced than JSQ(tokens) on the saturated long-output workload of the main table
    main = {}
    for r in results:
        tag = r["label"]
        if tag.startswith("main|"):
            _, wl, lab = tag.split("|")
            main.setdefault(wl, {})[lab] = r
    assert main, "no main-table results"
    for wl, res in main.items():
        assert res["jsq_tokens"]["avg_imbalance_gap"] < res["fcfs"]["avg_imbalance_gap"], wl
        if "br0" in res:  # once BalanceRoute is in the build it must beat token-JSQ on balance
            assert res["br0"]["avg_imbalance_maxmin"] < res["jsq_tokens"]["avg_imbalance_maxmin"], wl


def test_only_selects_experiments_and_rejects_unknown(tmp_path):
    r = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(tmp_path), "--only", "theory"])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "report.md").read_text()
    assert "BF-IO theory check" in md and "BalanceRoute main table" not in md
    r = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(tmp_path), "--only", "nope"])
    assert r.exit_code == 2 and "valid:" in r.output
    assert set(EXPERIMENTS) >= {"main", "scaling", "sensitivity", "bfio", "theory", "energy", "predictors", "optimal",
                                "regimes"}


def test_plan_shrinks_to_fit_the_time_budget(tmp_path):
    from dpbalance.sweep.reproduce import run_reproduce

    class Cap:
        def __init__(self):
            self.lines = []

        def print(self, *a, **k):
            self.lines.append(" ".join(map(str, a)))

    roomy, tight = Cap(), Cap()
    assert run_reproduce(tmp_path, dry_run=True, budget_min=10_000, console=roomy, only=["bfio", "theory"]) is None
    run_reproduce(tmp_path, dry_run=True, budget_min=0.1, console=tight, only=["bfio", "theory"])

    def cells(cap):
        total = [ln for ln in cap.lines if ln.strip().startswith("total")][0]
        return int(total.split()[1]), "grid level 0" in total

    n_roomy, level0 = cells(roomy)
    n_tight, tight_level0 = cells(tight)
    assert level0 and not tight_level0
    assert n_tight < n_roomy
    assert not (tmp_path / "report.md").exists()  # a dry run simulates nothing


def test_user_supplied_azure_2024_trace_is_used_with_the_papers_filter(tmp_path):
    """With azure-conv-2024 in --trace-dir, the main table runs the paper's setting (outputs > 1000)."""
    from dpbalance.sweep.reproduce import Ctx, main_cells, run_reproduce

    tdir = tmp_path / "traces"
    tdir.mkdir()
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(60):
        out = 1200 + 10 * i if i % 2 else 300  # half the rows pass the > 1000 filter
        lines.append(f"2024-05-10 00:00:{i:02d}.009930+00:00,{500 + 7 * i},{out}")
    import gzip

    with gzip.open(tdir / "azure-conv-2024.csv.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")

    class Cap:
        lines: list = []

        def print(self, *a, **k):
            self.lines.append(" ".join(map(str, a)))

    cap = Cap()
    run_reproduce(tmp_path / "out", quick=True, trace_dir=str(tdir), dry_run=True, only=["main"], console=cap)
    assert "azure-conv-2024" in cap.lines[0]
    ctx = Ctx(quick=True, out_dir=tmp_path, trace_dir=str(tdir), traces={"azure-conv-2024"})
    cells = main_cells(ctx)
    assert cells and {c.trace for c in cells} == {"azure-conv-2024"}
    assert all(c.min_output == 1001 for c in cells)
    assert "paper" in cells[0].tag
