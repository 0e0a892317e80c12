"""Run sweep cells with a result cache, on a local process pool or on Ray, and merge them into one table.

Every finished cell is written at once as ``cells/<hash>.json`` (the run's result, atomically), so a
sweep that is killed half-way resumes: cells whose file exists are loaded, not recomputed. The hash
covers the fully resolved cell (canonical policy spec, every SimConfig field, trace selection), the
package version, the trace file's content hash and a step-time file's content hash; anything else (tags,
output paths, backend, process count) does not change a cell's result and is not in the key.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from ..core.config import setting
from ..core.workload import Workload
from ..engine.step_time import step_time_identity
from ..results.schema import TABLE_FIELDS, Result, Series, write_json
from .grid import Cell, GridError

RAY_INSTALL_HINT = (
    "the ray backend needs Ray: pip install -e '.[ray]'  (or: pip install 'ray>=2.9'); "
    "then re-run with --backend ray, or use --backend local"
)


@dataclass(frozen=True)
class PoolSettings:
    """Where the cells of a sweep (or of ``reproduce`` and ``matrix``) run. ``processes`` is the number of OS
    processes, not the simulated ranks (``workers``, G, is a simulator setting)."""

    backend: Literal["local", "ray"] = setting(
        "local",
        "local (process pool on this machine) | ray (Ray tasks; needs Ray: the package's ray extra)",
        flags=("--backend", "-b"),
    )
    processes: int | None = setting(
        None,
        "parallel processes (local) or CPUs for a local Ray (default: all cores); 1 = run in this process",
        flags=("--processes", "-j"),
        min=1,
    )
    ray_address: str | None = setting(
        None, "Ray cluster address for ray.init(address=...), e.g. ray://head:10001 or auto (default: a local Ray)"
    )


# ---------------------------------------------------------------------- workload selection
@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def trace_identity(trace: str, trace_dir: str | None) -> str:
    """Content identity of a trace: the file's sha256 (path-independent), or the synthetic spec itself."""
    if trace.startswith("synthetic"):
        return trace
    from ..traces import resolve_trace

    path, fmt, name = resolve_trace(trace, trace_dir)
    st = path.stat()
    return f"{name}:{fmt}:{_file_digest(str(path.resolve()), st.st_size, st.st_mtime)}"


#: the parts of the package a simulated cell's result depends on (the CLI, router, reports and so on do not)
RESULT_CODE = ("core", "engine", "policies", "predictors", "sim", "traces", "results/schema.py", "sweep")


