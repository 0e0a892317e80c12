"""Trace-driven simulator of barrier-synchronized DP decoding."""

from ..engine.step_time import STEP_TIME, make_step_time
from .energy import ENERGY, make_energy
from .engine import RunRecord, SimConfig, SimulationError, arrival_times, simulate
from .run import run_simulation, summarize

__all__ = [
    "ENERGY",
    "STEP_TIME",
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
