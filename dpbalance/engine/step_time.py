"""Step-time models, registered by name and configured by spec strings: a decode step's per-worker loads (and, for
some models, running sequences) to its duration. The simulator and the emulator both time their steps with them.

A step-time spec is either ``name[:key=value,...]`` or a step-time file (``.yaml``, ``.yml`` or ``.json``)
written by ``dpbalance calibrate``: ``FILE`` uses the model the file recommends, ``FILE:model=linear_max_mean``
another model the file holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..core.config import setting
from ..core.costs import PREFILL_ATTN_DEFAULT, PREFILL_TOK_DEFAULT, T_TOK_DEFAULT, StepCosts
from ..core.specs import Entry, Registry, SpecError, build_config, parse_spec


def _default_c(slots: int) -> float:
    """C = (B·0.6e-3 + 35e-3)/16 s: fixed per-step cost of a DeepSeek-V3-like MLA decode on one rank."""
    return (slots * 0.6e-3 + 35e-3) / 16.0


class StepTimeModel:
    """How long a step takes. Decode-only callers use ``__call__`` (the straggler's and the mean load, and for
    ``uses_seqs`` models the running sequences); the engine model uses ``rank_times``: each rank's busy time with
    its prefill work added, the step lasting as long as the slowest rank's (the barrier)."""

    name = "step_time"
    source: str | None = None  # the step-time file the constants came from, if any
    #: True when the step time also depends on the number of running sequences (callers then pass them)
    uses_seqs: bool = False
    #: the per-rank form: busy_g = c + a·L_g + b·mean L + s·n_g + r·mean n + prefill_tok·T_g + prefill_attn·A_g
    c = a = b = s = r = 0.0
    #: seconds per prefill token and per prefill token·context token (None: not known, e.g. an old calibration)
    prefill_tok: float | None = None
    prefill_attn: float | None = None
    #: seconds per prefill token of the mean rank, added to every rank's step (work the ranks share)
    prefill_shared: float = 0.0
    #: seconds of a rank's step per request it admits (a request's arrival and end: server and scheduler work)
    per_request: float = 0.0

    def __call__(self, max_load: float, mean_load: float, max_seqs: float = 0.0, mean_seqs: float = 0.0) -> float:
        raise NotImplementedError

    def vector(self, max_load: np.ndarray, mean_load: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def busy(self, loads: np.ndarray) -> np.ndarray:
        """Time worker(s) with these loads would be busy in a step (the rest of τ is barrier idle)."""
        return self.vector(loads, loads)

    def rank_times(
        self,
        loads: np.ndarray,
        seqs: np.ndarray,
        prefill_tokens: np.ndarray,
        prefill_attn: np.ndarray,
        requests: np.ndarray | None = None,
    ) -> np.ndarray:
        """[G] busy time of every rank in one step: its decode work (``loads`` KV tokens over ``seqs`` running
        sequences) plus its prefill work (``prefill_tokens`` tokens computed, ``prefill_attn`` token·context pairs
        attended), plus the prefill the ranks share (``prefill_shared`` per prompt token of the mean rank), plus
        ``per_request`` for each of the ``requests`` it admitted since the last step; the step lasts their
        maximum."""
        shared = self.c + self.b * float(loads.mean()) + self.r * float(seqs.mean())
        if self.prefill_shared:
            shared += self.prefill_shared * float(prefill_tokens.mean())
        t = shared + self.a * loads + self.s * seqs
        if self.prefill_tok:
            t = t + self.prefill_tok * prefill_tokens
        if self.prefill_attn:
            t = t + self.prefill_attn * prefill_attn
        if self.per_request and requests is not None:
            t = t + self.per_request * requests
        return t

    def params(self) -> dict:
        raise NotImplementedError

    def costs(self, workers: int) -> StepCosts:
        """The marginal prices a policy weighs (``core.costs``): a KV token on the busiest of ``workers`` ranks
        raises the step by ``a + b / workers``; prefill terms the model does not have take the defaults. A model
        whose step does not grow with the busiest rank's load (a calibration that found no load term) is given a
        token price a million times below a prefill token's: decode balance is then nearly free at the barrier."""
        pt = PREFILL_TOK_DEFAULT if self.prefill_tok is None else self.prefill_tok
        pa = PREFILL_ATTN_DEFAULT if self.prefill_attn is None else self.prefill_attn
        t = self.a + self.b / max(workers, 1)
        return StepCosts(t_tok=t if t > 0 else (pt or PREFILL_TOK_DEFAULT) * 1e-6, prefill_tok=pt, prefill_attn=pa)

    def _prefill_params(self) -> dict:
        out = {}
        if self.prefill_tok is not None:
            out["prefill_tok_s"] = self.prefill_tok
        if self.prefill_attn is not None:
            out["prefill_attn_s"] = self.prefill_attn
        if self.prefill_shared:
            out["prefill_shared_s"] = self.prefill_shared
        if self.per_request:
            out["per_request_s"] = self.per_request
        return out


@dataclass(frozen=True)
class PrefillCosts:
    """The prefill terms every step-time model has (used when the engine models prefill)."""

    prefill_tok: float | None = setting(PREFILL_TOK_DEFAULT, "seconds per prompt token a rank prefills")
    prefill_attn: float | None = setting(
        PREFILL_ATTN_DEFAULT, "seconds per prompt token prefilled per token of context it attends to"
    )
    prefill_shared: float = setting(
        0.0,
        "seconds per prompt token prefilled, averaged over the ranks, added to every rank's step: prefill work "
        "the ranks share (experts under expert parallelism, one host's cores and memory bandwidth)",
        min=0.0,
    )
    per_request: float = setting(
        0.0,
        "seconds added to a rank's step for each request it admits: the work of a request's arrival and end "
        "(HTTP, input and output processing, scheduling) that no token term carries; charged in the first step "
        "after it is placed, when the engine model runs",
        min=0.0,
    )


def _set_prefill(model: StepTimeModel, cfg: PrefillCosts) -> None:
    model.prefill_tok = None if cfg.prefill_tok is None else float(cfg.prefill_tok)
    model.prefill_attn = None if cfg.prefill_attn is None else float(cfg.prefill_attn)
    model.prefill_shared = float(cfg.prefill_shared or 0.0)
    model.per_request = float(cfg.per_request or 0.0)


@dataclass(frozen=True)
class LinearMaxConfig(PrefillCosts):
    C: float | None = setting(None, "fixed step cost, s (default (B·0.6e-3+35e-3)/16)")
    t_tok: float = setting(T_TOK_DEFAULT, "seconds per KV token of the straggler")


class LinearMax(StepTimeModel):
    def __init__(self, cfg: LinearMaxConfig, *, slots: int):
        self.C = _default_c(slots) if cfg.C is None else float(cfg.C)
        self.t_tok = float(cfg.t_tok)
        self.c, self.a = self.C, self.t_tok
        _set_prefill(self, cfg)

    def __call__(self, max_load, mean_load, max_seqs=0.0, mean_seqs=0.0):
        return self.C + self.t_tok * max_load

    def vector(self, max_load, mean_load):
        return self.C + self.t_tok * np.asarray(max_load, dtype=np.float64)

    def params(self):
        return {"model": "linear_max", "C_s": self.C, "t_tok_s": self.t_tok, **self._prefill_params(), **_source(self)}


@dataclass(frozen=True)
class LinearMaxMeanConfig(PrefillCosts):
    c: float | None = setting(None, "fixed step cost, s (default as linear_max's C)")
    a: float = setting(T_TOK_DEFAULT, "seconds per token of the max-loaded worker")
    b: float = setting(0.5 * T_TOK_DEFAULT, "seconds per token of the mean load (shared experts)")


class LinearMaxMean(StepTimeModel):
    def __init__(self, cfg: LinearMaxMeanConfig, *, slots: int):
        self.c = _default_c(slots) if cfg.c is None else float(cfg.c)
        self.a = float(cfg.a)
        self.b = float(cfg.b)
        _set_prefill(self, cfg)

    def __call__(self, max_load, mean_load, max_seqs=0.0, mean_seqs=0.0):
        return self.c + self.a * max_load + self.b * mean_load

    def vector(self, max_load, mean_load):
        return self.c + self.a * np.asarray(max_load, np.float64) + self.b * np.asarray(mean_load, np.float64)

    def params(self):
        return {
            "model": "linear_max_mean",
            "c_s": self.c,
            "a_s": self.a,
            "b_s": self.b,
            **self._prefill_params(),
            **_source(self),
        }


@dataclass(frozen=True)
class LinearSeqsConfig(PrefillCosts):
    c: float | None = setting(None, "fixed step cost, s (default as linear_max's C)")
    a: float = setting(T_TOK_DEFAULT, "seconds per token of the max-loaded worker")
    b: float = setting(0.0, "seconds per token of the mean load")
    s: float = setting(0.0, "seconds per running sequence of the worker with the most")
    r: float = setting(0.0, "seconds per running sequence of the mean worker")


class LinearSeqs(StepTimeModel):
    """``linear_max_mean`` plus per-sequence costs (sampling, scheduling, per-request kernels): on small models
    and short contexts they, not the KV tokens, set much of the step time."""

    uses_seqs = True

    def __init__(self, cfg: LinearSeqsConfig, *, slots: int):
        self.c = _default_c(slots) if cfg.c is None else float(cfg.c)
        self.a, self.b, self.s, self.r = float(cfg.a), float(cfg.b), float(cfg.s), float(cfg.r)
        _set_prefill(self, cfg)

    def __call__(self, max_load, mean_load, max_seqs=0.0, mean_seqs=0.0):
        return self.c + self.a * max_load + self.b * mean_load + self.s * max_seqs + self.r * mean_seqs

    def vector(self, max_load, mean_load):  # per-worker busy time (energy): loads only, sequences unknown there
        return self.c + self.a * np.asarray(max_load, np.float64) + self.b * np.asarray(mean_load, np.float64)

    def params(self):
        return {
            "model": "linear_seqs",
            "c_s": self.c,
            "a_s": self.a,
            "b_s": self.b,
            "s_s": self.s,
            "r_s": self.r,
            **self._prefill_params(),
            **_source(self),
        }


STEP_TIME: Registry[StepTimeModel] = Registry(
    "step-time model",
    entries=[
        Entry(
            "linear_max", LinearMax, LinearMaxConfig, "τ = C + t_tok · max_g L_g (barrier: the straggler sets the pace)"
        ),
        Entry(
            "linear_max_mean",
            LinearMaxMean,
            LinearMaxMeanConfig,
            "τ = c + a·max_g L_g + b·mean_g L_g (MoE with shared experts)",
        ),
        Entry(
            "linear_seqs",
            LinearSeqs,
            LinearSeqsConfig,
            "τ = c + a·max_g L_g + b·mean_g L_g + s·max_g n_g + r·mean_g n_g (n_g: running sequences of worker g)",
        ),
    ],
)


def make_step_time(spec: str, slots: int) -> StepTimeModel:
    """A step-time model from a spec string or a step-time file (see the module docstring)."""
    if is_step_time_file(spec):
        name, opts = parse_spec(spec)
        unknown = sorted(set(opts) - {"model"})
        if unknown:
            raise SpecError(
                f"step-time file spec {spec!r}: unknown option(s) {', '.join(unknown)}; the only option is model=NAME"
            )
        return load_step_time_file(name, slots, model=opts.get("model"))
    name = parse_spec(spec)[0]
    if name not in STEP_TIME and ("/" in name or "." in name):
        raise SpecError(
            f"step-time spec {spec!r} is neither a model ({', '.join(STEP_TIME.names())}) nor a "
            f"step-time file (a name ending in {', '.join(STEP_TIME_FILE_SUFFIXES)})"
        )
    return STEP_TIME.create(spec, slots=slots)


# ------------------------------------------------------------------------------ step-time files
STEP_TIME_FILE_FORMAT = "dpbalance-step-time/1"
STEP_TIME_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _source(model: StepTimeModel) -> dict:
    return {"source": model.source} if model.source else {}


def is_step_time_file(spec: str) -> bool:
    """True when the spec names a step-time file (by its suffix) rather than a model."""
    name = spec.strip().partition(":")[0].strip()
    return name.lower().endswith(STEP_TIME_FILE_SUFFIXES)


def read_step_time_file(path: str | Path) -> dict:
    """The parsed, checked content of a step-time file (errors name the file and what is wrong)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError(f"step-time file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise SpecError(f"step-time file {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except ValueError as exc:
        raise SpecError(f"step-time file {str(p)!r} does not parse: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SpecError(
            f"step-time file {str(p)!r} does not parse{where}: {getattr(exc, 'problem', None) or exc}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != STEP_TIME_FILE_FORMAT:
        raise SpecError(
            f"{str(p)!r} is not a step-time file: expected a mapping with "
            f"'format: {STEP_TIME_FILE_FORMAT}' (write one with `dpbalance calibrate`)"
        )
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise SpecError(f"step-time file {str(p)!r}: 'models' must map model names to their constants")
    if data.get("model") not in models:
        raise SpecError(
            f"step-time file {str(p)!r}: 'model' must name one of its models "
            f"({', '.join(map(str, models))}), got {data.get('model')!r}"
        )
    return data


def load_step_time_file(path: str | Path, slots: int, model: str | None = None) -> StepTimeModel:
    """The step-time model a calibration file holds: its recommended ``model``, or the one asked for."""
    data = read_step_time_file(path)
    where = f"step-time file {str(path)!r}"
    name = model or data["model"]
    if name not in data["models"]:
        raise SpecError(f"{where} holds no {name!r} model; it holds: {', '.join(map(str, data['models']))}")
    entry = STEP_TIME.entry(name)
    params = (data["models"][name] or {}).get("params") if isinstance(data["models"][name], dict) else None
    if not isinstance(params, dict):
        raise SpecError(f"{where}: models.{name}.params must map constant names to seconds")
    prefill = [f.name for f in dataclasses.fields(PrefillCosts)]
    valid = [f.name for f in dataclasses.fields(entry.config_cls) if f.name not in prefill]
    missing = sorted(set(valid) - set(params))
    if missing or set(params) - set(valid) - set(prefill):
        raise SpecError(
            f"{where}: models.{name}.params must have exactly {', '.join(valid)}, and optionally "
            f"{', '.join(prefill)} (got {', '.join(map(str, params)) or 'none'})"
        )
    for k, v in params.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise SpecError(f"{where}: models.{name}.params.{k} must be a finite number >= 0 (seconds), got {v!r}")
    # a calibration without prefill phases leaves the prefill terms unknown (the engine model then refuses it)
    unknown = {k: "none" for k in ("prefill_tok", "prefill_attn") if k not in params}
    given = {k: repr(float(v)) for k, v in params.items()} | unknown
    cfg = build_config(entry.config_cls, given, what=f"{where}, {name}")
    m = entry.factory(cfg, slots=slots)
    m.source = str(path)
    return m


def step_time_identity(spec: str) -> str:
    """What a cached result depends on: the spec itself, plus the content digest of a step-time file."""
    if not is_step_time_file(spec):
        return spec
    path = Path(spec.strip().partition(":")[0].strip())
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        digest = "unreadable"
    return f"{spec}@{digest}"
