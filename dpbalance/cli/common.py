"""Console, progress bar, number formatting and user-error handling shared by every command."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..core.config import ConfigFileError
from ..core.specs import SpecError
from ..sim.config import SimulationError
from ..sweep.runner import RAY_INSTALL_HINT, PoolSettings
from ..traces import TraceError
from ..traces.selection import TraceSelection
from .options import option_for

console = Console(stderr=True)
# pipes and CI logs get a wide console so tables are not squeezed to 80 columns
out = Console(width=None if sys.stdout.isatty() else 200)

# single settings some commands take on their own (defined once, in their config dataclass)
TraceOpt = option_for(TraceSelection, "trace")
TraceDirOpt = option_for(TraceSelection, "trace_dir")
BackendOpt = option_for(PoolSettings, "backend")
ProcessesOpt = option_for(PoolSettings, "processes")
RayAddressOpt = option_for(PoolSettings, "ray_address")


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


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one clear line and exit code 2."""
    try:
        yield
    except (TraceError, SpecError, SimulationError, ConfigFileError, FileNotFoundError) as exc:
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


def require_ray(backend: str) -> None:
    """For ``--backend ray``: say how to install Ray (exit code 2) before any work starts when it is missing."""
    if backend != "ray":
        return
    try:
        missing = importlib.util.find_spec("ray") is None
        if not missing:
            import ray  # noqa: F401
    except ImportError:
        missing = True
    if missing:
        console.print(f"[bold red]error:[/] {escape(RAY_INSTALL_HINT)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
