"""What an experiment is, the context it runs in, and how it finds its results.

An experiment contributes sweep cells (run together with every other experiment's on one process pool, and
cached, so an interrupted run resumes), an optional in-process computation, and one report section rendered
from the results. It may also add rows to the summary that opens the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policies import PolicySpec
from ..results.schema import Result
from ..sim.config import SimConfig
from ..sweep.grid import Cell
from ..sweep.runner import CellOutcome
from ..traces import load_trace
from ..traces.selection import TraceSelection
from .render import Section

#: our policies, by their labels (each label is a policy spec and names its predictor)
OURS: tuple[str, ...] = tuple(
    PolicySpec.parse(s).label
    for s in (
        "br0",
        "brh:predictor=oracle",
        "brh:predictor=survival",
        "brh:predictor=exact_match",
        "bfio:predictor=oracle",
    )
)


@dataclass(frozen=True)
class WL:
    """A workload variant: a trace selection with a name for the report."""

    label: str
    trace: str
    min_output: int | None = None
    max_requests: int | None = None
    train_split: float = 0.0
    resample: int | None = None

    def selection(self) -> TraceSelection:
        return TraceSelection(
            trace=self.trace,
            min_output=self.min_output,
            max_requests=self.max_requests,
            train_split=self.train_split,
            resample=self.resample,
        )

    def cell(self, tag: str, label: str, **sim: Any) -> Cell:
        """The cell running the policy of ``label`` (a policy spec) on this workload with the given simulator
        settings."""
        return self.cell_for(tag, label, **sim)

    def cell_for(self, tag: str, policy: str, predictor: str | None = None, **sim: Any) -> Cell:
        return Cell(policy=policy, predictor=predictor, tag=tag, trace=self.selection(), sim=SimConfig(**sim))


@dataclass
class Ctx:
    """Everything an experiment may read while it builds cells or renders: the mode, the traces found, and the
    notes and computed values of this run."""

    quick: bool
    out_dir: Path
    trace_dir: str | None
    traces: set[str]
    #: 0 = full grids; each level drops the most expensive optional points to fit the time budget
    level: int = 0
    notes: dict[str, list[str]] = field(default_factory=dict)
    computed: dict[str, Any] = field(default_factory=dict)
    #: the experiments of this run, in report order (set by the driver)
    selected: tuple[Experiment, ...] = ()
    _rows: dict[tuple[str, int | None], int] = field(default_factory=dict)

    def q(self, full, quick):
        """``quick`` in --quick runs, else ``full``."""
        return quick if self.quick else full

    def note(self, section: str, text: str) -> None:
        """A remark printed under a section (once, however often it is made)."""
        notes = self.notes.setdefault(section, [])
        if text not in notes:
            notes.append(text)

    def rows(self, trace: str, min_output: int | None = None) -> int:
        """Requests in a trace after the output filter (loaded once)."""
        key = (trace, min_output)
        if key not in self._rows:
            self._rows[key] = len(load_trace(trace, self.trace_dir).filter(min_output=min_output))
        return self._rows[key]

    def held_out(self, label: str, trace: str, min_output: int | None, n: int) -> WL:
        """The first ``n`` requests, with the rows after them training the predictors; a trace too short to
        leave a fifth of that for training trains on its first 20 % instead (the rest is replayed)."""
        if self.rows(trace, min_output) >= 1.2 * n:
            return WL(label, trace, min_output, n)
        return WL(label, trace, min_output, n, train_split=0.2)


def no_cells(ctx: Ctx) -> list[Cell]:
    return []


@dataclass(frozen=True)
class Experiment:
    """One section of the reproduction report.

    ``needs`` names experiments whose cells this one reads (they run even when not selected); ``follows`` names
    an experiment that selects this one too (``--only main`` also renders the anchors); ``always`` sections
    are part of every report. ``summary`` adds (paper figure, paper's number, ours) rows to the report's
    opening summary; ``keep_series`` says which cells keep their per-step time series for plots."""

    name: str
    title: str
    render: Callable[[Ctx, Results], Section]
    cells: Callable[[Ctx], list[Cell]] = no_cells
    compute: Callable[[Ctx], Any] | None = None
    summary: Callable[[Ctx, Results], list[list[str]]] | None = None
    keep_series: Callable[[Ctx, Cell], bool] | None = None
    needs: tuple[str, ...] = ()
    follows: str | None = None
    always: bool = False


class Results:
    """Outcomes by tag ``experiment|workload|label`` (cells keep their own tags even when deduplicated)."""

    def __init__(self, outcomes: list[CellOutcome]):
        self.by_tag: dict[str, list[CellOutcome]] = {}
        for o in outcomes:
            self.by_tag.setdefault(o.cell.tag, []).append(o)

    def get(self, tag: str, **sim: Any) -> Result | None:
        """The result of the cell with this tag whose simulator settings match ``sim`` (e.g. ``workers=8``)."""
        for o in self.by_tag.get(tag, []):
            if all(getattr(o.cell.sim, k) == v for k, v in sim.items()):
                return o.result
        return None

    def outcome(self, tag: str) -> CellOutcome | None:
        found = self.by_tag.get(tag)
        return found[0] if found else None

    def outcomes(self, prefix: str) -> list[CellOutcome]:
        return [o for t, found in self.by_tag.items() if t.startswith(prefix) for o in found]

    def labelled(self, prefix: str, labels) -> dict[str, Result]:
        """``{label: result}`` for the tags ``prefix + label`` that have a result."""
        return {lab: r for lab in labels if (r := self.get(prefix + lab)) is not None}


def best_by_throughput(res: dict[str, Result], among) -> tuple[str | None, Result | None]:
    """The label and result with the highest window throughput among the labels ``among``."""
    cands = [(r.throughput_tok_s, lab) for lab, r in res.items() if lab in among and r is not None]
    if not cands:
        return None, None
    _, lab = max(cands)
    return lab, res[lab]
