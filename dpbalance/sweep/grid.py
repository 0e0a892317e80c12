"""Sweep cells and grid files.

A *cell* is one fully specified simulation: trace selection × policy (+ predictor) × G × B × load × seed.
A *grid file* (YAML or TOML) names a ``base`` cell and ``axes`` whose cartesian product gives the cells:

.. code-block:: yaml

    name: demo
    base: {trace: sample, max_requests: 500, slots: 16}
    axes:
      policy: [jsq_count, jsq_tokens, br0, brh]
      predictor: [oracle, survival]       # applied only to policies that take a predictor
      workers: [4, 8]
      load:                                # an axis whose values are dicts sets several fields at once
        - {arrival: saturated, visible: 32}
        - {arrival: replay, rate_scale: 4}
      seed: [0, 1]
    cells:                                 # optional extra cells, each merged over base
      - {policy: fcfs, workers: 8}

Cells are validated when the grid is expanded (unknown fields, policy names and options, SimConfig
bounds), so a typo fails before any simulation starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.config import ConfigFileError, build_from_mapping, flat_names, flat_values, nest, read_config_file
from ..core.specs import SpecError, parse_spec
from ..engine.step_time import make_step_time
from ..policies import PolicySpec
from ..sim.config import SimConfig
from ..traces.selection import TraceSelection


class GridError(ValueError):
    """A grid file or cell is malformed; the message says what to fix."""


_TRACE_FIELDS = tuple(f.name for f in fields(TraceSelection) if f.metadata.get("identity", True))
_SIM_FIELDS = tuple(flat_names(SimConfig))  # the engine model's settings flat, as on the command line
_OWN_FIELDS = ("policy", "predictor", "tag")


@dataclass(frozen=True)
class Cell:
    """One simulation: a policy on a trace selection under a simulator configuration.

    Its settings are exactly the fields of ``TraceSelection`` and ``SimConfig`` (defined once, there) plus the
    policy (a ``PolicySpec``; a spec string is parsed when the cell is made, and ``predictor`` — a grid's predictor
    axis — is folded into it for the policies that take one) and a free ``tag`` that is not part of the cache key.
    Grid files and result tables use the flat field names."""

    policy: PolicySpec = field(default_factory=lambda: PolicySpec.parse("jsq_tokens"))
    tag: str = ""
    trace: TraceSelection = field(default_factory=TraceSelection)
    sim: SimConfig = field(default_factory=SimConfig)
    predictor: InitVar[str | None] = None

    def __post_init__(self, predictor: str | None) -> None:
        try:
            spec = PolicySpec.parse(self.policy)
            if predictor is not None and spec.takes_predictor:
                given = parse_spec(self.policy)[1].get("predictor") if isinstance(self.policy, str) else None
                if given is not None and given != predictor:
                    raise GridError(f"cell {spec.label}: predictor given both in the policy spec and as predictor=")
                spec = spec.with_predictor(predictor)
        except SpecError as exc:
            raise GridError(f"cell {self.policy}: {exc}") from None
        object.__setattr__(self, "policy", spec)

    # ------------------------------------------------------------------ derived
    def identity(self) -> dict[str, Any]:
        """The fully resolved configuration that the cache key hashes (no tag, no trace directory)."""
        return {"policy": self.policy.label, "trace": self.trace.identity(), "sim": dataclasses.asdict(self.sim)}

    def short(self) -> str:
        s = self.sim
        load = s.arrival + (f"×{s.rate_scale:g}" if s.arrival == "replay" and s.rate_scale != 1 else "")
        return f"{self.policy.label} {self.trace.trace} G={s.workers} B={s.slots} {load} seed={s.seed}"

    def to_dict(self) -> dict[str, Any]:
        """Flat: own fields, then the trace selection's and the simulator's."""
        d: dict[str, Any] = {"policy": self.policy.label, "tag": self.tag}
        d.update({k: getattr(self.trace, k) for k in _TRACE_FIELDS})
        d.update(flat_values(self.sim))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        valid = _OWN_FIELDS + _TRACE_FIELDS + _SIM_FIELDS
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise GridError(f"unknown cell field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")
        own = {k: (None if d[k] is None else str(d[k])) for k in _OWN_FIELDS if k in d}
        try:
            tr = build_from_mapping(TraceSelection, {k: d[k] for k in _TRACE_FIELDS if k in d})
            sim = build_from_mapping(SimConfig, nest(SimConfig, {k: d[k] for k in _SIM_FIELDS if k in d}))
        except ConfigFileError as exc:
            raise GridError(f"cell {d}: {exc}") from None
        return cls(**own, trace=tr, sim=sim)


# ---------------------------------------------------------------------- grid files
@dataclass(frozen=True)
class Grid:
    name: str
    cells: tuple[Cell, ...]
    trace_dir: str | None = None
    save_series: bool = False


def expand(
    base: dict[str, Any] | None, axes: dict[str, list[Any]] | None = None, extra: list[dict[str, Any]] | None = None
) -> list[Cell]:
    """Cartesian product of ``axes`` over ``base`` plus ``extra`` cells; validated, duplicates removed."""
    base = dict(base or {})
    axes = dict(axes or {})
    names = list(axes)
    for k, vals in axes.items():
        if not isinstance(vals, list) or not vals:
            raise GridError(f"axis {k!r} must be a non-empty list, got {vals!r}")
    combos = []
    for values in itertools.product(*(axes[k] for k in names)):
        d = dict(base)
        for k, v in zip(names, values):
            if isinstance(v, dict):
                d.update(v)
            else:
                d[k] = v
        combos.append(d)
    if not names:
        combos = [] if extra else [dict(base)]
    for e in extra or []:
        if not isinstance(e, dict):
            raise GridError(f"each entry of 'cells' must be a mapping, got {e!r}")
        combos.append({**base, **e})
    return _unique([Cell.from_dict(d) for d in combos])


def _unique(cells: list[Cell]) -> list[Cell]:
    """Normalised, validated (policy spec, step-time spec or file), duplicates removed."""
    out: list[Cell] = []
    seen: set[str] = set()
    step_ok: set[tuple[str, int]] = set()
    for c in cells:
        try:
            if (c.sim.step_time, c.sim.slots) not in step_ok:
                make_step_time(c.sim.step_time, c.sim.slots)
                step_ok.add((c.sim.step_time, c.sim.slots))
        except SpecError as exc:
            raise GridError(f"cell {c.short()}: {exc}") from None
        key = json.dumps(c.identity(), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def with_step_time(cells, spec: str) -> tuple[Cell, ...]:
    """Every cell with this step-time model spec or file (``sweep --step-time``); cells that become equal merge."""
    return tuple(_unique([dataclasses.replace(c, sim=dataclasses.replace(c.sim, step_time=spec)) for c in cells]))


def load_grid(path: str | Path) -> Grid:
    """Read a YAML (.yaml/.yml) or TOML (.toml) grid file."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    if path.suffix not in (".yaml", ".yml", ".toml", ".json"):
        raise GridError(f"grid file {path}: use a .yaml, .yml, .toml or .json file")
    try:
        data = read_config_file(path)
    except ConfigFileError as exc:
        raise GridError(f"grid file {exc}") from None
    if not isinstance(data, dict):
        raise GridError(f"grid file {path}: expected a mapping with base/axes/cells")
    unknown = sorted(set(data) - {"name", "base", "axes", "cells", "trace_dir", "save_series"})
    if unknown:
        raise GridError(
            f"grid file {path}: unknown top-level key(s) {', '.join(unknown)}; "
            "valid: name, base, axes, cells, trace_dir, save_series"
        )
    cells = expand(data.get("base"), data.get("axes"), data.get("cells"))
    return Grid(
        name=str(data.get("name", path.stem)),
        cells=tuple(cells),
        trace_dir=data.get("trace_dir"),
        save_series=bool(data.get("save_series", False)),
    )
