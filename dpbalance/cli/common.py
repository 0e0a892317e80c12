"""Options and helpers shared by the simulation commands (simulate, compare) and others."""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..core.specs import SpecError
from ..core.workload import Workload
from ..sim.engine import SimConfig, SimulationError
from ..traces import TraceError, load_trace

console = Console(stderr=True)
# pipes and CI logs get a wide console so tables are not squeezed to 80 columns
out = Console(width=None if sys.stdout.isatty() else 200)

# ---------------------------------------------------------------- reusable option types
TraceOpt = Annotated[str, typer.Option("--trace", "-t", help="Trace name (see `dpbalance trace list`), file path, or synthetic:... spec.")]
TraceDirOpt = Annotated[Optional[Path], typer.Option("--trace-dir", help="Directory with the trace files (default: $DPBALANCE_TRACE_DIR, else the user data directory; see `dpbalance trace list`).")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-G", min=1, help="Data-parallel decode workers G.")]
SlotsOpt = Annotated[int, typer.Option("--slots", "-B", min=1, help="Max concurrent sequences per worker B (vLLM max_num_seqs).")]
ArrivalOpt = Annotated[str, typer.Option("--arrival", help="replay (trace timestamps) | poisson (--qps) | saturated (pool topped up to --visible).")]
VisibleOpt = Annotated[Optional[int], typer.Option("--visible", min=1, help="Saturated mode: requests visible in the pool (default 4·G).")]
WindowOpt = Annotated[Optional[str], typer.Option("--window", help="Measurement window: steady (up to the last admission) | all (default: steady if saturated, else all).")]
RateScaleOpt = Annotated[float, typer.Option("--rate-scale", min=1e-9, help="Replay: multiply the trace's arrival rate by k.")]
QpsOpt = Annotated[Optional[float], typer.Option("--qps", min=1e-9, help="Poisson rate, or resample replay to this mean rate (req/s).")]
MinOutOpt = Annotated[Optional[int], typer.Option("--min-output", min=1, help="Keep requests with output >= N tokens.")]
MaxOutOpt = Annotated[Optional[int], typer.Option("--max-output", min=1, help="Keep requests with output <= N tokens.")]
MaxReqOpt = Annotated[Optional[int], typer.Option("--max-requests", "-n", min=1, help="Replay the first N requests (after filters); later rows train predictors.")]
StartOpt = Annotated[Optional[float], typer.Option("--start-s", help="Time window: keep requests arriving at or after this second.")]
EndOpt = Annotated[Optional[float], typer.Option("--end-s", help="Time window: keep requests arriving before this second.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for arrivals and randomised policies.")]
StepTimeOpt = Annotated[str, typer.Option("--step-time", help="Step-time model spec: linear_max | linear_max_mean[:a=…,b=…,c=…].")]
EnergyOpt = Annotated[str, typer.Option("--energy", help="Energy model spec: bfio_power[:p_idle=…,p_max=…,gamma=…] | busy_idle[:p_busy=…,p_idle=…].")]
PrefillOpt = Annotated[float, typer.Option("--prefill-delay", min=0.0, help="Fixed seconds between arrival and joining the decode pool.")]
TrainOpt = Annotated[float, typer.Option("--train-split", min=0.0, max=0.9, help="Fraction of the (filtered) trace, taken from its start, that trains predictors instead of being replayed. 0 = train on rows after --max-requests.")]


@dataclass(frozen=True)
class TraceSelection:
    trace: str
    trace_dir: Path | None = None
    min_output: int | None = None
    max_output: int | None = None
    max_requests: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    train_split: float = 0.0

    def as_config(self) -> dict:
        """JSON-friendly record of the selection for the result's config."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    def load(self) -> tuple[Workload, Workload | None]:
        """(replayed requests, training requests or None). Training rows never overlap replayed rows."""
        full = load_trace(self.trace, self.trace_dir)
        w = full.filter(min_output=self.min_output, max_output=self.max_output, start_s=self.start_s, end_s=self.end_s)
        if len(w) == 0:
            raise TraceError(self.trace, None, "no requests left after the filters")
        if self.train_split > 0:
            train, w = w.split(self.train_split)
            if self.max_requests is not None:
                w = w.filter(max_requests=self.max_requests)
            return w, train
        if self.max_requests is not None and self.max_requests < len(w):
            train, test = w.head_tail(self.max_requests)
            return test.filter(max_requests=self.max_requests), train
        return w, None


def fmt_number(v) -> str:
    """A metric for a table: thousands separators for large values, 4 significant digits for small ones."""
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.4g}"
    return str(v)


def sim_config(**kw) -> SimConfig:
    arrival = kw.get("arrival")
    if arrival not in ("replay", "poisson", "saturated"):
        raise typer.BadParameter(f"--arrival must be replay, poisson or saturated (got {arrival!r})")
    window = kw.get("window")
    if window not in (None, "steady", "all"):
        raise typer.BadParameter(f"--window must be steady or all (got {window!r})")
    try:
        return SimConfig(**kw)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one clear line and exit code 2."""
    try:
        yield
    except (TraceError, SpecError, SimulationError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def progress_bar(unit: str = "requests", *extra) -> Progress:
    """The progress bar every long command shows (on stderr, so tables on stdout stay clean)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra,
        console=console,
        transient=False,
    )
