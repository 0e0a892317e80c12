"""Anchors: our numbers on mooncake-conversation next to the BF-IO authors' simulator on the same requests, and
the full comparison report (with every plot) for that workload."""

from __future__ import annotations

import dataclasses

from ..results.report import write_report
from . import main_table, paper
from .base import Ctx, Experiment, Results, best_by_throughput
from .render import Section, fnum, gain, pct
from .workloads import BASELINES, PAPER_BASELINES, anchor_wl

#: the policies drawn in the anchor workload's comparison report
SHOWN = (
    "jsq_count",
    "jsq_tokens",
    "round_robin",
    "adp_balance",
    "br0",
    "brh:predictor=oracle",
    "brh:predictor=exact_match",
    "bfio:predictor=oracle",
)


def keep_series(ctx: Ctx, cell) -> bool:
    wl = anchor_wl(ctx)
    return wl is not None and cell.tag.startswith(f"main|{wl.label}|")


def _status(ok: bool, miss: str) -> str:
    return "met" if ok else f"missed by {miss}"


def _jsq_row(jt) -> list[str]:
    A = paper.ANCHORS
    return [
        "JSQ (tokens) max–min / tok/s",
        f"{A['jsq_tokens'][0]:,} / {A['jsq_tokens'][1]:,} (authors' code)",
        f"{fnum(jt.avg_imbalance_maxmin)} / {fnum(jt.throughput_tok_s)}",
        "",
    ]


def _br0_rows(br0, jt, bb_lab, bb, ab_lab, ab) -> list[list[str]]:
    """br0 against the anchors: imbalance, gains over JSQ (tokens) and our best baseline, absolute throughput."""
    A = paper.ANCHORS
    rows = [
        [
            "br0 max–min",
            f"≤ {A['br0_maxmin_max']:,} (authors' BF-IO-H0: {A['bfio_h0_authors'][0]:,})",
            fnum(br0.avg_imbalance_maxmin),
            _status(
                br0.avg_imbalance_maxmin <= A["br0_maxmin_max"],
                fnum(br0.avg_imbalance_maxmin - A["br0_maxmin_max"]),
            ),
        ]
    ]
    if jt:
        gj = gain(br0, jt)
        rows.append(
            [
                "br0 throughput gain over JSQ (tokens), the anchor's comparator",
                f"≥ {pct(A['br0_gain_min'])} (authors' H0: {A['jsq_tokens'][1]:,} → "
                f"{A['bfio_h0_authors'][1]:,} = {pct(A['bfio_h0_authors'][1] / A['jsq_tokens'][1] - 1)})",
                pct(gj),
                _status(gj >= A["br0_gain_min"], f"{(A['br0_gain_min'] - gj) * 100:.1f} points"),
            ]
        )
    g = gain(br0, bb)
    rows.append(
        [
            f"br0 throughput gain over our best paper baseline ({bb_lab})",
            f"≥ {pct(A['br0_gain_min'])}",
            pct(g),
            _status(g >= A["br0_gain_min"], f"{(A['br0_gain_min'] - g) * 100:.1f} points"),
        ]
    )
    h0 = A["bfio_h0_authors"][1]
    rows.append(
        [
            "br0 throughput, absolute",
            f"authors' BF-IO-H0: {h0:,} tok/s",
            fnum(br0.throughput_tok_s),
            "met" if br0.throughput_tok_s >= h0 else pct(br0.throughput_tok_s / h0 - 1),
        ]
    )
    if ab is not None and ab_lab != bb_lab:
        rows.append(
            [f"br0 gain over the best engine rule too ({ab_lab})", "(not a paper baseline)", pct(gain(br0, ab)), ""]
        )
    if jt:
        rows.append(
            [
                "br0 TTFT P99 / longest wait, next to JSQ (tokens)",
                "(no published target)",
                f"{fnum(br0.ttft_p99_s)} / {fnum(br0.wait_max_s)} s vs {fnum(jt.ttft_p99_s)} / {fnum(jt.wait_max_s)} s",
                "",
            ]
        )
    return rows


def _lookahead_rows(res: dict, br0, bb) -> list[list[str]]:
    """The look-ahead policies against the authors' BF-IO at H = 80."""
    A = paper.ANCHORS
    h80 = A["bfio_h80_authors"]
    rows = []
    for lab in ("brh:predictor=oracle", "brh:predictor=survival", "brh:predictor=exact_match", "bfio:predictor=oracle"):
        r = res.get(lab)
        if r and bb:
            verdict = ""
            if lab.startswith("brh") and br0:
                verdict = "beats br0" if r.throughput_tok_s > br0.throughput_tok_s else "does not beat br0"
            rows.append(
                [
                    f"{lab} max–min / gain",
                    f"authors' BF-IO H = 80: {h80[0]:,} / {pct(h80[1] / A['jsq_tokens'][1] - 1)}",
                    f"{fnum(r.avg_imbalance_maxmin)} / {pct(gain(r, bb))}",
                    verdict,
                ]
            )
    return rows


def _rows(res: dict, bb_lab, bb, ab_lab, ab) -> list[list[str]]:
    br0, jt = res.get("br0"), res.get("jsq_tokens")
    rows = [_jsq_row(jt)] if jt else []
    if br0 and bb:
        rows += _br0_rows(br0, jt, bb_lab, bb, ab_lab, ab)
    return rows + _lookahead_rows(res, br0, bb)


def render(ctx: Ctx, R: Results) -> Section:
    wl = anchor_wl(ctx)
    if wl is None:
        return Section().text("mooncake-conversation is not in the trace directory, so the anchors were not checked.")
    res = main_table.results(ctx, R, wl)
    bb_lab, bb = best_by_throughput(res, PAPER_BASELINES)
    ab_lab, ab = best_by_throughput(res, BASELINES)
    n = next(iter(res.values())).requests if res else 0
    sec = Section().text(
        f"mooncake-conversation, {n:,} requests, saturated (32 visible), G = 8, B = 72, steady window: the setting "
        "in which the BF-IO authors' simulator was run on the same requests. Targets: our `br0` should match or "
        "beat the best of the authors' policies, and `brh` should beat `br0`."
    )
    if ctx.quick:
        sec.text("**--quick run: only 1,000 requests, not the anchor setting (10,000); indicative only.**")
    sec.table(["quantity", "target", "ours", "status"], _rows(res, bb_lab, bb, ab_lab, ab))
    shown = list(dict.fromkeys(lab for lab in (*SHOWN, bb_lab) if lab in res))
    runs = []
    for lab in shown:
        o = R.outcome(main_table.tag(wl, lab))
        ser = o.series() if o else None
        if ser is not None and len(ser.t):
            runs.append((dataclasses.replace(o.result, label=lab), ser))
    if runs:
        sub = ctx.out_dir / "anchor"
        write_report(
            sub, runs, baseline="jsq_count" if "jsq_count" in shown else None, title=f"{wl.label}: the anchor workload"
        )
        sec.figure(sub / "imbalance.png", "imbalance over time, anchor workload")
        sec.figure(sub / "queueing.png", "wait and TTFT tails, anchor workload")
        sec.text(
            "The full comparison report for this workload, with every plot (throughput and slot occupancy "
            "over time, per-worker loads, idle, TPOT): [anchor/report.md](anchor/report.md)."
        )
    return sec


EXPERIMENT = Experiment(
    "anchors",
    "Anchors: the BF-IO authors' code on mooncake-conversation",
    render,
    keep_series=keep_series,
    needs=("main",),
    follows="main",
)
