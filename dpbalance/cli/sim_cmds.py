"""``simulate``, ``compare`` and ``policies``: their trace and simulator options come from ``TraceSelection`` and
``SimConfig`` (one definition of every setting)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..core.specs import split_specs
from ..engine.step_time import make_step_time
from ..policies import DEFAULT_POLICY, POLICIES, PolicySpec
from ..results.schema import TABLE_FIELDS, Result, write_json
from ..sim.config import SimConfig, arrival_times
from ..sim.run import build_policy, run_simulation
from ..traces.selection import TraceSelection
from .common import console, fmt_number, out, progress_bar, user_errors
from .options import with_configs

DEFAULT_POLICIES = f"random,round_robin,p2c,jsq_count,jsq_tokens,vllm,adp_balance,{DEFAULT_POLICY}"


def _result_table(res: Result) -> Table:
    t = Table(title=f"{res.name} — {res.config.get('trace', {}).get('name', '')} ({res.window} window)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for f in TABLE_FIELDS:
        t.add_row(f, fmt_number(getattr(res, f)))
    return t


PolicyOpt = Annotated[
    str,
    typer.Option(
        "--policy", "-p", help="Policy spec, e.g. br0 or brh:predictor=survival,H=40 (see `dpbalance policies`)."
    ),
]
PoliciesOpt = Annotated[
    str,
    typer.Option(
        "--policies",
        "-p",
        help="Comma-separated policy specs; options of one spec continue after its "
        "colon, e.g. jsq_count,brh:H=40,gamma=0.8,br0.",
    ),
]
BaselineOpt = Annotated[
    str | None,
    typer.Option("--baseline", help="Policy the ratios are taken against (default jsq_count if run, else the first)."),
]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Report directory: results.json, report.md, PNG plots.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the result JSON here.")]


def _prepare(trace: TraceSelection, sim: SimConfig, specs: list[PolicySpec]):
    """Load the selection and build every policy before any simulation, so a typo fails at once."""
    make_step_time(sim.step_time, sim.slots)  # a bad step-time spec or file fails before the trace loads
    test, train = trace.load(seed=sim.seed)
    arrival_times(test, sim)  # fails on an impossible arrival mode before any progress bar
    return test, train, [build_policy(spec, sim, train) for spec in specs]


def _run(test, train, specs: list[PolicySpec], built, sim: SimConfig, trace: TraceSelection):
    runs = []
    with progress_bar() as bar:
        for spec, pol in zip(specs, built):
            task = bar.add_task(spec.label, total=len(test))
            runs.append(
                run_simulation(
                    test,
                    spec,
                    sim,
                    train=train,
                    built=pol,
                    progress=lambda done, total, task=task: bar.update(task, completed=done),
                    extra_config={"trace_selection": trace.as_config()},
                )
            )
    return runs


@with_configs(config_file="--config", trace=TraceSelection, sim=SimConfig)
def simulate(
    policy: PolicyOpt = DEFAULT_POLICY, json_out: JsonOpt = None, *, trace: TraceSelection, sim: SimConfig
) -> None:
    """Simulate one policy on a trace and print its metrics."""
    with user_errors():
        spec = PolicySpec.parse(policy)
        test, train, built = _prepare(trace, sim, [spec])
        ((res, _),) = _run(test, train, [spec], built, sim, trace)
    out.print(_result_table(res))
    if json_out is not None:
        write_json(json_out, res)
        console.print(f"wrote {json_out}")


@with_configs(config_file="--config", trace=TraceSelection, sim=SimConfig)
def compare(
    policies: PoliciesOpt = DEFAULT_POLICIES,
    baseline: BaselineOpt = None,
    out_dir: OutDirOpt = Path("report"),
    *,
    trace: TraceSelection,
    sim: SimConfig,
) -> None:
    """Run several policies on the same workload; print the table and write a Markdown report with plots."""
    from ..results.report import format_table, write_report

    with user_errors():
        specs = [PolicySpec.parse(s) for s in split_specs(policies)]
        if not specs:
            raise typer.BadParameter("--policies is empty")
        if baseline is not None:
            baseline = PolicySpec.parse(baseline).label
            if baseline not in [s.label for s in specs]:
                raise typer.BadParameter(
                    f"--baseline {baseline!r} is not one of the compared policies: {', '.join(s.label for s in specs)}"
                )
        test, train, built = _prepare(trace, sim, specs)
        runs = _run(test, train, specs, built, sim, trace)
        report = write_report(out_dir, runs, baseline=baseline, title=f"dpbalance compare — {test.name}")
    out.print(format_table([r for r, _ in runs], baseline=baseline))
    console.print(f"wrote {report} and {out_dir / 'results.json'}")


def policies_cmd() -> None:
    """List the routing policies: each rule, where it comes from, and its options."""
    t = Table(title="policies (spec: name or name:key=value,...)")
    t.add_column("name", style="bold")
    t.add_column("rule (source)")
    t.add_column("options (default)")
    for name, summary, opts in POLICIES.describe():
        entry = POLICIES.entry(name)
        source = entry.source
        if getattr(entry.factory, "forwards", False):
            source = (source + "; " if source else "") + "sends each request to a rank at once (--front auto)"
        t.add_row(
            name,
            summary + (f"\n[dim]{source}[/]" if source else ""),
            "\n".join(f"{k}={d!r}  {doc}" for k, d, doc in opts),
        )
    out.print(t)


def register(app: typer.Typer) -> None:
    app.command()(simulate)
    app.command()(compare)
    app.command("policies")(policies_cmd)
