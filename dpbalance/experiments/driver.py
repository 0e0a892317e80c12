"""``dpbalance reproduce``: plan the selected experiments, run their cells together, and write ``report.md``.

All cells go to one sweep (a local process pool or Ray) and are cached in ``OUT/cells``, so an interrupted run
resumes and a re-run after a change to the report only renders. ``--quick`` shrinks every experiment so the
whole report takes well under a minute on two cores; its numbers are then indicative only.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..sweep.runner import SweepReport, run_cells
from ..traces import available_traces
from . import registry
from .base import Ctx, Results
from .plan import CostFn, calibrate, default_costs, make_plan
from .render import write_markdown
from .summary import DEVIATIONS

#: default time budget in minutes (a full run; --quick ignores it)
BUDGET_MIN = 40.0
QUICK_BUDGET_MIN = 2.5


def found_traces(trace_dir: str | None) -> set[str]:
    """The named traces present in the trace directory (the bundled sample aside)."""
    return {name for name, _, path in available_traces(trace_dir) if path is not None and name != "sample"}


def _run(
    cells,
    out_dir: Path,
    *,
    backend,
    processes,
    trace_dir,
    ray_address,
    want_series,
    progress_factory: Callable[[], Any] | None,
) -> SweepReport:
    kw = dict(
        backend=backend, processes=processes, trace_dir=trace_dir, ray_address=ray_address, save_series=want_series
    )
    if progress_factory is None:
        return run_cells(cells, out_dir, **kw)
    with progress_factory() as bar:
        task = bar.add_task("reproduce", total=len(cells), last="")
        return run_cells(
            cells, out_dir, **kw, progress=lambda d, t, last: bar.update(task, completed=d, total=t, last=last[:60])
        )


def _preamble(ctx: Ctx, rep: SweepReport, n_cells: int, wall_s: float) -> list[str]:
    flag = " --quick" if ctx.quick else ""
    tables = "`results.csv`" + (", `results.parquet`" if any(p.suffix == ".parquet" for p in rep.tables) else "")
    out = [
        f"Generated {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M UTC} by `dpbalance reproduce{flag}` "
        f"(dpbalance {__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs) in "
        f"{wall_s / 60:.1f} min: {n_cells} simulation cells ({rep.computed} computed, {rep.cached} from the cache "
        f"in `cells/`). Traces found: {', '.join(sorted(ctx.traces)) or 'none (bundled sample only)'}. Tables: "
        f"{tables}, `results.json`."
    ]
    if ctx.quick:
        out.append(
            "> **--quick**: every experiment is shrunk (≈ 1,000 requests, fewer grid points) to finish in a "
            "minute; numbers are indicative only. Run without --quick for the full report."
        )
    out += [f"> Note: {n}" for n in ctx.notes.get("general", [])]
    return out


def run_reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    trace_dir: str | None = None,
    processes: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    only: list[str] | None = None,
    console=None,
    progress_factory=None,
    dry_run: bool = False,
    budget_min: float | None = None,
    costs: CostFn | None = None,
) -> Path | None:
    """Run the selected experiments (all when ``only`` is None) and write ``out_dir/report.md``; return its path,
    or None for a dry run (which prints the plan and simulates nothing but the cost calibration).

    ``costs`` gives each policy family's seconds per decode step (default: measured by a short calibration run,
    or fixed defaults in --quick)."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(quick=quick, out_dir=out_dir, trace_dir=trace_dir, traces=found_traces(trace_dir))
    selected = registry.select(only)
    ctx.selected = tuple(selected)
    n_proc = processes or os.cpu_count() or 1
    budget_s = 60.0 * (budget_min if budget_min is not None else (QUICK_BUDGET_MIN if quick else BUDGET_MIN))
    if console is not None:
        console.print(
            f"[bold]dpbalance reproduce[/] {'--quick ' if quick else ''}→ {out_dir}  "
            f"(traces: {', '.join(sorted(ctx.traces)) or 'bundled sample only'}); planning…"
        )
    if costs is None:
        costs = default_costs if quick else (lambda fams: calibrate(ctx, fams))
    plan = make_plan(ctx, registry.with_needs(selected), budget_s=budget_s, processes=n_proc, costs=costs)
    if ctx.level:
        ctx.note(
            "general",
            f"To fit the time budget ({budget_s / 60:.0f} min on {n_proc} processes) the optional "
            f"grid points were reduced (level {ctx.level}): see each section's grid.",
        )
    if console is not None:
        for line in plan.lines():
            console.print(line)
    if dry_run:
        return None
    for e in selected:
        if e.compute is not None:
            ctx.computed[e.name] = e.compute(ctx)
    keep = [e.keep_series for e in registry.with_needs(selected) if e.keep_series is not None]
    rep = _run(
        plan.all_cells,
        out_dir,
        backend=backend,
        processes=processes,
        trace_dir=trace_dir,
        ray_address=ray_address,
        want_series=lambda c: any(k(ctx, c) for k in keep),
        progress_factory=progress_factory,
    )
    R = Results(rep.outcomes)
    bodies = [(e, e.render(ctx, R)) for e in selected]
    sections = [(e.title, body, ctx.notes.get(e.name, [])) for e, body in bodies]
    preamble = _preamble(ctx, rep, len(plan.all_cells), time.perf_counter() - t_start)
    return write_markdown(
        out_dir / "report.md",
        title=f"dpbalance reproduction report{' (--quick)' if quick else ''}",
        preamble=preamble,
        sections=sections,
        closing=("Deviations from the papers", DEVIATIONS),
    )
