"""``simulate``, ``compare`` and ``policies``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..core.specs import split_specs
from ..policies import POLICIES
from ..results.schema import TABLE_FIELDS, Result, write_json
from ..sim.engine import arrival_times
from ..sim.run import build_policy, run_simulation
from .common import (
    ArrivalOpt, EndOpt, EnergyOpt, MaxOutOpt, MaxReqOpt, MinOutOpt, PrefillOpt, QpsOpt, RateScaleOpt, SeedOpt,
    SlotsOpt, StartOpt, StepTimeOpt, TraceDirOpt, TraceOpt, TrainOpt, TraceSelection, VisibleOpt, WindowOpt,
    WorkersOpt, console, fmt_number, out, progress_bar, sim_config, user_errors,
)

DEFAULT_POLICIES = "random,round_robin,p2c,jsq_count,jsq_tokens,vllm,br0,brh:predictor=oracle"


def _result_table(res: Result) -> Table:
    t = Table(title=f"{res.name} — {res.config.get('trace', {}).get('name', '')} ({res.window} window)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for f in TABLE_FIELDS:
        t.add_row(f, fmt_number(getattr(res, f)))
    return t


def _setup(o: dict):
    """SimConfig and TraceSelection from the shared options of simulate/compare."""
    cfg = sim_config(workers=o["workers"], slots=o["slots"], arrival=o["arrival"], visible=o["visible"],
                     window=o["window"], rate_scale=o["rate_scale"], qps=o["qps"], seed=o["seed"],
                     step_time=o["step_time"], energy=o["energy"], prefill_delay_s=o["prefill_delay"])
    sel = TraceSelection(o["trace"], o["trace_dir"], o["min_output"], o["max_output"], o["max_requests"],
                         o["start_s"], o["end_s"], o["train_split"])
    return cfg, sel


def _run_one(sel: TraceSelection, policy: str, cfg, label: str = ""):
    test, train = sel.load()
    arrival_times(test, cfg)  # fails on an impossible arrival mode before any progress bar
    built = build_policy(policy, cfg, train)
    with progress_bar() as bar:
        task = bar.add_task(label or policy, total=len(test))
        res, series = run_simulation(
            test, policy, cfg, train=train, label=label, policy=built,
            progress=lambda done, total: bar.update(task, completed=done),
            extra_config={"trace_selection": sel.as_config()},
        )
    return res, series


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        policy: Annotated[str, typer.Option("--policy", "-p", help="Policy spec, e.g. br0 or brh:predictor=survival,H=40 (see `dpbalance policies`).")] = "br0",
        trace: TraceOpt = "sample",
        trace_dir: TraceDirOpt = None,
        workers: WorkersOpt = 8,
        slots: SlotsOpt = 72,
        arrival: ArrivalOpt = "replay",
        visible: VisibleOpt = None,
        window: WindowOpt = None,
        rate_scale: RateScaleOpt = 1.0,
        qps: QpsOpt = None,
        min_output: MinOutOpt = None,
        max_output: MaxOutOpt = None,
        max_requests: MaxReqOpt = None,
        start_s: StartOpt = None,
        end_s: EndOpt = None,
        seed: SeedOpt = 0,
        step_time: StepTimeOpt = "linear_max",
        energy: EnergyOpt = "bfio_power",
        prefill_delay: PrefillOpt = 0.0,
        train_split: TrainOpt = 0.0,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result JSON here.")] = None,
    ) -> None:
        """Simulate one policy on a trace and print its metrics (SPEC §4)."""
        with user_errors():
            cfg, sel = _setup(locals())
            res, _ = _run_one(sel, policy, cfg)
        out.print(_result_table(res))
        if json_out is not None:
            write_json(json_out, res)
            console.print(f"wrote {json_out}")

    @app.command()
    def compare(
        policies: Annotated[str, typer.Option("--policies", "-p", help="Comma-separated policy specs; options of one spec continue after its colon, e.g. jsq_count,brh:H=40,gamma=0.8,br0.")] = DEFAULT_POLICIES,
        trace: TraceOpt = "sample",
        trace_dir: TraceDirOpt = None,
        workers: WorkersOpt = 8,
        slots: SlotsOpt = 72,
        arrival: ArrivalOpt = "replay",
        visible: VisibleOpt = None,
        window: WindowOpt = None,
        rate_scale: RateScaleOpt = 1.0,
        qps: QpsOpt = None,
        min_output: MinOutOpt = None,
        max_output: MaxOutOpt = None,
        max_requests: MaxReqOpt = None,
        start_s: StartOpt = None,
        end_s: EndOpt = None,
        seed: SeedOpt = 0,
        step_time: StepTimeOpt = "linear_max",
        energy: EnergyOpt = "bfio_power",
        prefill_delay: PrefillOpt = 0.0,
        train_split: TrainOpt = 0.0,
        baseline: Annotated[Optional[str], typer.Option("--baseline", help="Policy the ratios are taken against (default jsq_count if run, else the first).")] = None,
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="Report directory: results.json, report.md, PNG plots.")] = Path("report"),
    ) -> None:
        """Run several policies on the same workload; print the table and write a Markdown report with plots."""
        from ..results.report import format_table, write_report

        with user_errors():
            specs = split_specs(policies)
            if not specs:
                raise typer.BadParameter("--policies is empty")
            cfg, sel = _setup(locals())
            test, train = sel.load()
            # build every policy first so a typo fails before minutes of simulation
            arrival_times(test, cfg)
            built = [build_policy(spec, cfg, train) for spec in specs]
            runs = []
            with progress_bar() as bar:
                for spec, pol in zip(specs, built):
                    task = bar.add_task(spec, total=len(test))
                    runs.append(run_simulation(
                        test, spec, cfg, train=train, policy=pol,
                        progress=lambda done, total, task=task: bar.update(task, completed=done),
                        extra_config={"trace_selection": sel.as_config()},
                    ))
            if baseline is not None and baseline not in [r.name for r, _ in runs]:
                raise typer.BadParameter(f"--baseline {baseline!r} is not one of the compared policies: {', '.join(specs)}")
            report = write_report(
                out_dir, runs, baseline=baseline,
                title=f"dpbalance compare — {test.name}, G={workers}, B={slots}, {arrival}",
                context={"trace": trace, "requests": len(test), "arrival": arrival},
            )
        out.print(format_table([r for r, _ in runs], baseline=baseline))
        console.print(f"wrote {report} and {out_dir / 'results.json'}")

    @app.command("policies")
    def policies_cmd() -> None:
        """List the routing policies and their options."""
        t = Table(title="policies (spec: name or name:key=value,...)")
        t.add_column("name", style="bold")
        t.add_column("rule")
        t.add_column("options (default)")
        for name, summary, opts in POLICIES.describe():
            t.add_row(name, summary, "\n".join(f"{k}={d!r}  {doc}" for k, d, doc in opts))
        out.print(t)
