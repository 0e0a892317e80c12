"""``reproduce`` and ``matrix``: the BalanceRoute and BF-IO paper experiments, and the regime matrix, end to end,
written as Markdown reports. Where the cells run comes from ``PoolSettings``, as for ``sweep``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, TextColumn

from ..core.config import ConfigError, build
from ..sweep.grid import GridError
from ..sweep.runner import PoolSettings
from .common import ProcessesOpt, TraceDirOpt, console, progress_bar, require_ray, user_errors
from .options import with_configs

ReproduceOutOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="Report directory: report.md, PNG plots, results tables, cells/ cache."),
]
ReproduceQuickOpt = Annotated[
    bool,
    typer.Option(
        "--quick",
        help="Reduced experiments (about a minute on 2 cores): fewer requests, smaller grids; indicative numbers.",
    ),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option(
        "--budget-min",
        min=0.1,
        help="Wall-time budget in minutes (default 40; --quick ignores it): optional grid points are dropped "
        "until the estimate fits.",
    ),
]
PlanOnlyOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan (cells per experiment, time estimate) and exit.")
]
OnlyOpt = Annotated[
    str | None,
    typer.Option(
        "--only",
        help="Comma-separated experiments to run (default all), e.g. main,scaling,sensitivity,bfio,"
        "theory,energy,predictors,optimal,regimes; an unknown name lists them all.",
    ),
]
MatrixOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Report directory: report.md, heat maps, results.csv, cells/ cache.")
]
MatrixQuickOpt = Annotated[
    bool,
    typer.Option("--quick", help="One trace, two cluster sizes, one seed, the core policies: a check that it runs."),
]
AuthorsOpt = Annotated[
    Path | None,
    typer.Option(
        "--authors",
        help="JSON of the BF-IO authors' H0 runs on the saturated cells (written by benchmarks/authors_matrix.py "
        "from a checkout of their simulator); added to the comparison.",
    ),
]

INTERRUPTED = "interrupted: finished cells are cached in OUT/cells; re-run to resume"


def _progress() -> Progress:
    return progress_bar("cells", TextColumn("{task.fields[last]}", style="dim"))


def _names(only: str | None) -> list[str] | None:
    """The experiments named by --only, checked against the registry (imported here: it loads matplotlib and
    scipy, which other commands do not need)."""
    from ..experiments.registry import BY_NAME

    if not only:
        return None
    names = [x.strip() for x in only.split(",") if x.strip()]
    bad = [x for x in names if x not in BY_NAME]
    if bad:
        raise typer.BadParameter(f"unknown experiment(s) {', '.join(bad)}; valid: {', '.join(BY_NAME)}")
    return names


@with_configs(pool=PoolSettings)
def reproduce(
    out_dir: ReproduceOutOpt = Path("reproduce"),
    quick: ReproduceQuickOpt = False,
    trace_dir: TraceDirOpt = None,
    budget_min: BudgetOpt = None,
    dry_run: PlanOnlyOpt = False,
    only: OnlyOpt = None,
    *,
    pool: PoolSettings,
) -> None:
    """Run the BalanceRoute and BF-IO paper experiments end to end and write OUT/report.md.

    Uses every trace found in the trace directory (azure-conv-2024 too, when you have it). Interrupted runs
    resume from OUT/cells/.
    """
    from ..experiments.driver import run_reproduce

    require_ray(pool.backend)  # say so before any work starts
    names = _names(only)
    with user_errors():
        try:
            path = run_reproduce(
                out_dir,
                quick=quick,
                trace_dir=str(trace_dir) if trace_dir else None,
                **dataclasses.asdict(pool),
                only=names,
                console=console,
                progress_factory=_progress,
                dry_run=dry_run,
                budget_min=budget_min,
            )
        except GridError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print(INTERRUPTED)
            raise typer.Exit(130) from None
    if path is not None:
        console.print(f"wrote {path}")


def _checked_processes(processes: int | None) -> int | None:
    """``--processes`` through ``PoolSettings``'s bounds (``matrix`` runs on the local pool only)."""
    try:
        return build(PoolSettings, {"processes": processes}).processes
    except ConfigError as exc:
        raise typer.BadParameter(str(exc).replace("setting 'processes'", "--processes")) from None


def _run_matrix(out_dir: Path, spec, tdir: str | None, processes: int | None, authors: Path | None, found):
    """The matrix's cells with one progress bar per phase (capacity, cells)."""
    from ..experiments import matrix as mx

    with user_errors(), _progress() as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, last="")
            bar.update(tasks[phase], completed=done, total=total)

        try:
            return mx.run_matrix(
                out_dir, spec=spec, trace_dir=tdir, processes=processes, authors=authors, progress=progress, found=found
            )
        except KeyboardInterrupt:
            console.print(INTERRUPTED)
            raise typer.Exit(130) from None


def matrix(
    out_dir: MatrixOutOpt = Path("matrix"),
    quick: MatrixQuickOpt = False,
    trace_dir: TraceDirOpt = None,
    processes: ProcessesOpt = None,
    authors: AuthorsOpt = None,
) -> None:
    """The regime matrix: the default policy against every baseline in every cell of traces × G × B × load.

    Writes OUT/report.md with the default's margin over the strongest other policy per cell (throughput,
    max–min, TPOT p95; TTFT p99 and the longest wait beside them), heat maps, and every cell where it loses.
    The full matrix is thousands of simulations (about an hour on two cores); interrupted runs resume from
    OUT/cells/."""
    from ..experiments import matrix as mx
    from ..experiments.driver import found_traces
    from ..experiments.matrix_report import render

    processes = _checked_processes(processes)
    tdir = str(trace_dir) if trace_dir else None
    found = found_traces(tdir)
    if not found & set(mx.TRACES):
        console.print(
            "[bold red]error:[/] none of the matrix's traces is in the trace directory; get them with "
            "`dpbalance trace fetch --all`",
            highlight=False,
        )
        raise typer.Exit(2)
    spec = mx.Spec().quick() if quick else mx.Spec()
    rep, caps, auth = _run_matrix(out_dir, spec, tdir, processes, authors, found)
    path = render(
        out_dir, rep, caps, auth, command="dpbalance matrix" + (" --quick" if quick else ""), wall_s=rep.wall_s
    )
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command()(reproduce)
    app.command()(matrix)
