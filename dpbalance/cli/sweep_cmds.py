"""``sweep``: a grid of cells on a local process pool or Ray, resumable from its cache."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, TextColumn
from rich.table import Table

from .common import TraceDirOpt, console, out, progress_bar, user_errors


def _progress() -> Progress:
    return progress_bar("cells", TextColumn("{task.fields[last]}", style="dim"))


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return "" if v is None else str(v)


def register(app: typer.Typer) -> None:
    @app.command()
    def sweep(
        grid: Annotated[
            Path,
            typer.Option("--grid", "-g", help="Grid file (.yaml/.yml/.toml): base, axes, cells; see docs/sweep.md."),
        ],
        backend: Annotated[
            str,
            typer.Option(
                "--backend",
                "-b",
                help="local (process pool on this machine) | ray (Ray tasks; pip install -e '.[ray]').",
            ),
        ] = "local",
        out_dir: Annotated[
            Path | None,
            typer.Option(
                "--out",
                "-o",
                help="Output directory (default sweeps/<grid name>); cells/<hash>.json is the resumable cache.",
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(
                "--workers",
                "-w",
                min=1,
                help="Parallel processes (local) or CPUs for a local Ray (default: all cores). 1 = run in this "
                "process.",
            ),
        ] = None,
        ray_address: Annotated[
            str | None,
            typer.Option(
                "--ray-address",
                help="Ray cluster address for ray.init(address=...), e.g. ray://head:10001 or auto (default: start "
                "a local Ray).",
            ),
        ] = None,
        trace_dir: TraceDirOpt = None,
        series: Annotated[
            bool,
            typer.Option(
                "--series/--no-series", help="Also keep per-step time series (cells/<hash>.series.npz) for plots."
            ),
        ] = False,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the expanded cells and which are cached, run nothing.")
        ] = False,
        step_time: Annotated[
            str | None,
            typer.Option(
                "--step-time",
                help="Step-time model spec or file (from `dpbalance calibrate`) for every cell, overriding the "
                "grid's step_time.",
            ),
        ] = None,
    ) -> None:
        """Run every cell of a grid (policy × predictor × G × B × load × seed × trace), resuming from cached cells.

        Results: OUT/results.csv (+ results.parquet with pyarrow), OUT/results.json (every result in full),
        OUT/cells/<hash>.json per cell. Re-running the same grid recomputes only missing cells.
        """
        from ..sweep import GridError, load_grid, run_cells
        from ..sweep.grid import with_step_time
        from ..sweep.runner import RAY_INSTALL_HINT, cell_hash, cell_paths

        if backend not in ("local", "ray"):
            raise typer.BadParameter(f"--backend must be local or ray (got {backend!r})")
        if backend == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                console.print(f"[bold red]error:[/] {escape(RAY_INSTALL_HINT)}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
        with user_errors():
            try:
                g = load_grid(grid)
                if step_time is not None:
                    g = dataclasses.replace(g, cells=with_step_time(g.cells, step_time))
                tdir = str(trace_dir) if trace_dir is not None else g.trace_dir
                odir = out_dir or Path("sweeps") / g.name
                if dry_run:
                    t = Table(title=f"{g.name}: {len(g.cells)} cells")
                    t.add_column("#", justify="right")
                    t.add_column("cell")
                    t.add_column("hash")
                    t.add_column("cached")
                    for i, c in enumerate(g.cells):
                        k = cell_hash(c, tdir)
                        t.add_row(str(i), c.short(), k, "yes" if cell_paths(odir, k)[0].exists() else "")
                    out.print(t)
                    return
                console.print(f"sweep [bold]{g.name}[/]: {len(g.cells)} cells, backend {backend}, out {odir}")
                with _progress() as bar:
                    task = bar.add_task(g.name, total=len(g.cells), last="")
                    rep = run_cells(
                        g.cells,
                        odir,
                        backend=backend,
                        workers=workers,
                        trace_dir=tdir,
                        ray_address=ray_address,
                        save_series=series or g.save_series,
                        progress=lambda done, total, last: bar.update(task, completed=done, total=total, last=last),
                    )
            except GridError as exc:
                console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                console.print("interrupted: finished cells are cached; re-run the same command to resume")
                raise typer.Exit(130) from None
        t = Table(title=f"{g.name} ({rep.computed} computed, {rep.cached} cached, {rep.wall_s:.1f} s)")
        cols = ("trace", "policy", "G", "B", "load", "tok/s", "max–min", "idle", "J/tok", "TPOT95 ms")
        for c in cols:
            t.add_column(
                c,
                justify="left" if c in ("trace", "policy", "load") else "right",
                overflow="fold" if c in ("trace", "policy") else "ellipsis",
            )
        for o in rep.outcomes[:200]:
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
        out.print(t)
        console.print("wrote " + ", ".join(str(p) for p in rep.tables))
