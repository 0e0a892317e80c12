"""Every experiment of the reproduction report, in report order: the one list ``reproduce`` runs from.

Adding an experiment is one module that defines ``EXPERIMENT`` and one line below.
"""

from __future__ import annotations

from . import (
    anchors,
    bfio_sweeps,
    energy,
    main_table,
    optimal,
    overhead,
    predictors,
    regimes,
    scaling,
    sensitivity,
    summary,
    theory,
)
from .base import Experiment

EXPERIMENTS: tuple[Experiment, ...] = (
    summary.EXPERIMENT,
    main_table.EXPERIMENT,
    anchors.EXPERIMENT,
    scaling.EXPERIMENT,
    sensitivity.EXPERIMENT,
    bfio_sweeps.EXPERIMENT,
    theory.EXPERIMENT,
    energy.EXPERIMENT,
    predictors.EXPERIMENT,
    optimal.EXPERIMENT,
    regimes.EXPERIMENT,
    overhead.EXPERIMENT,
)

BY_NAME: dict[str, Experiment] = {e.name: e for e in EXPERIMENTS}


def select(names: list[str] | None) -> list[Experiment]:
    """The experiments a run renders, in report order: ``names`` (all when None), the ones that follow a named
    one, and the sections every report has. Unknown names raise ``ValueError`` listing the valid ones."""
    if names is None:
        return list(EXPERIMENTS)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; valid: {', '.join(BY_NAME)}")
    return [e for e in EXPERIMENTS if e.name in names or e.follows in names or e.always]


def with_needs(selected: list[Experiment]) -> list[Experiment]:
    """``selected`` plus the experiments whose cells they read, in report order."""
    names = {e.name for e in selected}
    names |= {n for e in selected for n in e.needs}
    return [e for e in EXPERIMENTS if e.name in names]
