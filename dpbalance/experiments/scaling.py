"""Scaling with G: the gain of br0 and brh over the best baseline as the number of workers grows."""

from __future__ import annotations

import math

from . import figures, paper
from .base import OURS, WL, Ctx, Experiment, Results, best_by_throughput
from .paper import PAPER_B
from .render import Section, fnum, gain, pct, ratio
from .workloads import ANCHOR_TRACE, BASELINES, PAPER_BASELINES, PAPER_JSQ, baselines

SHOWN = ("br0", "brh:predictor=oracle", "brh:predictor=exact_match")


def gs(ctx: Ctx) -> list[int]:
    return ctx.q([4, 8, 16, 32, 64], [4, 8, 16])


def _trace(ctx: Ctx) -> str:
    return ANCHOR_TRACE if ANCHOR_TRACE in ctx.traces else "sample"


def workloads(ctx: Ctx) -> list[tuple[int, WL]]:
    """(G, workload): the first requests of the trace, or a seeded joint bootstrap of its rows where that would
    give fewer than ~625 requests per worker (every G then sees a comparable number of batch turnovers)."""
    out = []
    per_worker, base_n = ctx.q(625, 100), ctx.q(10_000, 1_000)
    trace = _trace(ctx)
    for G in gs(ctx):
        need = per_worker * G
        if need <= base_n:
            out.append((G, ctx.held_out(trace, trace, None, base_n)))
        else:
            out.append((G, WL(f"{trace} resampled n={need}", trace, train_split=0.2, resample=need)))
    if not ctx.quick and ctx.level == 0 and "vidur-arxiv" in ctx.traces:
        for G in gs(ctx):
            out.append(
                (
                    G,
                    WL(
                        f"vidur-arxiv >1000 resampled n={150 * G}",
                        "vidur-arxiv",
                        1001,
                        train_split=0.2,
                        resample=150 * G,
                    ),
                )
            )
    return out


def _labels(ctx: Ctx) -> tuple[str, ...]:
    return SHOWN[:2] if ctx.quick or ctx.level >= 2 else SHOWN


def cells(ctx: Ctx) -> list:
    return [
        wl.cell(f"scaling|{wl.trace}|{lab}", lab, workers=G, slots=PAPER_B, arrival="saturated")
        for G, wl in workloads(ctx)
        for lab in (*baselines(ctx), *_labels(ctx))
    ]


def results(ctx: Ctx, R: Results, trace: str, G: int) -> dict:
    return {lab: r for lab in (*baselines(ctx), *OURS) if (r := R.get(f"scaling|{trace}|{lab}", workers=G))}


def _table(ctx: Ctx, R: Results, trace: str, xs: dict, ys: dict) -> list[list[str]]:
    rows = []
    for G, wl in workloads(ctx):
        if wl.trace != trace:
            continue
        res = results(ctx, R, trace, G)
        bb_lab, bb = best_by_throughput(res, PAPER_BASELINES)
        ab_lab, ab = best_by_throughput(res, BASELINES)
        if bb is None:
            continue
        row = [str(G), f"{bb_lab} {fnum(bb.throughput_tok_s)}"]
        for lab in SHOWN:
            g = gain(res.get(lab), bb)
            row.append(pct(g))
            if lab in res:
                xs.setdefault(f"{lab} ({trace})", []).append(G)
                ys.setdefault(f"{lab} ({trace})", []).append(100 * g)
        pp = paper.BR_SCALING.get(G)
        row.append(f"{pct(pp[1] / pp[0] - 1)} / {pct(pp[2] / pp[0] - 1)}" if pp else "–")
        jsq, br0 = res.get(PAPER_JSQ), res.get("br0")
        row.append(fnum(ratio(jsq.avg_imbalance_maxmin, br0.avg_imbalance_maxmin)) if jsq and br0 else "–")
        bh = res.get("brh:predictor=oracle") or br0
        row.append(f"{ab_lab} {pct(gain(bh, ab))}" if bh and ab else "–")
        rows.append(row)
    return rows


