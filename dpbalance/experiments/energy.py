"""Barrier idle and energy: how much of the decode time workers wait at the barrier, and the energy per token
each policy saves, under two power models."""

from __future__ import annotations

from . import figures, main_table, paper
from .base import Ctx, Experiment, Results
from .paper import PAPER_B
from .render import Section, fnum, pct, ratio
from .workloads import ANCHOR_TRACE, main_workloads

LABELS = ("fcfs", "jsq_count", "br0", "brh:predictor=oracle", "brh:predictor=exact_match")
SHOWN = (
    "fcfs",
    "jsq_count",
    "jsq_tokens",
    "br0",
    "brh:predictor=oracle",
    "brh:predictor=exact_match",
    "bfio:predictor=oracle",
)
BUSY_IDLE = "busy_idle"


def cells(ctx: Ctx) -> list:
    return [
        wl.cell(f"energy|{wl.label}|{lab}", lab, workers=8, slots=PAPER_B, arrival="saturated", energy=BUSY_IDLE)
        for wl in main_workloads(ctx)
        if not ctx.quick or wl.trace == ANCHOR_TRACE
        for lab in LABELS
    ]


def _saved(r, ref) -> str:
    return pct(1 - ratio(r.energy_j_per_token, ref.energy_j_per_token)) if r and ref else "–"


def render(ctx: Ctx, R: Results) -> Section:
    sec = Section().text(
        "Barrier idle and energy at G = 8, B = 72, saturated (the main-table runs). Energy covers the whole run, "
        "drain included; whenever no decode step runs the cluster draws its idle power. Two power models: "
        "`bfio_power` (the BF-IO paper's model: P(u) = 100 W + 300 W·u^0.7 per worker, u = L_g / max L) and "
        "`busy_idle` (a worker draws P_busy while computing its own share C + t_tok·L_g and P_idle while waiting at "
        "the barrier; the constants are in each result's config). Savings are energy per token relative to FCFS "
        "and to JSQ (count). *idle* is the barrier-idle share over the steady window."
    )
    rows, groups, save = [], [], {lab: [] for lab in SHOWN if lab != "fcfs"}
    for wl in main_workloads(ctx):
        res = main_table.results(ctx, R, wl)
        fc, jq = res.get("fcfs"), res.get("jsq_count")
        if not fc:
            continue
        bi = R.labelled(f"energy|{wl.label}|", LABELS)
        groups.append(wl.label)
        for lab in SHOWN:
            r = res.get(lab)
            if r is None:
                continue
            rb = bi.get(lab)
            rows.append(
                [
                    wl.label,
                    lab,
                    fnum(r.idle_fraction),
                    fnum(r.energy_j_per_token),
                    _saved(r, fc),
                    _saved(r, jq),
                    fnum(rb.idle_fraction) if rb else "–",
                    _saved(rb, bi.get("fcfs")),
                ]
            )
        for lab in save:
            r = res.get(lab)
            save[lab].append(100 * (1 - ratio(r.energy_j_per_token, fc.energy_j_per_token)) if r else None)
    if not rows:
        return sec.text("No energy results.")
    sec.table(
        [
            "workload",
            "policy",
            "idle",
            "J/token (bfio_power)",
            "saved vs FCFS",
            "saved vs JSQ",
            "idle (busy_idle run)",
            "saved vs FCFS (busy_idle)",
        ],
        rows,
    )
    p = figures.grouped_bars(
        ctx.out_dir / "energy_saving.png",
        groups,
        {"": save},
        ylabel="energy per token saved vs FCFS, %",
        title="Energy saving over FCFS (bfio_power model, whole run)",
    )
    sec.figure(p, "energy saving")
    idle = _fcfs_idle(ctx, R)
    over = [lab for lab, v in idle if v > paper.BFIO_IDLE_FCFS]
    sec.text(
        "BF-IO paper: > 40 % barrier idle under FCFS on production traces; here FCFS idles "
        + ", ".join(f"{lab} {v * 100:.0f} %" for lab, v in idle)
        + f" ({len(over)} of {len(idle)} workloads above 40 %). Paper energy reduction: "
        f"{paper.BFIO_ENERGY_SAVING:.0%} in experiments, > {paper.BFIO_FLEET_SAVING:.0%} projected at fleet "
        "scale."
    )
    return sec.text(
        "How to read the savings: energy per token = whole-run energy / tokens. Balancing shortens the steps (τ "
        "follows the straggler) but raises the other workers' utilisation u_g and hence their power, so J/token "
        "falls only when the throughput gain outweighs the higher mean power. Under `bfio_power` an idle worker "
        "still draws P_idle = 100 W of the 400 W peak, which caps what balancing can save; the paper's 28 % comes "
        "from its own measured power curves, which we do not have."
    )


def _fcfs_idle(ctx: Ctx, R: Results) -> list[tuple[str, float]]:
    return [
        (wl.label, r.idle_fraction) for wl in main_workloads(ctx) if (r := main_table.results(ctx, R, wl).get("fcfs"))
    ]


def summary(ctx: Ctx, R: Results) -> list[list[str]]:
    rows = []
    idle = _fcfs_idle(ctx, R)
    if idle:
        v = [x for _, x in idle]
        rows.append(
            [
                "FCFS barrier idle",
                paper.CLAIMS["fcfs_idle"],
                f"{min(v) * 100:.0f}–{max(v) * 100:.0f} % over {len(v)} workloads "
                f"({sum(x > paper.BFIO_IDLE_FCFS for x in v)} above 40 %)",
            ]
        )
    sav = []
    for wl in main_workloads(ctx):
        res = main_table.results(ctx, R, wl)
        best = next((lab for lab in ("bfio:predictor=oracle", "brh:predictor=oracle", "br0") if lab in res), None)
        if "fcfs" in res and best:
            sav.append(1 - res[best].energy_j_per_token / res["fcfs"].energy_j_per_token)
    if sav:
        rows.append(
            [
                "Energy saved vs FCFS (best look-ahead policy, bfio_power, whole run)",
                paper.CLAIMS["energy_saving"],
                f"{min(sav) * 100:+.0f} … {max(sav) * 100:+.0f} % over {len(sav)} workloads (see the energy "
                "section for why)",
            ]
        )
    return rows


EXPERIMENT = Experiment("energy", "Barrier idle and energy", render, cells=cells, summary=summary, needs=("main",))
