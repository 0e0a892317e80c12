"""BR-H sensitivity: throughput over a β × γ grid at H = 80, then over H at the default β and γ."""

from __future__ import annotations

import numpy as np

from . import figures, paper
from .base import Ctx, Experiment, Results, best_by_throughput
from .paper import PAPER_B
from .render import Section, fnum, gain, pct
from .workloads import PAPER_BASELINES, baselines, focus_wl

SIM = {"workers": 8, "slots": PAPER_B, "arrival": "saturated"}


def grid(ctx: Ctx) -> tuple[list[float], list[float], list[int]]:
    """(β values, γ values, H values), smaller in --quick and at higher budget levels."""
    if ctx.quick:
        return [8.0, 43.0], [0.8, 0.9], [20, 80]
    if ctx.level >= 2:
        return [4.0, 8.0, 43.0], [0.8, 0.9], [20, 80, 120]
    if ctx.level == 1:
        return [2.0, 8.0, 43.0], [0.8, 0.9, 0.95], [20, 40, 80, 120]
    return [2.0, 8.0, 43.0, 200.0], [0.7, 0.86, 0.9, 0.95], [10, 20, 40, 80, 120]


def cells(ctx: Ctx) -> list:
    wl = focus_wl(ctx)
    betas, gammas, Hs = grid(ctx)
    out = [wl.cell(f"sens|{wl.label}|{b}", b, **SIM) for b in baselines(ctx)]
    out += [
        wl.cell_for(f"sens|{wl.label}|bg", f"brh:beta={beta:g},gamma={gamma:g},H=80", "oracle", **SIM)
        for beta in betas
        for gamma in gammas
    ]
    out += [wl.cell_for(f"sens|{wl.label}|H", f"brh:H={H}", "oracle", **SIM) for H in Hs]
    return out


def _config(outcome):
    """The typed BR-H configuration a sensitivity cell ran (explicit options and defaults alike)."""
    return outcome.cell.policy.config


def _best_baseline(ctx: Ctx, R: Results, label: str):
    return best_by_throughput(R.labelled(f"sens|{label}|", baselines(ctx)), PAPER_BASELINES)


def render(ctx: Ctx, R: Results) -> Section:
    wl = focus_wl(ctx)
    betas, gammas, Hs = grid(ctx)
    bb_lab, bb = _best_baseline(ctx, R, wl.label)
    outs = R.by_tag.get(f"sens|{wl.label}|bg", [])
    hs = R.by_tag.get(f"sens|{wl.label}|H", [])
    sec = Section().text(
        f"BR-H (oracle) on {wl.label}, G = 8, B = 72, saturated. Grid over β ∈ {betas} × γ ∈ {gammas} at H = 80, "
        f"then H ∈ {Hs} at the default β, γ. Best baseline: {bb_lab} "
        f"({fnum(bb.throughput_tok_s) if bb else '–'} tok/s)."
    )
    if not outs or bb is None:
        return sec.text("No sensitivity results.")
    tput = np.full((len(betas), len(gammas)), np.nan)
    for o in outs:
        cfg = _config(o)
        tput[betas.index(float(cfg.beta)), gammas.index(float(cfg.gamma))] = o.result.throughput_tok_s
    all_t = [o.result.throughput_tok_s for o in outs + hs]
    all_p = [o.result.tpot_p95_ms for o in outs + hs]
    beat = sum(t > bb.throughput_tok_s for t in all_t)
    lo, hi = paper.BR_SENSITIVITY["throughput"]
    plo, phi = paper.BR_SENSITIVITY["tpot_p95_ms"]
    pbb = paper.BR_SENSITIVITY["best_baseline"]
    sec.text(
        f"**Range:** throughput {fnum(min(all_t))}–{fnum(max(all_t))} tok/s "
        f"({pct(min(all_t) / bb.throughput_tok_s - 1)} to {pct(max(all_t) / bb.throughput_tok_s - 1)} vs the best "
        f"baseline), TPOT P95 {fnum(min(all_p))}–{fnum(max(all_p))} ms; {beat} of {len(all_t)} configurations "
        f"beat the best baseline. Paper (Proprietary, G = 8): {fnum(lo)}–{fnum(hi)} tok/s = "
        f"{pct(lo / pbb - 1)} to {pct(hi / pbb - 1)} over its best baseline ({fnum(pbb)}), TPOT P95 "
        f"{plo}–{phi} ms, every configuration beats the best baseline."
    )
    p = figures.heatmap(
        ctx.out_dir / "sens_beta_gamma.png",
        [f"β={b:g}" for b in betas],
        [f"γ={g:g}" for g in gammas],
        tput,
        title="BR-H oracle window throughput (tok/s), H = 80",
        colorbar="tok/s",
    )
    sec.figure(p, "sensitivity heatmap")
    rows = []
    for o in sorted(hs, key=lambda o: _config(o).H):
        r = o.result
        rows.append(
            [
                f"`{r.policy}`",
                fnum(r.throughput_tok_s),
                pct(gain(r, bb)),
                fnum(r.avg_imbalance_maxmin),
                fnum(r.tpot_p95_ms),
                fnum(r.ttft_p99_s),
                fnum(r.dispatch_us_p50 / 1000),
                fnum(r.dispatch_us_p99 / 1000),
            ]
        )
    return sec.table(
        [
            "policy spec",
            "tok/s window",
            "vs best baseline",
            "max–min",
            "TPOT P95 ms",
            "TTFT P99 s",
            "dispatch P50 ms",
            "dispatch P99 ms",
        ],
        rows,
    )


def summary(ctx: Ctx, R: Results) -> list[list[str]]:
    wl = focus_wl(ctx)
    bb = _best_baseline(ctx, R, wl.label)[1]
    outs = R.by_tag.get(f"sens|{wl.label}|bg", []) + R.by_tag.get(f"sens|{wl.label}|H", [])
    if bb is None or not outs:
        return []
    ts = [gain(o.result, bb) for o in outs]
    return [
        [
            "BR-H (β, γ, H) sensitivity: gain range; all beat the best baseline",
            paper.CLAIMS["sensitivity"],
            f"{min(ts) * 100:+.1f} … {max(ts) * 100:+.1f} %; {'yes' if min(ts) > 0 else 'no'} ({wl.label})",
        ]
    ]


EXPERIMENT = Experiment("sensitivity", "BR-H sensitivity (β, γ, H)", render, cells=cells, summary=summary)
