"""Trace-driven simulator of barrier-synchronized data-parallel serving (decode-only, or the engine model)."""

from ..engine.step_time import STEP_TIME, make_step_time
from .config import SimConfig, SimulationError, arrival_times
from .energy import ENERGY, make_energy
from .loop import Loop, simulate
from .record import RunRecord
from .run import run_simulation, summarize

__all__ = [
    "ENERGY",
    "STEP_TIME",
    "Loop",
    "RunRecord",
    "SimConfig",
    "SimulationError",
    "arrival_times",
    "make_energy",
    "make_step_time",
    "run_simulation",
    "simulate",
    "summarize",
]
