"""The time budget: how long the selected experiments will take, and the grid level that fits.

The estimate is decode steps × a per-step cost for each policy family, scaled with G (rough: ±2×). The costs come
from a short calibration run per family (``calibrate``, which simulates) or from fixed defaults
(``default_costs``); ``make_plan`` takes either, so the planning itself never needs to simulate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..policies import PolicySpec
from ..sim.run import run_simulation
from ..sweep.grid import Cell
from ..sweep.runner import select_workload
from .base import Ctx, Experiment
from .paper import PAPER_B
from .workloads import focus_wl

#: seconds per decode step at G = 8, B = 72 before calibration, by the policy's cost class (a "solver" policy's
#: step cost depends on the free slots per step and has its own floor below)
DEFAULT_STEP_S = {"simple": 2e-5, "search": 2e-4, "solver": 2e-4}
#: an exact integer program's cost depends on the free slots per step, which a short calibration run underestimates
SOLVER_MIN_STEP_S = 5e-3
MAX_LEVEL = 2
#: fixed cost per cell (process hand-off, trace selection, writing the result), s
CELL_OVERHEAD_S = 0.1

CostFn = Callable[[set[str]], dict[str, float]]
SizeFn = Callable[[Cell], tuple[int, float]]


def family(c: Cell) -> str:
    """A cell's cost family: the policy with its predictor (sensitivity variants share one)."""
    return c.policy.variant


def _cost(fam: str) -> str:
    return PolicySpec.parse(fam).cost


def default_costs(families: Iterable[str]) -> dict[str, float]:
    return {f: DEFAULT_STEP_S[_cost(f)] for f in families}


def cell_seconds(c: Cell, step_s: float, n: int, mean_output: float) -> float:
    """Single-core seconds for one cell of ``n`` requests with this mean output, at ``step_s`` per step at G = 8."""
    if c.policy.cost == "solver":
        step_s = max(step_s, SOLVER_MIN_STEP_S)
    G, B = c.sim.workers, c.sim.slots
    steps = n * mean_output / (G * B * 0.9)
    if c.sim.arrival == "replay":
        steps *= 1.5
    grow = 0.7 + 0.3 * G / 8 if c.policy.cost == "simple" else 0.3 + 0.7 * G / 8
    return steps * step_s * grow + CELL_OVERHEAD_S


def estimate_seconds(cells: Sequence[Cell], step_s: dict[str, float], size: SizeFn) -> float:
    """Single-core seconds for every cell; ``size(cell)`` gives (requests, mean output)."""
    return sum(cell_seconds(c, step_s[family(c)], *size(c)) for c in cells)


def workload_size(ctx: Ctx, c: Cell) -> tuple[int, float]:
    """(replayed requests, mean output) of a cell, from its trace selection (loaded, not simulated)."""
    key = f"size|{c.trace.identity()}|{c.sim.seed}"
    if key not in ctx.computed:
        test, _ = select_workload(c, ctx.trace_dir)
        ctx.computed[key] = (len(test), float(test.output.mean()))
    return ctx.computed[key]


def calibrate(ctx: Ctx, families: Iterable[str]) -> dict[str, float]:
    """Seconds per decode step at G = 8, B = 72 for each policy family, measured on a short saturated run."""
    cal = dataclasses.replace(focus_wl(ctx), max_requests=ctx.q(1200, 400), label="calibration")
    known = ctx.computed.setdefault("calibration", {})
    for fam in sorted(set(families) - set(known)):
        cell = cal.cell_for("calibration", fam, workers=8, slots=PAPER_B, arrival="saturated")
        test, train = select_workload(cell, ctx.trace_dir)
        r, _ = run_simulation(test, cell.policy, cell.sim, train=train)
        known[fam] = r.sim_wall_s / max(1, r.steps)
    return {f: known[f] for f in families}


@dataclass
class Plan:
    level: int
    cells: list[tuple[str, list[Cell]]]  # (experiment, its cells) in report order
    step_s: dict[str, float]
    estimate_s: float  # wall seconds on ``processes`` processes
    budget_s: float
    processes: int
    size: SizeFn

    @property
    def all_cells(self) -> list[Cell]:
        return [c for _, cs in self.cells for c in cs]

    def seconds(self, cells: Sequence[Cell]) -> float:
        """Estimated wall seconds of these cells on the plan's processes."""
        return estimate_seconds(cells, self.step_s, self.size) / self.processes

    def lines(self) -> list[str]:
        """The plan as printed before a run: cells and estimated seconds per experiment, then the total."""
        out = [f"  {name:<12} {len(cs):>4} cells  ~{self.seconds(cs):6.0f} s" for name, cs in self.cells]
        out.append(
            f"  total        {len(self.all_cells):>4} cells  ~{self.estimate_s:6.0f} s on {self.processes} "
            f"process(es) (budget {self.budget_s:.0f} s, grid level {self.level}; rough, ±2×; cached cells are "
            "free)"
        )
        return out


def make_plan(
    ctx: Ctx,
    experiments: Sequence[Experiment],
    *,
    budget_s: float,
    processes: int,
    costs: CostFn,
    size: SizeFn | None = None,
) -> Plan:
    """Raise ``ctx.level`` (dropping optional grid points) until the estimate fits ``budget_s``; --quick keeps
    level 0. ``costs`` gives the per-step cost of each policy family, ``size`` each cell's (requests, mean
    output) (default: load its trace selection)."""
    size = size or (lambda c: workload_size(ctx, c))
    while True:
        cells = [(e.name, e.cells(ctx)) for e in experiments]
        step_s = costs({family(c) for _, cs in cells for c in cs})
        est = estimate_seconds([c for _, cs in cells for c in cs], step_s, size) / processes
        if est <= budget_s or ctx.level >= MAX_LEVEL or ctx.quick:
            return Plan(ctx.level, cells, step_s, est, budget_s, processes, size)
        ctx.level += 1
