"""Parameter sweeps: grids of cells, run on a local process pool or Ray with a resumable result cache."""

from .grid import Cell, Grid, GridError, expand, load_grid
from .runner import CellOutcome, SweepReport, cell_hash, execute_cell, run_cells, select_workload, trace_identity

__all__ = [
    "Cell",
    "CellOutcome",
    "Grid",
    "GridError",
    "SweepReport",
    "cell_hash",
    "execute_cell",
    "expand",
    "load_grid",
    "run_cells",
    "select_workload",
    "trace_identity",
]
