"""The BF-IO paper's B and G sweeps on its three workloads: the imbalance gap and its reduction over FCFS."""

from __future__ import annotations

from . import figures
from .base import WL, Ctx, Experiment, Results
from .render import Section, fnum, pct, ratio

TRACES = ("bfio-arxiv", "bfio-burst", "bfio-longbench")
LABELS = ("fcfs", "jsq_tokens", "br0", "brh:predictor=oracle", "bfio:predictor=oracle")


def axes(ctx: Ctx) -> tuple[list[int], list[int], int, int]:
    """(B values at G = 8, G values at fixed B, that B, base request count)."""
    if ctx.quick:
        return [16, 64], [4, 16], 16, 800
    if ctx.level >= 2:
        return [16, 32, 64, 128], [4, 8, 16, 32, 64], 16, 8000
    if ctx.level == 1:
        return [16, 32, 64, 128, 256], [4, 8, 16, 32, 64, 128], 16, 8000
    return [16, 32, 64, 128, 256], [4, 8, 16, 32, 64, 128, 256], 16, 8000


def bfio_runs_at(ctx: Ctx, trace: str, G: int, B: int) -> bool:
    """Where the slow exact-MILP ``bfio`` runs (never in --quick)."""
    return not ctx.quick and ((trace == "bfio-arxiv" and G <= 16 and B <= 64) or (G, B) == (8, 16))


def workload(trace: str, G: int, B: int, n0: int) -> WL:
    """The first ``n0`` requests, or a seeded joint bootstrap of 4·G·B rows where that is more."""
    need = 4 * G * B
    if need <= n0:
        return WL(trace, trace, max_requests=n0)
    return WL(f"{trace} resampled n={need}", trace, resample=need)


def _points(ctx: Ctx) -> list[tuple[int, int]]:
    Bs, Gs, Bg, _ = axes(ctx)
    pts = [(8, B) for B in Bs]
    return pts + [(G, Bg) for G in Gs if (G, Bg) not in pts]


def cells(ctx: Ctx) -> list:
    n0 = axes(ctx)[3]
    traces = [t for t in TRACES if t in ctx.traces][: ctx.q(len(TRACES), 1)]
    return [
        workload(t, G, B, n0).cell(f"bfio|{t}|{lab}", lab, workers=G, slots=B, arrival="saturated")
        for t in traces
        for G, B in _points(ctx)
        for lab in LABELS
        if lab != "bfio:predictor=oracle" or bfio_runs_at(ctx, t, G, B)
    ]


def render(ctx: Ctx, R: Results) -> Section:
    ctx.note(
        "bfio",
        "The exact-MILP `bfio` policy solves a HiGHS program at every dispatch (50 ms time limit), "
        "100–1000× slower than the others, so it runs "
        + (
            "nowhere in this section in --quick."
            if ctx.quick
            else "only on bfio-arxiv with G ≤ 16 and B ≤ 64, and at G = 8, B = 16 on the other traces; `brh` "
            "(oracle) is the same objective solved by the fast F-score machinery everywhere."
        ),
    )
    Bs, Gs, Bg, n0 = axes(ctx)
    sec = Section().text(
        f"The BF-IO paper's three workloads, saturated arrivals (visible 4·G), steady window, oracle lengths for the "
        f"look-ahead policies. B sweep at G = 8; G sweep at B = {Bg}. Where 4·G·B exceeds the trace's first "
        f"{n0:,} requests, a seeded joint bootstrap of 4·G·B rows is used so every point has several batch "
        "turnovers. Imbalance = average G·M − ΣL (the BF-IO objective, token·workers); reduction = FCFS ÷ policy."
    )
    if not any(R.outcomes(f"bfio|{t}|") for t in TRACES):
        return sec.text(f"None of the BF-IO workloads ({', '.join(TRACES)}) is in the trace directory.")
    for t in TRACES:
        if not R.outcomes(f"bfio|{t}|"):
            continue
        for axis, pts, fixed in (("B", [(8, B) for B in Bs], "G = 8"), ("G", [(G, Bg) for G in Gs], f"B = {Bg}")):
            rows, xs, ys = [], {}, {}
            for G, B in pts:
                fc = R.get(f"bfio|{t}|fcfs", workers=G, slots=B)
                for lab in LABELS:
                    r = R.get(f"bfio|{t}|{lab}", workers=G, slots=B)
                    if r is None:
                        continue
                    x = B if axis == "B" else G
                    rows.append(
                        [
                            str(x),
                            lab,
                            fnum(r.avg_imbalance_gap),
                            fnum(ratio(fc.avg_imbalance_gap, r.avg_imbalance_gap)) if fc else "–",
                            fnum(r.idle_fraction),
                            fnum(r.throughput_tok_s),
                            fnum(r.throughput_all_tok_s),
                            fnum(r.energy_j_per_token),
                            pct(ratio(r.energy_j_per_token, fc.energy_j_per_token) - 1) if fc else "–",
                        ]
                    )
                    xs.setdefault(lab, []).append(x)
                    ys.setdefault(lab, []).append(r.avg_imbalance_gap)
            if not rows:
                continue
            sec.heading(f"{t}: {axis} sweep ({fixed})")
            sec.table(
                [
                    axis,
                    "policy",
                    "imbalance G·M−ΣL",
                    "reduction ÷",
                    "idle",
                    "tok/s window",
                    "tok/s whole run",
                    "J/token",
                    "energy vs FCFS",
                ],
                rows,
            )
            p = figures.lines(
                ctx.out_dir / f"bfio_{t}_{axis}.png",
                xs,
                ys,
                xlabel=axis,
                ylabel="avg imbalance G·M − ΣL (log)",
                title=f"{t}: imbalance vs {axis} ({fixed})",
                logx=True,
                logy=True,
            )
            sec.figure(p, f"{t} {axis} sweep")
    return sec.text(
        "Paper: the reduction factor of BF-IO over FCFS grows with B and with G; > 40 % barrier idle under FCFS."
    )


EXPERIMENT = Experiment("bfio", "BF-IO experiments (B and G sweeps on the BF-IO workloads)", render, cells=cells)
