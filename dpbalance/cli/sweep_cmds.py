"""``sweep``: a grid of cells on a local process pool or Ray, resumable from its cache. Where the cells run
(``--backend``, ``--processes``/``-j``, ``--ray-address``) comes from ``PoolSettings`` (one definition)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, TextColumn
from rich.table import Table

from ..sweep.runner import PoolSettings
from .common import TraceDirOpt, console, out, progress_bar, require_ray, user_errors
from .options import with_configs

GridOpt = Annotated[
    Path,
    typer.Option("--grid", "-g", help="Grid file (.yaml/.yml/.toml): base, axes, cells; see docs/sweep.md."),
]
SweepOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Output directory (default sweeps/<grid name>); cells/<hash>.json is the resumable cache.",
    ),
]
SeriesOpt = Annotated[
    bool,
    typer.Option("--series/--no-series", help="Also keep per-step time series (cells/<hash>.series.npz) for plots."),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the expanded cells and which are cached, run nothing.")
]
StepTimeOpt = Annotated[
    str | None,
    typer.Option(
        "--step-time",
        help="Step-time model spec or file (from `dpbalance calibrate`) for every cell, overriding the grid's "
        "step_time.",
    ),
]

#: the columns of the summary table after a sweep
RESULT_COLUMNS = ("trace", "policy", "G", "B", "load", "tok/s", "max–min", "idle", "J/tok", "TPOT95 ms")
#: rows of the summary table at most (every result is in the written tables)
MAX_ROWS = 200


def _progress() -> Progress:
    return progress_bar("cells", TextColumn("{task.fields[last]}", style="dim"))


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return "" if v is None else str(v)


def _dry_run_table(g, tdir: str | None, odir: Path) -> Table:
    """The expanded cells of a grid, each with its hash and whether it is cached."""
    from ..sweep.runner import cell_hash, cell_paths

    t = Table(title=f"{g.name}: {len(g.cells)} cells")
    t.add_column("#", justify="right")
    t.add_column("cell")
    t.add_column("hash")
    t.add_column("cached")
    for i, c in enumerate(g.cells):
        k = cell_hash(c, tdir)
        t.add_row(str(i), c.short(), k, "yes" if cell_paths(odir, k)[0].exists() else "")
    return t


def _result_table(g, rep) -> Table:
    """The first ``MAX_ROWS`` outcomes of a sweep, one row each."""
    t = Table(title=f"{g.name} ({rep.computed} computed, {rep.cached} cached, {rep.wall_s:.1f} s)")
    for c in RESULT_COLUMNS:
        t.add_column(
            c,
            justify="left" if c in ("trace", "policy", "load") else "right",
            overflow="fold" if c in ("trace", "policy") else "ellipsis",
        )
    for o in rep.outcomes[:MAX_ROWS]:
        r = o.result
        sim = o.cell.sim
        load = sim.arrival + (f"×{sim.rate_scale:g}" if sim.arrival == "replay" else "")
        vals = [
            o.cell.trace.trace,
            r.policy,
            r.workers,
            r.slots,
            load,
            r.throughput_tok_s,
            r.avg_imbalance_maxmin,
            r.idle_fraction,
            r.energy_j_per_token,
            r.tpot_p95_ms,
        ]
        t.add_row(*[_fmt(v) for v in vals])
    return t


def _run_grid(g, odir: Path, tdir: str | None, pool: PoolSettings, series: bool):
    """Run the grid's cells with a progress bar; the sweep report."""
    from ..sweep import run_cells

    console.print(f"sweep [bold]{g.name}[/]: {len(g.cells)} cells, backend {pool.backend}, out {odir}")
    with _progress() as bar:
        task = bar.add_task(g.name, total=len(g.cells), last="")
        return run_cells(
            g.cells,
            odir,
            **dataclasses.asdict(pool),
            trace_dir=tdir,
            save_series=series or g.save_series,
            progress=lambda done, total, last: bar.update(task, completed=done, total=total, last=last),
        )


@with_configs(pool=PoolSettings)
def sweep(
    grid: GridOpt,
    out_dir: SweepOutOpt = None,
    trace_dir: TraceDirOpt = None,
    series: SeriesOpt = False,
    dry_run: DryRunOpt = False,
    step_time: StepTimeOpt = None,
    *,
    pool: PoolSettings,
) -> None:
    """Run every cell of a grid (policy × predictor × G × B × load × seed × trace), resuming from cached cells.

    Results: OUT/results.csv (+ results.parquet with pyarrow), OUT/results.json (every result in full),
    OUT/cells/<hash>.json per cell. Re-running the same grid recomputes only missing cells.
    """
    from ..sweep import GridError, load_grid
    from ..sweep.grid import with_step_time

    require_ray(pool.backend)
    with user_errors():
        try:
            g = load_grid(grid)
            if step_time is not None:
                g = dataclasses.replace(g, cells=with_step_time(g.cells, step_time))
            tdir = str(trace_dir) if trace_dir is not None else g.trace_dir
            odir = out_dir or Path("sweeps") / g.name
            if dry_run:
                out.print(_dry_run_table(g, tdir, odir))
                return
            rep = _run_grid(g, odir, tdir, pool, series)
        except GridError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted: finished cells are cached; re-run the same command to resume")
            raise typer.Exit(130) from None
    out.print(_result_table(g, rep))
    console.print("wrote " + ", ".join(str(p) for p in rep.tables))


def register(app: typer.Typer) -> None:
    app.command()(sweep)
