"""Predictor accuracy: how well the learned output-length predictors anticipate finishes, offline, on each
main-table workload (fitted on rows the run does not replay)."""

from __future__ import annotations

import math

import numpy as np

from ..analysis import evaluate
from ..core.workload import NO_KEY
from ..predictors import make_predictor
from ..sweep.runner import select_workload
from . import paper
from .base import Ctx, Experiment, Results
from .render import Section, fnum
from .workloads import main_workloads

NAMES = ("survival", "exact_match")
H = 80


def compute(ctx: Ctx) -> list[tuple[str, str, dict]]:
    """(workload, predictor, {"auc", "mae_steps", "samples", "hit_rate", …}) for every workload with training rows."""
    out = []
    for wl in main_workloads(ctx):
        test, train = select_workload(wl.cell("pred", "jsq_count"), ctx.trace_dir)
        if train is None:
            ctx.note("predictors", f"{wl.label}: no training rows, not evaluated.")
            continue
        for name in NAMES:
            m = dict(evaluate(make_predictor(name, train), test, H=H))
            known = test.key != NO_KEY  # rows whose prompt identity the trace records
            m["hit_rate"] = (
                float((known & np.isin(test.key, train.key[train.key != NO_KEY])).mean())
                if name == "exact_match"
                else math.nan
            )
            out.append((wl.label, name, m))
    return out


def render(ctx: Ctx, R: Results) -> Section:
    sec = Section().text(
        f"Offline accuracy on the replayed (test) requests of each main-table workload, predictors fitted on the "
        f"disjoint training rows, H = {H}: AUC of the finish-within-H classifier (over every (request, age) pair) and "
        "MAE (steps) of the conditional remaining length for requests that do finish within H."
    )
    data = ctx.computed.get("predictors")
    if not data:
        return sec.text("Not computed (no workload has training rows).")
    sec.table(
        ["workload", "predictor", "AUC", "MAE (steps)", "(request, age) samples", "prompt-key hit rate"],
        [
            [lab, name, fnum(m["auc"]), fnum(m["mae_steps"]), fnum(m["samples"]), fnum(m["hit_rate"])]
            for lab, name, m in data
        ],
    )
    sec.text(
        "ExactMatch can only beat Survival where test prompts repeat training prompt keys (hit rate above); "
        "most of our traces carry no prompt identity (the Azure, BF-IO and Vidur files have token counts only), "
        "so ExactMatch falls back to Survival there. Mooncake's keys are prefix-block hashes.",
        "Paper:",
    )
    return sec.table(
        ["dataset", "predictor", "AUC", "MAE (steps)"],
        [[d, p, fnum(a), fnum(m)] for (d, p), (a, m) in paper.BR_PREDICTORS.items()],
    )


def summary(ctx: Ctx, R: Results) -> list[list[str]]:
    data = ctx.computed.get("predictors")
    if not data:
        return []

    def span(name: str, key: str) -> str:
        v = [m[key] for _, n, m in data if n == name and math.isfinite(m[key])]
        return f"{min(v):.3g}–{max(v):.3g}" if v else "–"

    return [
        [
            "Predictor AUC (Survival / ExactMatch)",
            paper.CLAIMS["predictor_auc"],
            f"{span('survival', 'auc')} / {span('exact_match', 'auc')} over {len(data) // len(NAMES)} workloads",
        ],
        [
            "Predictor MAE, steps (Survival / ExactMatch)",
            paper.CLAIMS["predictor_mae"],
            f"{span('survival', 'mae_steps')} / {span('exact_match', 'mae_steps')}",
        ],
    ]


EXPERIMENT = Experiment("predictors", "Predictor accuracy", render, compute=compute, summary=summary)
