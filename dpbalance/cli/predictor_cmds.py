"""``dpbalance predictors eval``: how well each output-length predictor anticipates finishes."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich.table import Table

from ..analysis import evaluate
from ..core.specs import split_specs
from ..predictors import PREDICTORS, make_predictor
from ..traces.selection import TraceSelection
from .common import console, out, user_errors
from .options import with_configs


def register(app: typer.Typer) -> None:
    pred_app = typer.Typer(help="Output-length predictors used by BR-H and BF-IO.", no_args_is_help=True)
    app.add_typer(pred_app, name="predictors")

    @pred_app.command("eval")
    @with_configs(trace=TraceSelection)
    def eval_cmd(
        predictors: Annotated[
            str, typer.Option("--predictors", help="Comma-separated predictor specs.")
        ] = "oracle,survival,exact_match",
        horizon: Annotated[
            int, typer.Option("--horizon", "-H", min=1, help="Look-ahead H of 'finishes within H'.")
        ] = 80,
        ages: Annotated[int, typer.Option("--ages", min=1, help="Ages sampled per test request.")] = 8,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the sampled ages.")] = 0,
        *,
        trace: TraceSelection,
    ) -> None:
        """AUC of "finishes within H" and MAE of the conditional remaining length, on the test split.

        Predictors are fitted on the training rows of the selection (--train-split F: the first F of the trace;
        --max-requests N: the rows after the first N; neither: the first half) and evaluated on the replayed rows,
        at ages sampled uniformly over each request's life."""
        if trace.train_split == 0 and trace.max_requests is None:
            trace = dataclasses.replace(trace, train_split=0.5)
        with user_errors():
            test, train = trace.load(seed=seed)
            rows = []
            for spec in split_specs(predictors):
                if PREDICTORS.entry(spec.split(":")[0]).name != "oracle" and train is None:
                    raise typer.BadParameter(
                        "learned predictors need training rows: use --train-split F or "
                        "--max-requests N smaller than the trace"
                    )
                rows.append(
                    (spec, evaluate(make_predictor(spec, train), test, H=horizon, ages_per_request=ages, seed=seed))
                )
        t = Table(
            title=f"predictors on {trace.trace} (H = {horizon}; train {len(train) if train is not None else 0}, "
            f"test {len(test)})"
        )
        for c in ("predictor", "AUC finish≤H", "MAE μ_rem (steps)", "samples", "positives"):
            t.add_column(c, justify="left" if c == "predictor" else "right")
        for spec, r in rows:
            t.add_row(spec, f"{r['auc']:.3f}", f"{r['mae_steps']:.1f}", f"{r['samples']:,}", f"{r['positives']:,}")
        out.print(t)
        console.print(
            "published (BalanceRoute paper, Azure 2024, H = 80): survival AUC 0.993 / MAE 5.4; exact_match 0.995 / 5.4",
            style="dim",
        )
