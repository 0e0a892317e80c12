"""The BF-IO theory check: on i.i.d. synthetic requests, FCFS's imbalance grows with the system size while the
look-ahead policies' grows sublinearly, so the reduction factor grows with B and G."""

from __future__ import annotations

import math

import numpy as np

from . import figures
from .base import WL, Ctx, Experiment, Results
from .render import Section, fnum

LABELS = ("fcfs", "jsq_tokens", "brh:predictor=oracle", "bfio:predictor=oracle")


def axes(ctx: Ctx) -> tuple[list[int], list[int], int, int, int]:
    """(B values at G = 8, G values at fixed B, that B, mean output μ, turnovers per slot)."""
    if ctx.quick:
        return [8, 16, 32], [2, 4, 8], 16, 50, 10
    if ctx.level >= 2:
        return [8, 16, 32, 64], [2, 4, 8, 16, 32], 16, 100, 10
    return [8, 16, 32, 64, 128], [2, 4, 8, 16, 32, 64], 16, 100, 12


def synthetic(n: int, mu: int, seed: int = 1) -> str:
    return f"synthetic:n={n},prompt=uniform,prompt_min=64,prompt_max=4096,output=geometric,output_mean={mu},seed={seed}"


def bfio_runs_at(ctx: Ctx, G: int, B: int) -> bool:
    """The exact MILP runs only on the small points, and never in --quick."""
    return not ctx.quick and G <= 8 and B <= 32


def cells(ctx: Ctx) -> list:
    Bs, Gs, Bg, mu, turns = axes(ctx)
    pts = [(8, B) for B in Bs] + [(G, Bg) for G in Gs if G != 8 or Bg not in Bs]
    out = []
    for G, B in pts:
        n = turns * G * B
        wl = WL(f"synthetic n={n}", synthetic(n, mu))
        out += [
            wl.cell(f"theory|synthetic|{lab}", lab, workers=G, slots=B, arrival="saturated")
            for lab in LABELS
            if lab != "bfio:predictor=oracle" or bfio_runs_at(ctx, G, B)
        ]
    return out


def slope(x, y) -> float:
    """Least-squares slope of log y against log x over the positive points (nan with fewer than two)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def series(ctx: Ctx, R: Results, axis: str) -> tuple[dict[str, list], dict[str, list]]:
    """Per policy: the x values (B or G) and the gap (per worker along G) at each point that ran."""
    Bs, Gs, Bg, _, _ = axes(ctx)
    pts = [(8, B) for B in Bs] if axis == "B" else [(G, Bg) for G in Gs]
    xs: dict[str, list] = {}
    ys: dict[str, list] = {}
    for lab in LABELS:
        for G, B in pts:
            r = R.get(f"theory|synthetic|{lab}", workers=G, slots=B)
            if r is not None:
                xs.setdefault(lab, []).append(B if axis == "B" else G)
                ys.setdefault(lab, []).append(r.avg_imbalance_gap / (1 if axis == "B" else G))
    return xs, ys


def slopes(ctx: Ctx, R: Results) -> dict[tuple[str, str], float]:
    out = {}
    for axis in ("B", "G"):
        xs, ys = series(ctx, R, axis)
        out.update({(axis, lab): slope(xs[lab], ys[lab]) for lab in ys})
    return out


def _verdicts(sl: dict) -> list[tuple[str, str, float, float]]:
    """(axis, policy, FCFS slope, policy slope) for every look-ahead policy with both slopes."""
    out = []
    for axis in ("B", "G"):
        f = sl.get((axis, "fcfs"), math.nan)
        for lab in ("bfio:predictor=oracle", "brh:predictor=oracle"):
            b = sl.get((axis, lab), math.nan)
            if math.isfinite(f) and math.isfinite(b):
                out.append((axis, lab, f, b))
    return out


def render(ctx: Ctx, R: Results) -> Section:
    ctx.note(
        "theory",
        "`bfio` (exact MILP per dispatch) runs only at G ≤ 8 and B ≤ 32 here, for time"
        + (", and not at all in --quick" if ctx.quick else "")
        + "; its slopes use those points.",
    )
    Bs, Gs, Bg, mu, turns = axes(ctx)
    sec = Section().text(
        f"Synthetic i.i.d. workload as in the BF-IO analysis: prompts uniform on [64, 4096], outputs geometric with "
        f"mean μ = {mu}, overloaded (saturated arrivals, visible 4·G), {turns}·G·B requests per point (≈ {turns} "
        "turnovers of every slot), steady window. We fit the log-log slope of the average imbalance gap G·M − ΣL "
        f"against B (G = 8) and of the per-worker gap (G·M − ΣL)/G against G (B = {Bg}). The BF-IO theory: FCFS's "
        "average imbalance has a lower bound that grows with the system size, BF-IO's gap grows sublinearly, so the "
        "reduction factor grows with B and G. We check: FCFS slope > 0, look-ahead policy slope < 1 and below "
        "FCFS's."
    )
    rows = []
    for axis in ("B", "G"):
        xs, ys = series(ctx, R, axis)
        for lab in ys:
            sl = slope(xs[lab], ys[lab])
            rows.append([axis, lab, " / ".join(fnum(v) for v in ys[lab]), f"{sl:.2f}" if math.isfinite(sl) else "–"])
        if ys:
            p = figures.lines(
                ctx.out_dir / f"theory_{axis}.png",
                xs,
                ys,
                xlabel=axis,
                ylabel="avg imbalance G·M − ΣL" + ("" if axis == "B" else " per worker") + " (log)",
                title=f"synthetic geometric(μ={mu}): imbalance vs {axis} (log-log)",
                logx=True,
                logy=True,
            )
            sec.figure(p, f"theory {axis}")
    sec.table(["axis", "policy", f"gap at B = {Bs} / per-worker gap at G = {Gs}", "log-log slope"], rows)
    yes = lambda c: "yes" if c else "**no**"  # noqa: E731
    return sec.bullets(
        [
            f"{axis}: FCFS slope {f:.2f}, {lab} slope {b:.2f}. FCFS grows with {axis}: {yes(f > 0)}; "
            f"{lab} sublinear (slope < 1): {yes(b < 1.0)}; reduction factor FCFS ÷ {lab} grows with "
            f"{axis} (slope below FCFS's): {yes(b < f)}."
            for axis, lab, f, b in _verdicts(slopes(ctx, R))
        ]
    )


def summary(ctx: Ctx, R: Results) -> list[list[str]]:
    return [
        [
            f"Reduction factor FCFS ÷ {lab} grows with {axis} (synthetic)",
            "yes (theory)",
            f"{'yes' if b < f else 'no'} (log-log slopes FCFS {f:.2f}, {lab} {b:.2f})",
        ]
        for axis, lab, f, b in _verdicts(slopes(ctx, R))
    ]


EXPERIMENT = Experiment(
    "theory", "BF-IO theory check (synthetic i.i.d., geometric outputs)", render, cells=cells, summary=summary
)
