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
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..core.specs import SpecError, parse_spec, spec_string
from ..sim.engine import SimConfig

#: SimConfig fields a cell may set (the rest of the cell is the trace selection and the policy)
SIM_FIELDS = ("workers", "slots", "arrival", "visible", "rate_scale", "qps", "window", "seed", "step_time", "energy",
              "prefill_delay_s")


class GridError(ValueError):
    """A grid file or cell is malformed; the message says what to fix."""


@dataclass(frozen=True)
class Cell:
    """One simulation. Every field is part of the cell's cache identity except ``tag``."""

    policy: str = field(default="jsq_tokens", metadata={"doc": "policy spec, e.g. brh:H=40"})
    predictor: str | None = field(default=None, metadata={"doc": "predictor for policies with a predictor option"})
    trace: str = field(default="sample", metadata={"doc": "trace name, file path or synthetic:... spec"})
    min_output: int | None = field(default=None, metadata={"doc": "keep requests with output >= N"})
    max_output: int | None = field(default=None, metadata={"doc": "keep requests with output <= N"})
    max_requests: int | None = field(default=None, metadata={"doc": "replay at most N requests (after filters)"})
    holdout: float = field(default=0.2, metadata={
        "doc": "training rows reserved for predictors, as a fraction of the replayed count; replayed requests "
               "come first, training rows after them (disjoint). 0 = no training split"})
    resample: int | None = field(default=None, metadata={
        "doc": "replay N (prompt, output) rows drawn jointly with replacement from the filtered trace (seeded by "
               "seed; no timestamps); with holdout > 0 the trace's last holdout/(1+holdout) rows are kept out of the "
               "draw and train the predictors"})
    workers: int = field(default=8, metadata={"doc": "G"})
    slots: int = field(default=72, metadata={"doc": "B"})
    arrival: str = field(default="saturated", metadata={"doc": "replay | poisson | saturated"})
    visible: int | None = field(default=None, metadata={"doc": "saturated pool size (default 4·G)"})
    rate_scale: float = field(default=1.0, metadata={"doc": "replay rate multiplier"})
    qps: float | None = field(default=None, metadata={"doc": "poisson rate / replay resampled rate"})
    window: str | None = field(default=None, metadata={"doc": "steady | all (default by arrival mode)"})
    seed: int = field(default=0, metadata={"doc": "simulation seed"})
    step_time: str = field(default="linear_max", metadata={"doc": "step-time model spec"})
    energy: str = field(default="bfio_power", metadata={"doc": "energy model spec"})
    prefill_delay_s: float = field(default=0.0, metadata={"doc": "fixed prefill delay"})
    tag: str = field(default="", compare=False, metadata={"doc": "free label (not part of the cache key)"})

    # ------------------------------------------------------------------ derived
    def sim_config(self) -> SimConfig:
        try:
            return SimConfig(**{k: getattr(self, k) for k in SIM_FIELDS})
        except ValueError as exc:
            raise GridError(f"cell {self.short()}: {exc}") from None

    def policy_spec(self) -> str:
        """Canonical policy spec with the predictor folded in (validates name and options)."""
        from ..policies import POLICIES

        name, opts = parse_spec(self.policy)
        entry = POLICIES.entry(name)
        if self.predictor is not None and _takes_predictor(entry):
            if "predictor" in opts and opts["predictor"] != self.predictor:
                raise GridError(f"cell {self.short()}: predictor given both in the policy spec and as predictor=")
            opts = {**opts, "predictor": self.predictor}
        spec = name + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")
        entry, cfg = POLICIES.config_for(spec)
        return spec_string(entry.name, cfg) if cfg is not None else entry.name

    def normalized(self) -> "Cell":
        """Canonical form: predictor folded into the policy spec (or dropped if the policy takes none)."""
        return dataclasses.replace(self, policy=self.policy_spec(), predictor=None)

    def identity(self) -> dict[str, Any]:
        """The fully resolved configuration that the cache key hashes (no tag)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("tag", "predictor")}
        d["policy"] = self.policy_spec()
        d["sim"] = dataclasses.asdict(self.sim_config())
        return d

    def short(self) -> str:
        load = self.arrival + (f"×{self.rate_scale:g}" if self.arrival == "replay" and self.rate_scale != 1 else "")
        pred = f"[{self.predictor}]" if self.predictor else ""
        return f"{self.policy}{pred} {self.trace} G={self.workers} B={self.slots} {load} seed={self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        valid = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise GridError(f"unknown cell field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")
        kw = {}
        for k, v in d.items():
            kw[k] = _coerce(k, v, valid[k])
        return cls(**kw)


def _takes_predictor(entry) -> bool:
    return entry.config_cls is not None and any(f.name == "predictor" for f in fields(entry.config_cls))


def _coerce(name: str, value: Any, f) -> Any:
    """YAML/TOML values to the field's type (ints may arrive as floats and vice versa)."""
    if value is None:
        return None
    default = f.default
    if name in ("workers", "slots", "seed", "visible", "max_requests", "min_output", "max_output", "resample"):
        if isinstance(value, bool) or not float(value).is_integer():
            raise GridError(f"cell field {name!r} must be an integer, got {value!r}")
        return int(value)
    if name in ("rate_scale", "qps", "holdout", "prefill_delay_s"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise GridError(f"cell field {name!r} must be a number, got {value!r}") from None
    if isinstance(default, str) or name in ("predictor", "window"):
        return str(value)
    return value


# ---------------------------------------------------------------------- grid files
@dataclass(frozen=True)
class Grid:
    name: str
    cells: tuple[Cell, ...]
    trace_dir: str | None = None
    save_series: bool = False


def expand(base: dict[str, Any] | None, axes: dict[str, list[Any]] | None = None,
           extra: list[dict[str, Any]] | None = None) -> list[Cell]:
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
    cells: list[Cell] = []
    seen: set[str] = set()
    for d in combos:
        c = Cell.from_dict(d)
        try:
            c = c.normalized()
            c.sim_config()
        except SpecError as exc:
            raise GridError(f"cell {c.short()}: {exc}") from None
        key = json.dumps(c.identity(), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            cells.append(c)
    return cells


def load_grid(path: str | Path) -> Grid:
    """Read a YAML (.yaml/.yml) or TOML (.toml) grid file."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text)
        else:
            raise GridError(f"grid file {path}: use a .yaml, .yml or .toml file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise GridError(f"grid file {path} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise GridError(f"grid file {path}: expected a mapping with base/axes/cells")
    unknown = sorted(set(data) - {"name", "base", "axes", "cells", "trace_dir", "save_series"})
    if unknown:
        raise GridError(f"grid file {path}: unknown top-level key(s) {', '.join(unknown)}; "
                        "valid: name, base, axes, cells, trace_dir, save_series")
    cells = expand(data.get("base"), data.get("axes"), data.get("cells"))
    return Grid(name=str(data.get("name", path.stem)), cells=tuple(cells), trace_dir=data.get("trace_dir"),
                save_series=bool(data.get("save_series", False)))
