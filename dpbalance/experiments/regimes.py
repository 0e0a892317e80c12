"""Load regimes beyond the papers: trace timestamps replayed at a fraction of the measured capacity."""

from __future__ import annotations

import math

from ..sim.config import SimConfig
from ..sim.run import run_simulation
from ..sweep.runner import select_workload
from . import figures
from .base import WL, Ctx, Experiment, Results
from .paper import PAPER_B
from .render import Section, fnum, pct, ratio

REGIMES = (("light", 0.3), ("medium", 0.6), ("heavy", 0.9), ("overloaded", 1.3))
LABELS = ("jsq_count", "jsq_tokens", "round_robin", "vllm", "br0", "brh:predictor=oracle", "brh:predictor=exact_match")


def regimes(ctx: Ctx) -> tuple[tuple[str, float], ...]:
    return (REGIMES[0], REGIMES[3]) if ctx.quick else REGIMES


def workloads(ctx: Ctx) -> list[WL]:
    n = ctx.q(10_000, 1_000)
    traces = (
        ("mooncake-conversation",)
        if ctx.quick or ctx.level >= 2
        else ("mooncake-conversation", "azure-conv-2023")
        if ctx.level == 1
        else ("mooncake-conversation", "azure-conv-2023", "azure-code-2023")
    )
    out = [ctx.held_out(t, t, None, n) for t in traces if t in ctx.traces]
    return out or [ctx.held_out("sample (bundled)", "sample", None, ctx.q(1500, 600))]


def capacity(ctx: Ctx, wl: WL) -> tuple[float, float]:
    """(saturated jsq_tokens throughput in tok/s, the trace's demand at 1× in tok/s) for the replayed requests;
    simulated once per workload."""
    key = f"capacity|{wl.label}"
    if key not in ctx.computed:
        test, _ = select_workload(wl.cell("capacity", "jsq_tokens"), ctx.trace_dir)
        r, _ = run_simulation(test, "jsq_tokens", SimConfig(workers=8, slots=PAPER_B, arrival="saturated"))
        span = float(test.arrival[-1] - test.arrival[0])
        ctx.computed[key] = (r.throughput_tok_s, float(test.output.sum()) / span if span > 0 else math.nan)
    return ctx.computed[key]


def cells(ctx: Ctx) -> list:
    out = []
    for wl in workloads(ctx):
        cap, demand = capacity(ctx, wl)
        if not math.isfinite(demand):
            continue
        for name, rho in regimes(ctx):
            k = round(rho * cap / demand, 3)
            out += [
                wl.cell(
                    f"regime|{wl.label}|{lab}|{name}", lab, workers=8, slots=PAPER_B, arrival="replay", rate_scale=k
                )
                for lab in LABELS
            ]
    return out


def render(ctx: Ctx, R: Results) -> Section:
    sec = Section().text(
        "Trace timestamps replayed at a scaled rate so the offered load is a fraction ρ of the measured saturated "
        "capacity (JSQ-tokens throughput at G = 8, B = 72): light ρ = 0.3, medium 0.6, heavy 0.9, overloaded 1.3. "
        "The window is every step, so window and whole-run throughput are the same here. azure-conv-2023 and "
        "azure-code-2023 are short-output traffic (no > 1000 filter; azure-conv-2023's longest output is 1,000 "
        "tokens)."
    )
    for wl in workloads(ctx):
        cap, demand = capacity(ctx, wl)
        rows, xs, tpot, ttft = [], {}, {}, {}
        for name, rho in regimes(ctx):
            res = R.labelled(f"regime|{wl.label}|", [f"{lab}|{name}" for lab in LABELS])
            jq = res.get(f"jsq_count|{name}")
            for key, r in res.items():
                lab = key.split("|")[0]
                rows.append(
                    [
                        name,
                        f"{r.config['sim']['rate_scale']:g}×",
                        lab,
                        fnum(r.throughput_tok_s),
                        fnum(r.tpot_p95_ms),
                        fnum(r.ttft_p99_s),
                        fnum(r.wait_max_s),
                        fnum(r.avg_imbalance_maxmin),
                        fnum(r.energy_j_per_token),
                        pct(ratio(r.tpot_p95_ms, jq.tpot_p95_ms) - 1) if jq else "–",
                    ]
                )
                xs.setdefault(lab, []).append(rho)
                tpot.setdefault(lab, []).append(r.tpot_p95_ms)
                ttft.setdefault(lab, []).append(r.ttft_p99_s)
        if not rows:
            continue
        sec.heading(f"{wl.label} (capacity ≈ {fnum(cap)} tok/s; trace demand at 1× ≈ {fnum(demand)} tok/s)")
        sec.table(
            [
                "regime",
                "rate",
                "policy",
                "tok/s",
                "TPOT P95 ms",
                "TTFT P99 s",
                "max wait s",
                "max–min",
                "J/token",
                "TPOT P95 vs JSQ",
            ],
            rows,
        )
        p = figures.line_panels(
            ctx.out_dir / f"regimes_{wl.trace}.png",
            [
                figures.Panel(xs, tpot, "TPOT P95 (ms)", "time per output token"),
                figures.Panel(xs, ttft, "TTFT P99 (s, log)", "queueing: time to first token", logy=True),
            ],
            xlabel="offered load ρ (share of the measured capacity)",
            title=f"{wl.label}: latency vs load",
        )
        sec.figure(p, f"regimes {wl.trace}")
    return sec


EXPERIMENT = Experiment("regimes", "Load regimes beyond the papers", render, cells=cells)
