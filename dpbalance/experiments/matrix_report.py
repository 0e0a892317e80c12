"""The regime matrix report: per cell, the default policy's margin over the strongest other policy on each metric,
every cell where it loses with the evidence for why, the heat maps, and the BR-H / BF-IO cross-section."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

import numpy as np

from ..policies import DEFAULT_POLICY
from ..policies.balanceroute.config import PRESETS
from ..sweep.runner import SweepReport
from . import figures
from .matrix import B_LIST, G_LIST, H0, LOADS, TRAIN_TRACES
from .render import Section, fnum, pct, write_markdown
from .workloads import BASELINES

#: (label, Result field, higher is better, tolerance of the criterion: the default may be this much worse)
CRITERIA = (
    ("throughput (whole run)", "throughput_all_tok_s", True, 0.005),
    ("max–min (whole run)", "maxmin_all", False, 0.10),
    ("TPOT p95", "tpot_p95_ms", False, 0.02),
)
REPORTED = (
    ("throughput (window)", "throughput_tok_s", True),
    ("max–min (window)", "avg_imbalance_maxmin", False),
    ("TTFT p99", "ttft_p99_s", False),
    ("longest wait", "wait_max_s", False),
)
AUTHORS = "H0 (authors' code)"
WAIT_CAP_S = float(PRESETS["default"]["max_wait_s"])  # the default's overtaking window (overdue after it)


def cell_means(rep: SweepReport, authors: dict) -> dict[tuple, dict[str, dict[str, float]]]:
    """{(trace, G, B, load): {policy: {field: mean over seeds, field + '_sd': standard error}}}."""
    acc: dict[tuple, dict[str, list]] = {}
    for o in rep.outcomes:
        _, trace, G, B, load, pol, seed = o.cell.tag.split("|")
        acc.setdefault((trace, int(G), int(B), load), {}).setdefault(pol, []).append(o.result)
    fields = [f for _, f, *_ in CRITERIA] + [f for _, f, _ in REPORTED]
    out: dict[tuple, dict[str, dict[str, float]]] = {}
    for key, by_pol in acc.items():
        out[key] = {}
        for pol, rs in by_pol.items():
            d = {}
            for f in fields:
                v = np.array([getattr(r, f) for r in rs], dtype=float)
                d[f] = float(np.mean(v))
                d[f + "_sd"] = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
            out[key][pol] = d
        trace, G, B, load = key
        recs = [r for (t, g, b, _), r in authors.items() if (t, g, b) == (trace, G, B)] if load == "saturated" else []
        if recs:
            out[key][AUTHORS] = {
                f: float(np.mean([r[f] for r in recs if r.get(f) is not None] or [math.nan])) for f in fields
            } | {f + "_sd": 0.0 for f in fields}
    return out


def compare(cells: dict, default: str = DEFAULT_POLICY) -> list[dict]:
    """Per cell and criterion: the default's value, the best other policy and value, the ratio, pass or not."""
    rows = []
    others = set(BASELINES) | {H0, AUTHORS}
    for key, by_pol in sorted(cells.items()):
        if default not in by_pol:
            continue
        d = by_pol[default]
        for label, f, higher, tol in CRITERIA:
            cand = {p: v for p, v in by_pol.items() if p in others and math.isfinite(v.get(f, math.nan))}
            if not cand or not math.isfinite(d[f]):
                continue
            best = (max if higher else min)(cand, key=lambda p: cand[p][f])
            b = cand[best][f]
            r = d[f] / b if b else math.nan
            ok = r >= 1 - tol if higher else r <= 1 + tol
            rows.append(
                {
                    "cell": key,
                    "criterion": label,
                    "field": f,
                    "ours": d[f],
                    "best": best,
                    "value": b,
                    "ratio": r,
                    "ok": ok,
                    "reason": "" if ok else reason(key, f, d, cand[best], best, by_pol),
                }
            )
    return rows


