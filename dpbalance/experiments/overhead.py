"""Dispatch overhead: the policies' own decision time per call, from the main-table runs."""

from __future__ import annotations

from . import main_table, paper
from .base import Ctx, Experiment, Results
from .render import Section, fnum
from .workloads import main_workloads

SHOWN = (
    "jsq_tokens",
    "br0",
    "brh:predictor=oracle",
    "brh:predictor=survival",
    "brh:predictor=exact_match",
    "bfio:predictor=oracle",
)


def render(ctx: Ctx, R: Results) -> Section:
    p50, p99 = paper.BR_OVERHEAD_MS["p50"], paper.BR_OVERHEAD_MS["p99"]
    sec = Section().text(
        "Policy wall time per dispatch call that had waiting requests and free slots (in the simulator, pure Python "
        "and numpy, on the machine that produced this report), G = 8, saturated with 32 visible requests. Paper "
        f"(BR-H proxy, G = 8, R_max = 4, several hundred waiting requests): P50 {p50[0]}–{p50[1]} ms, "
        f"P99 {p99[0]}–{p99[1]} ms."
    )
    rows = [
        [wl.label, lab, fnum(r.dispatch_us_p50 / 1000), fnum(r.dispatch_us_p99 / 1000)]
        for wl in main_workloads(ctx)
        for lab, r in main_table.results(ctx, R, wl).items()
        if lab in SHOWN
    ]
    return (
        sec.table(["workload", "policy", "dispatch P50 ms", "dispatch P99 ms"], rows)
        if rows
        else sec.text("No results.")
    )


def _p50_p99_ms(r) -> str:
    return f"{fnum(r.dispatch_us_p50 / 1e3)} / {fnum(r.dispatch_us_p99 / 1e3)} ms"


def summary(ctx: Ctx, R: Results) -> list[list[str]]:
    return [
        [
            "BR-H dispatch P50 / P99 (G = 8)",
            paper.CLAIMS["brh_dispatch"],
            main_table.per_workload(
                ctx,
                R,
                ("brh:predictor=oracle",),
                lambda r: _p50_p99_ms(r["brh:predictor=oracle"]),
            ),
        ]
    ]


EXPERIMENT = Experiment("overhead", "Dispatch overhead", render, summary=summary, needs=("main",), follows="main")