@lru_cache(maxsize=1)
def code_identity() -> str:
    """A digest of the source that computes a cell's result: a cached cell is reused only by the code that
    computed it (a policy changed during development must not be served stale results under the same version)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for part in RESULT_CODE:
        for p in sorted((root / part).rglob("*.py")) if (root / part).is_dir() else [root / part]:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def cell_hash(cell: Cell, trace_dir: str | None) -> str:
    payload = {
        "cell": cell.identity(),
        "version": code_identity(),
        "trace": trace_identity(cell.trace.trace, trace_dir),
        "step_time": step_time_identity(cell.sim.step_time),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def select_workload(cell: Cell, trace_dir: str | None) -> tuple[Workload, Workload | None]:
    """(replayed requests, training requests or None) for a cell: the one selection rule of
    ``traces.selection`` (resampling seeded by the cell's seed)."""
    from ..traces import TraceError

    sel = dataclasses.replace(cell.trace, trace_dir=Path(trace_dir) if trace_dir else cell.trace.trace_dir)
    try:
        return sel.load(seed=cell.sim.seed)
    except TraceError as exc:
        raise GridError(f"cell {cell.short()}: {exc}") from None


# ---------------------------------------------------------------------- one cell
def execute_cell(
    cell_dict: dict[str, Any],
    trace_dir: str | None,
    key: str,
    want_series: bool = False,
    workloads: tuple[Workload, Workload | None] | None = None,
    trace_id: str | None = None,
) -> dict[str, Any]:
    """Simulate one cell; returns ``{"hash", "result": result dict, "series": arrays or None}``.

    A plain function of plain data so it pickles under ``spawn`` and runs unchanged as a Ray task. With
    ``workloads`` and ``trace_id`` given (the Ray driver does this) it never touches the trace directory.
    """
    from ..sim.run import run_simulation

    cell = Cell.from_dict(cell_dict)
    test, train = workloads if workloads is not None else select_workload(cell, trace_dir)
    cfg = cell.sim
    extra = {
        "sweep": {
            "cell": cell.to_dict(),
            "hash": key,
            "version": code_identity(),
            "trace_identity": trace_id or trace_identity(cell.trace.trace, trace_dir),
            "replayed": len(test),
            "train_rows": 0 if train is None else len(train),
        }
    }
    res, series = run_simulation(test, cell.policy, cfg, train=train, label=cell.tag, extra_config=extra)
    out: dict[str, Any] = {"hash": key, "result": res.to_dict(), "series": None}
    if want_series:
        out["series"] = {k: getattr(series, k) for k in series.__dataclass_fields__}
    return out


# ---------------------------------------------------------------------- sweep
@dataclass
class CellOutcome:
    cell: Cell
    hash: str
    result: Result
    cached: bool
    series_path: Path | None = None

    def series(self) -> Series | None:
        return Series.load(self.series_path) if self.series_path is not None and self.series_path.exists() else None


@dataclass
class SweepReport:
    out_dir: Path
    outcomes: list[CellOutcome]
    computed: int
    cached: int
    wall_s: float
    tables: list[Path] = field(default_factory=list)

    def results(self) -> list[Result]:
        return [o.result for o in self.outcomes]


def cell_paths(out_dir: Path, key: str) -> tuple[Path, Path]:
    d = out_dir / "cells"
    return d / f"{key}.json", d / f"{key}.series.npz"


def _load_cached(path: Path) -> Result | None:
    try:
        data = json.loads(path.read_text())
        return Result.from_dict(data)
    except (OSError, ValueError, TypeError):
        return None  # missing or unreadable (e.g. from an older schema): recompute


ProgressCb = Callable[[int, int, str], None]


def run_cells(
    cells: Sequence[Cell],
    out_dir: str | Path,
    *,
    backend: str = "local",
    processes: int | None = None,
    trace_dir: str | None = None,
    ray_address: str | None = None,
    save_series: bool | Callable[[Cell], bool] = False,
    progress: ProgressCb | None = None,
    write_tables: bool = True,
) -> SweepReport:
    """Run every cell not already cached in ``out_dir/cells``; return all outcomes in cell order.

    ``processes`` OS processes run the cells (default: all cores; 1 runs them in this process; with a local Ray,
    its CPUs). ``save_series`` (all cells, or a predicate per cell) also keeps per-step series for plots."""
    want = save_series if callable(save_series) else (lambda c, _v=bool(save_series): _v)
    if backend not in ("local", "ray"):
        raise GridError(f"unknown backend {backend!r}; use local or ray")
    out_dir = Path(out_dir)
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    keys = [cell_hash(c, trace_dir) for c in cells]
    outcomes: dict[int, CellOutcome] = {}
    todo: list[int] = []
    first_of: dict[str, int] = {}
    for i, (c, k) in enumerate(zip(cells, keys)):
        if k in first_of:  # identical cell listed twice: compute once
            continue
        first_of[k] = i
        jpath, spath = cell_paths(out_dir, k)
        res = _load_cached(jpath) if jpath.exists() else None
        if res is not None and (not want(c) or spath.exists()):
            outcomes[i] = CellOutcome(c, k, res, True, spath if spath.exists() else None)
        else:
            todo.append(i)
    n_cached = len(outcomes)
    total = len(first_of)
    if progress:
        progress(n_cached, total, f"{n_cached} cached")

    def finish(i: int, payload: dict[str, Any]) -> None:
        c, k = cells[i], keys[i]
        jpath, spath = cell_paths(out_dir, k)
        res = Result.from_dict(payload["result"])
        sp = None
        if payload.get("series") is not None:
            Series(**payload["series"]).save(spath.with_suffix(".tmp.npz"))
            spath.with_suffix(".tmp.npz").replace(spath)
            sp = spath
        write_json(jpath, res)  # last: a JSON file means the cell is complete
        outcomes[i] = CellOutcome(c, k, res, False, sp)
        if progress:
            progress(len(outcomes), total, c.short())

    if todo:
        if backend == "ray":
            _run_ray(cells, keys, todo, trace_dir, ray_address, want, finish, processes)
        elif (processes or 0) == 1 or len(todo) == 1:
            for i in todo:
                finish(i, execute_cell(cells[i].to_dict(), trace_dir, keys[i], want(cells[i])))
        else:
            _run_local(cells, keys, todo, trace_dir, want, finish, processes)
    ordered = []
    for i, k in enumerate(keys):
        o = outcomes[first_of[k]]
        res = o.result if o.result.label == cells[i].tag else dataclasses.replace(o.result, label=cells[i].tag)
        ordered.append(CellOutcome(cells[i], k, res, o.cached, o.series_path))
    report = SweepReport(out_dir, ordered, computed=len(todo), cached=n_cached, wall_s=time.perf_counter() - t0)
    if write_tables:
        report.tables = write_table(out_dir, ordered)
    return report


def _run_local(cells, keys, todo, trace_dir, want, finish, processes) -> None:
    # one BLAS thread per process: the pool already uses every core
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    n = max(1, min(processes or os.cpu_count() or 1, len(todo)))
    # largest cells first so the pool does not end on one long straggler
    order = sorted(todo, key=lambda i: -_cost_hint(cells[i]))
    ex = ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn"))
    try:
        pending = {ex.submit(execute_cell, cells[i].to_dict(), trace_dir, keys[i], want(cells[i])): i for i in order}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                finish(i, fut.result())
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _run_ray(cells, keys, todo, trace_dir, address, want, finish, processes) -> None:
    try:
        import ray
    except ImportError:
        raise GridError(RAY_INSTALL_HINT) from None
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
        if address:
            kw["address"] = address
        elif processes:
            kw["num_cpus"] = processes
        ray.init(**kw)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(execute_cell)
        # the driver loads each distinct trace selection once and ships it through the object store, so
        # cluster nodes need no copy of the trace directory
        refs_by_sel: dict[str, Any] = {}
        pending = {}
        for i in sorted(todo, key=lambda i: -_cost_hint(cells[i])):
            c = cells[i]
            ident = c.trace.identity()
            if c.trace.resample is not None:
                ident["seed"] = c.sim.seed  # the bootstrap draw depends on the seed
            sel = json.dumps(ident, sort_keys=True, default=str)
            if sel not in refs_by_sel:
                refs_by_sel[sel] = ray.put(select_workload(c, trace_dir))
            ref = remote.remote(
                c.to_dict(), trace_dir, keys[i], want(c), refs_by_sel[sel], trace_identity(c.trace.trace, trace_dir)
            )
            pending[ref] = i
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                finish(i, ray.get(ref))
    except BaseException:
        for ref in list(locals().get("pending", {})):
            try:
                ray.cancel(ref)
            except Exception:  # pragma: no cover - best effort
                pass
        raise
    finally:
        if started:
            ray.shutdown()


def _cost_hint(c: Cell) -> float:
    """Rough relative cost of a cell, for scheduling long cells first."""
    n = c.trace.resample or (c.trace.max_requests or 10_000) * c.trace.repeat
    w = 0.1 if c.policy.cost == "simple" else 1.0
    return n * w * (1 + c.sim.workers / 16)


# ---------------------------------------------------------------------- tables
def table_rows(outcomes: Iterable[CellOutcome]) -> list[dict[str, Any]]:
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"cell_hash": o.hash}
        row.update({k: v for k, v in o.cell.to_dict().items() if k != "predictor"})
        row["policy"] = o.result.policy
        row["window"] = o.result.window
        for f in TABLE_FIELDS:
            if f != "policy":
                row[f] = getattr(o.result, f)
        row["cached"] = o.cached
        rows.append(row)
    return rows


def write_table(out_dir: Path, outcomes: Sequence[CellOutcome]) -> list[Path]:
    """``results.csv`` (+ ``results.parquet`` when pyarrow is installed) and ``results.json`` (every result in full)."""
    rows = table_rows(outcomes)
    paths = []
    csv_path = out_dir / "results.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        cols = list(rows[0]) if rows else ["cell_hash"]
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        for r in rows:
            wr.writerow({k: ("" if v is None else v) for k, v in r.items()})
    tmp.replace(csv_path)
    paths.append(csv_path)
    write_json(out_dir / "results.json", [o.result for o in outcomes])
    paths.append(out_dir / "results.json")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return paths
    if rows:
        cols = {k: [r[k] for r in rows] for k in rows[0]}
        pq.write_table(pa.table(cols), out_dir / "results.parquet")
        paths.append(out_dir / "results.parquet")
    return paths