def reason(key, f: str, d: dict, b: dict, best: str, by_pol: dict) -> str:
    """What the numbers of the cell say about a loss (the report's loss table prints it). ``d`` is the default's
    figures, ``b`` the best other policy's; the first rule that applies is given."""
    name = "H0" if best in (H0, AUTHORS) else best
    noise = 2 * math.hypot(d.get(f + "_sd", 0.0), b.get(f + "_sd", 0.0))
    if noise and abs(d[f] - b[f]) <= noise:
        return f"within seed noise (±{100 * noise / abs(b[f]):.1f} %)"
    if b["wait_max_s"] > 1.5 * d["wait_max_s"] and b["wait_max_s"] > d["wait_max_s"] + 1.0:
        return (
            f"{name} lets requests wait longer (longest wait {fnum(b['wait_max_s'])} s, ours "
            f"{fnum(d['wait_max_s'])} s: the default caps every wait)"
        )
    if d["wait_max_s"] >= 0.9 * WAIT_CAP_S and f != "tpot_p95_ms":
        return (
            f"our wait cap forced admissions (longest wait {fnum(d['wait_max_s'])} s, cap {WAIT_CAP_S:g} s; "
            f"{name}'s {fnum(b['wait_max_s'])} s): overdue requests go where they fit, not where they balance"
        )
    if b["ttft_p99_s"] > 1.5 * d["ttft_p99_s"] and b["ttft_p99_s"] > d["ttft_p99_s"] + 0.5:
        return f"{name} pays in TTFT: its TTFT p99 is {fnum(b['ttft_p99_s'])} s, ours {fnum(d['ttft_p99_s'])} s"
    if f == "tpot_p95_ms" and b["ttft_p99_s"] > 1.05 * d["ttft_p99_s"]:
        return (
            f"{name} holds new requests back (TTFT p99 {fnum(b['ttft_p99_s'])} s, ours "
            f"{fnum(d['ttft_p99_s'])} s), so fewer run at once and its steps are shorter"
        )
    if f == "tpot_p95_ms" and b["throughput_all_tok_s"] < d["throughput_all_tok_s"] * 0.995:
        return (
            f"{name} runs fewer tokens at a time (throughput {fnum(b['throughput_all_tok_s'])} against our "
            f"{fnum(d['throughput_all_tok_s'])} tok/s), so its steps are shorter"
        )
    if f == "throughput_all_tok_s" and d["throughput_tok_s"] >= b["throughput_tok_s"]:
        return (
            f"ahead until the last admission (window throughput {fnum(d['throughput_tok_s'])} against "
            f"{fnum(b['throughput_tok_s'])}); behind in the drain after it"
        )
    if f == "maxmin_all" and d["throughput_all_tok_s"] >= b["throughput_all_tok_s"]:
        return (
            f"larger max–min but not slower: our whole-run throughput is {fnum(d['throughput_all_tok_s'])} "
            f"against {fnum(b['throughput_all_tok_s'])}"
        )
    return f"not explained by waiting, batching, the drain or seed noise ({100 * abs(d[f] / b[f] - 1):.1f} %)"


def head_to_head(cells: dict, default: str = DEFAULT_POLICY) -> list[list[str]]:
    """Per other policy and criterion, over every cell both ran: the geometric mean of the default's margin and
    how many cells the default wins, ties (within the criterion's tolerance) and loses."""
    others = [p for p in (*BASELINES, H0, AUTHORS) if any(p in by for by in cells.values())]
    out = []
    for p in others:
        row = [p]
        for _, f, higher, tol in CRITERIA:
            m = []
            for by in cells.values():
                if default in by and p in by and by[p].get(f, 0) > 0 and by[default].get(f, 0) > 0:
                    r = by[default][f] / by[p][f]
                    m.append(r if higher else 1 / r)  # > 1: the default is better
            if not m:
                row.append("–")
                continue
            m = np.array(m)
            win, lose = int((m > 1 + tol).sum()), int((m < 1 - tol).sum())
            row.append(f"{pct(float(np.exp(np.log(m).mean())) - 1)} · {win}/{len(m) - win - lose}/{lose}")
        out.append(row)
    return out


def heat(path: Path, rows: list[dict], crit: str, title: str, traces: list[str]) -> Path:
    """Rows: trace × load; columns: G × B; value: the default's margin in % (positive = better)."""
    by = {(r["cell"]): r for r in rows if r["criterion"] == crit}
    row_keys = [(t, load) for t in traces for load, _ in LOADS]
    col_keys = [(g, b) for g in G_LIST for b in B_LIST]
    vals = np.full((len(row_keys), len(col_keys)), np.nan)
    higher = next(h for lab, _, h, _ in CRITERIA if lab == crit)
    for i, (t, load) in enumerate(row_keys):
        for j, (g, b) in enumerate(col_keys):
            r = by.get((t, g, b, load))
            if r is not None and math.isfinite(r["ratio"]):
                vals[i, j] = 100 * ((r["ratio"] - 1) if higher else (1 - r["ratio"]))
    return figures.heatmap(
        path,
        [f"{t} · {ld}" for t, ld in row_keys],
        [f"G{g}·B{b}" for g, b in col_keys],
        vals,
        title=title,
        fmt="{:+.1f}",
        colorbar="% (blue: better, red: worse)",
        diverging=True,
    )


#: the look-ahead policies and presets of the cross-section table
LOOK_AHEAD = (
    "br0:preset=paper",
    "brh:predictor=oracle",
    "brh:predictor=survival",
    "brh:predictor=exact_match",
    "bfio:predictor=oracle",
)

CLOSING = (
    "How the cells are built",
    [
        "Loads: the trace's arrival pattern at 0.6 / 0.9 / 1.3 of the measured capacity "
        "(join-shortest-queue by tokens, saturated, same trace, G and B), and saturated "
        "(4·G waiting, topped up every step); Poisson arrivals for traces without times.",
        "Requests per cell: max(4·G·B, the trace's first 10,000) after the first 20 % of the "
        "trace, which trains the predictors; saturated and Poisson cells draw them with "
        "replacement (2 seeds), replayed cells repeat the arrival pattern.",
        "Step time: linear_max (τ = C + t_tok · max load), energy: bfio_power.",
        f"Training traces: {', '.join(TRAIN_TRACES)}; the others are held out.",
    ],
)


