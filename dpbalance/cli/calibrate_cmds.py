"""``calibrate``: measure a live deployment's step time and write a step-time file for ``--step-time``."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from ..calibrate.config import CalibrateConfig
from .common import console, fmt_number, out, progress_bar
from .options import with_configs


def _fit_table(outcome) -> Table:
    cal = outcome.calibration
    t = Table(
        title=f"step-time fit ({len(outcome.observations) - int(outcome.heldout_mask.sum())} load levels fitted, "
        f"{int(outcome.heldout_mask.sum())} held out; step time from {outcome.source})"
    )
    for col, just in (
        ("model", "left"),
        ("constants", "left"),
        ("RMS error", "right"),
        ("max error", "right"),
        ("R²", "right"),
        ("held-out mean", "right"),
        ("held-out max", "right"),
        ("mixed held-out mean", "right"),
        ("mixed held-out max", "right"),
    ):
        t.add_column(col, justify=just)
    for name, f in cal.fits.items():
        consts = ", ".join(
            f"{k} = {v * 1e3:.4g} ms"
            if k in ("C", "c")
            else f"{k} = {v * 1e3:.4g} ms/req"
            if k == "per_request"
            else f"{k} = {v * 1e6:.4g} µs/seq"
            if k in ("s", "r")
            else f"{k} = {v * 1e9:.4g} ns/tok·ctx"
            if k == "prefill_attn"
            else f"{k} = {v * 1e6:.4g} µs/tok"
            for k, v in f.params.items()
        )
        h = cal.heldout.get(name)
        held = (f"{h['mean_abs_rel']:.2%}", f"{h['max_abs_rel']:.2%}") if h else ("–", "–")
        hm = cal.heldout_mixed.get(name)
        held += (f"{hm['mean_abs_rel']:.2%}", f"{hm['max_abs_rel']:.2%}") if hm else ("–", "–")
        t.add_row(
            name + (" ✓" if name == cal.chosen else ""),
            consts,
            f"{f.rms_rel:.2%}",
            f"{f.max_rel:.2%}",
            fmt_number(f.r2),
            *held,
        )
    return t


def register(app: typer.Typer) -> None:
    @app.command()
    @with_configs(config_file="--config", cal=CalibrateConfig)
    def calibrate(*, cal: CalibrateConfig) -> None:
        """Measure a live deployment's decode step time and fit the simulator's step-time model to it.

        Drives controlled loads through the data-parallel ranks (a grid of prompt lengths × concurrent streams
        per rank, plus unequal per-rank loads), measures the step time from the streams' token gaps and the
        engine's /metrics, fits τ = C + t_tok·max load (linear_max), τ = c + a·max + b·mean (linear_max_mean) and
        that plus costs per running sequence (linear_seqs), and writes a step-time file that simulate, compare,
        sweep and engine-sim take as --step-time FILE.

        Example: dpbalance calibrate --worker-urls http://127.0.0.1:8001 --worker-urls http://127.0.0.1:8002
        --time-budget 300 --out step_time.yaml
        """
        from ..calibrate.driver import drive
        from ..calibrate.engine_api import EngineError
        from ..calibrate.fit import CalibrationError
        from ..calibrate.specfile import analyse, write

        urls = ", ".join(cal.worker_urls) or f"{cal.dp_endpoint} ({cal.dp_size} ranks)"
        console.print(f"calibrating against {urls}; at most {cal.time_budget_s:g} s")
        try:
            with progress_bar("phases") as bar:
                task = bar.add_task("connecting", total=None)

                def progress(done: int, total: int, label: str) -> None:
                    bar.update(task, completed=done, total=total, description=label)

                rec = asyncio.run(drive(cal, progress))
            outcome = analyse(rec, cal)
            write(cal.out, outcome.document)
        except (EngineError, CalibrationError, OSError) as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted: every stream was closed; no file written")
            raise typer.Exit(130) from None
        out.print(_fit_table(outcome))
        cal_ = outcome.calibration
        console.print(f"chosen: {cal_.chosen} — {cal_.reason}", highlight=False)
        if cal_.per_request:
            console.print(f"per-request term {cal_.per_request}", highlight=False)
        for name, why in cal_.skipped.items():
            console.print(f"{name} not fitted: {why}", highlight=False)
        for ph, why in rec.failed:
            console.print(f"[yellow]phase {ph.label} failed:[/] {why}", highlight=False, soft_wrap=True)
        if rec.skipped:
            console.print(
                f"[yellow]{len(rec.skipped)} phases skipped:[/] the time budget ran out (raise --time-budget)",
                highlight=False,
            )
        for w in rec.warnings + sorted({w for r in rec.results for w in r.warnings}):
            console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        console.print(
            f"measured {len(rec.results)} load levels in {rec.duration_s:.1f} s; wrote {cal.out}\n"
            f"use it with: dpbalance simulate --step-time {cal.out}",
            highlight=False,
        )