def render(ctx: Ctx, R: Results) -> Section:
    sec = Section().text(
        "Window throughput gain over the best baseline (best of the papers' baselines random, round_robin, p2c, "
        "jsq_count, jsq_tokens, fcfs at each G; the last column uses the best of every baseline including the "
        "engines' rules) as G grows, B = 72, saturated (visible 4·G). Where 10,000 trace requests would give fewer "
        "than ~625 requests per worker (G ≥ 32), the workload is a seeded joint bootstrap of the trace's (prompt, "
        "output) rows with 625·G requests, so every G sees a comparable number of batch turnovers; the long-output "
        "series bootstraps vidur-arxiv's > 1000-token rows (150·G requests). The paper's G = 16 point used a 5P1D "
        "topology (fewer prefill nodes per decode worker); our simulator has no prefill bottleneck."
    )
    xs: dict[str, list] = {}
    ys: dict[str, list] = {}
    traces = sorted({wl.trace for _, wl in workloads(ctx)}, key=lambda t: t != ANCHOR_TRACE)
    for trace in traces:
        desc = {
            ANCHOR_TRACE: f"{ANCHOR_TRACE} (first {ctx.q(10_000, 1_000):,} requests; joint bootstrap of "
            f"{ctx.q(625, 100)}·G rows where that is more)",
            "vidur-arxiv": "vidur-arxiv, outputs > 1000 (joint bootstrap of 150·G rows)",
        }.get(trace, trace)
        sec.heading(desc).table(
            [
                "G",
                "best baseline tok/s",
                "br0 gain",
                "brh:predictor=oracle gain",
                "brh:predictor=exact_match gain",
                "paper BR-0 / BR-H oracle gain",
                "JSQ ÷ br0 imbalance",
                "best of all baselines incl. engine rules: brh:predictor=oracle gain",
            ],
            _table(ctx, R, trace, xs, ys),
        )
    for name, col in (("paper BR-0", 1), ("paper BR-H oracle", 2)):
        xs[name] = list(paper.BR_SCALING)
        ys[name] = [100 * (v[col] / v[0] - 1) for v in paper.BR_SCALING.values()]
    p = figures.lines(
        ctx.out_dir / "scaling_gain.png",
        xs,
        ys,
        xlabel="G (data-parallel workers)",
        ylabel="throughput gain over the best baseline, %",
        title="Window throughput gain vs G (B = 72, saturated); black: the BalanceRoute paper",
        logx=True,
        styles={"paper BR-0": "k--", "paper BR-H oracle": "k:"},
        zero_line=True,
    )
    sec.figure(p, "gain vs G")
    trends = []
    for name in (k for k in ys if not k.startswith("paper")):
        v = [x for x in ys[name] if x is not None and math.isfinite(x)]
        if len(v) >= 2:
            trends.append(
                f"{name}: gain {'grows' if v[-1] > v[0] else 'does not grow'} with G ({v[0]:+.1f} % at "
                f"G = {xs[name][0]} → {v[-1]:+.1f} % at G = {xs[name][-1]})."
            )
    return sec.bullets(trends + [f"Paper (Proprietary): {paper.CLAIMS['scaling_prop']}."])


def summary(ctx: Ctx, R: Results) -> list[list[str]]:
    trace = _trace(ctx)
    g = []
    for G in (4, 8, 16):
        res = results(ctx, R, trace, G)
        bb = best_by_throughput(res, PAPER_BASELINES)[1]
        if bb and "brh:predictor=oracle" in res:
            g.append(pct(gain(res["brh:predictor=oracle"], bb)))
    if not g:
        return []
    return [["BR-H oracle gain at G = 4 / 8 / 16", paper.CLAIMS["brh_scaling"], f"{' / '.join(g)} ({trace})"]]


EXPERIMENT = Experiment("scaling", "Scaling with G", render, cells=cells, summary=summary)