def _intro(sec: Section, authors: dict) -> None:
    sec.text(
        f"Default policy `{DEFAULT_POLICY}` against every baseline ({', '.join(BASELINES)}) and the BF-IO "
        f"authors' H0 strategy (our implementation, `{H0}`"
        + (", and the authors' own code on the saturated cells it supports" if authors else "")
        + ") in every cell. A cell passes a criterion when the default is within the tolerance of the strongest "
        "other policy *on that metric*: whole-run throughput within 0.5 %, whole-run max–min within 10 %, "
        "TPOT p95 within 2 %. Whole-run figures are the criteria because a steady window that ends at the last "
        "admission hides requests a policy deferred to the end; window figures are reported beside them."
    )


def _summaries(sec: Section, rows: list[dict], traces: list[str]) -> None:
    """Per criterion, the cells passed and the worst cell: once for the training traces, once for the others."""
    for part, names in (
        ("training traces (defaults chosen here)", [t for t in traces if t in TRAIN_TRACES]),
        ("held-out traces", [t for t in traces if t not in TRAIN_TRACES]),
    ):
        sub = [r for r in rows if r["cell"][0] in names]
        if not sub:
            continue
        table = []
        for label, _, _, _ in CRITERIA:
            rs = [r for r in sub if r["criterion"] == label]
            worst = (
                min(rs, key=lambda r: r["ratio"])
                if label.startswith("throughput")
                else max(rs, key=lambda r: r["ratio"])
            )
            table.append(
                [
                    label,
                    f"{sum(r['ok'] for r in rs)}/{len(rs)}",
                    f"{worst['ratio']:.3f}",
                    "·".join(map(str, worst["cell"])),
                    worst["best"],
                ]
            )
        sec.heading(f"Summary, {part}")
        sec.table(
            ["criterion", "cells passed", "worst ratio", "worst cell (trace·G·B·load)", "best other there"], table
        )


def _losses(sec: Section, rows: list[dict]) -> None:
    losses = [r for r in rows if not r["ok"]]
    sec.heading(f"Every cell where the default loses ({len(losses)} of {len(rows)} cell-criteria)")
    sec.table(
        ["trace", "G", "B", "load", "criterion", "ours", "best other", "its value", "ratio", "why"],
        [
            [
                *map(str, r["cell"]),
                r["criterion"],
                fnum(r["ours"]),
                r["best"],
                fnum(r["value"]),
                f"{r['ratio']:.3f}",
                r["reason"],
            ]
            for r in losses
        ],
    )


def _cross_section(sec: Section, cells: dict) -> None:
    """The look-ahead policies against the default on the cells they ran."""
    sec.heading("Look-ahead policies and presets on the cross-section (G at B = 72, B at G = 8)")
    look = list(LOOK_AHEAD)
    trows = []
    for key, by_pol in sorted(cells.items()):
        if DEFAULT_POLICY not in by_pol or not any(p in by_pol for p in look):
            continue
        d = by_pol[DEFAULT_POLICY]
        trows.append(
            ["·".join(map(str, key))]
            + [
                pct(by_pol[p]["throughput_all_tok_s"] / d["throughput_all_tok_s"] - 1)
                + " / "
                + f"{by_pol[p]['maxmin_all'] / max(d['maxmin_all'], 1):.2f}×"
                if p in by_pol
                else "–"
                for p in look
            ]
        )
    sec.text("Whole-run throughput change / whole-run max–min ratio against the default.")
    sec.table(["cell"] + look, trows)


def render(out_dir: Path, rep: SweepReport, caps: dict, authors: dict, *, command: str, wall_s: float) -> Path:
    cells = cell_means(rep, authors)
    rows = compare(cells)
    traces = sorted({k[0] for k in cells}, key=lambda t: (t not in TRAIN_TRACES, t))
    sec = Section()
    _intro(sec, authors)
    _summaries(sec, rows, traces)
    sec.heading("Head to head, every cell")
    sec.text(
        f"`{DEFAULT_POLICY}` against each policy on its own, over every cell both ran: the geometric mean of "
        "the default's margin (positive: the default is better) · cells won / tied (within the tolerance "
        "above) / lost."
    )
    sec.table(["against"] + [lab for lab, *_ in CRITERIA], head_to_head(cells))
    for crit in ("throughput (whole run)", "TPOT p95"):
        p = heat(
            out_dir / f"heat_{crit.split()[0].lower()}.png",
            rows,
            crit,
            f"{DEFAULT_POLICY}: {crit}, % better than the strongest other policy",
            traces,
        )
        sec.figure(p, f"heat map {crit}")
    _losses(sec, rows)
    _cross_section(sec, cells)
    preamble = [
        f"Generated {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M UTC} by `{command}` in "
        f"{wall_s / 60:.0f} min ({rep.computed} cells computed, {rep.cached} from the cache). "
        "Per-cell results of every policy: `results.csv` (means over seeds are taken in this report)."
    ]
    return write_markdown(
        out_dir / "report.md",
        title="dpbalance regime matrix",
        preamble=preamble,
        sections=[("The default against the strongest other policy", sec, [])],
        closing=CLOSING,
    )
