"""From a drive's measurements to the fit and the step-time file ``--step-time FILE`` reads."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..engine.step_time import STEP_TIME_FILE_FORMAT
from .config import CalibrateConfig
from .driver import DriveRecord
from .fit import Calibration, CalibrationError, Observations, fit
from .heldout import split_heldout_mixed
from .window import PhaseResult

UNITS = {
    "time": "seconds of one decode step (all ranks step together)",
    "load": "KV tokens of one rank: prompt plus generated tokens of its running requests",
    "linear_max": {"C": "s", "t_tok": "s per token of the most loaded rank"},
    "linear_max_mean": {"c": "s", "a": "s per token of the most loaded rank", "b": "s per token of the mean load"},
    "linear_seqs": {
        "c": "s",
        "a": "s per token of the most loaded rank",
        "b": "s per token of the mean load",
        "s": "s per running sequence of the rank with the most",
        "r": "s per running sequence of the mean rank",
    },
    "prefill": {
        "prefill_tok": "s per prompt token computed by the rank that sets the step",
        "prefill_attn": "s per prompt token computed per token of context it attends to",
        "prefill_shared": "s per prompt token computed by the mean rank, added to every rank's step (work the "
        "ranks share; fitted when phases prefilled on every rank at once)",
        "per_request": "s per request the rank that sets the step admitted (its arrival and end); fitted when "
        "the prefill phases' prompt lengths tell it from the token terms and it pays",
    },
}


@dataclass(frozen=True)
class Outcome:
    calibration: Calibration
    observations: Observations
    heldout_mask: np.ndarray
    source: str  # the measurement the fit used
    document: dict


def step_time_of(r: PhaseResult, source: str) -> tuple[float, str]:
    """(wall seconds, source actually used): the /metrics estimates are the median over ranks."""
    if source == "window" or r.phase.prefill is not None:  # a prefill phase has only its window estimate
        return r.window_s_per_token, "window"
    vals = [v for v in (r.itl_s if source == "itl" else r.steps_s if source == "steps" else []) if v]
    if vals:
        return float(np.median(vals)), source
    return r.stream_s, "stream"


def analyse(rec: DriveRecord, cfg: CalibrateConfig) -> Outcome:
    """Fit the measured phases (some held out) and build the step-time file's content."""
    if len(rec.results) < 3:
        why = "; ".join(f"{ph.label}: {msg}" for ph, msg in rec.failed[:3])
        raise CalibrationError(
            f"only {len(rec.results)} load levels were measured (need at least 3)"
            + (f"; failures: {why}" if why else "")
            + ("; raise --time-budget" if rec.skipped else "")
        )
    taus, used = zip(*(step_time_of(r, cfg.source) for r in rec.results))
    ts = cfg.time_scale
    obs = Observations.from_lists(
        [r.loads for r in rec.results],
        np.asarray(taus) * ts,
        seqs=[r.seqs if r.seqs is not None else r.phase.streams for r in rec.results],
        prefill=[(r.prefill_tok, r.prefill_attn, r.prefill_mean, r.prefill_reqs) for r in rec.results],
    )
    mask = split_heldout_mixed(obs, cfg.holdout_every)
    cal = fit(obs.subset(~mask), obs.subset(mask) if mask.any() else None)
    source = (
        cfg.source
        if all(u == cfg.source for u in used)
        else ("stream" if all(u == "stream" for u in used) else "mixed")
    )
    doc = document(rec, cfg, cal, obs, mask, used)
    return Outcome(cal, obs, mask, source, doc)


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


def _model_entries(cal: Calibration) -> dict:
    """Every fitted model: its parameters, standard errors, fit summary and (when held out) the held-out error."""
    models = {}
    for name, f in cal.fits.items():
        entry = {
            "params": {k: _r(v) for k, v in f.params.items()},
            "std_err": {k: _r(v, 3) for k, v in f.se.items()},
            "fit": {k: (v if k == "n" else _r(v, 4)) for k, v in f.summary().items() if k != "std_err"},
        }
        for key, src in (("heldout", cal.heldout), ("heldout_mixed", cal.heldout_mixed)):
            if name not in src:
                continue
            h = src[name]
            entry[key] = {
                "n": h["n"],
                "mean_abs_rel": _r(h["mean_abs_rel"], 4),
                "max_abs_rel": _r(h["max_abs_rel"], 4),
                "tpot_ms": [
                    {
                        "loads": p["loads"],
                        "measured": _r(p["measured_s"] * 1e3, 5),
                        "predicted": _r(p["predicted_s"] * 1e3, 5),
                        **(
                            {"prefill_tok_per_step": _r(p["prefill_tok_per_step"], 5)}
                            if "prefill_tok_per_step" in p
                            else {}
                        ),
                    }
                    for p in h["points"]
                ],
            }
        models[name] = entry
    return models


def _observation_entries(rec: DriveRecord, ts: float, obs: Observations, mask: np.ndarray, used) -> list[dict]:
    """One entry per measured phase (``ts``: the run's time scale)."""
    observations = []
    for i, (r, u) in enumerate(zip(rec.results, used)):
        observations.append(
            {
                "phase": r.phase.label,
                "heldout": bool(mask[i]),
                "loads": [_r(x) for x in r.loads],
                "sequences": r.phase.streams,
                "step_s": _r(float(obs.tau[i])),
                "source": u,
                "per_token_s": _r(r.window_s_per_token * ts),
                "stream_s": _r(r.stream_s * ts),
                "itl_s": [_r(x * ts) if x else None for x in r.itl_s],
                "engine_steps_s": [_r(x * ts) if x else None for x in r.steps_s],
                "token_gaps": r.gaps,
                "window_s": _r(r.window_s, 4),
                **(
                    {
                        "prefill": r.prefill_info,
                        "prefill_tok_per_step": _r(r.prefill_tok),
                        "prefill_attn_per_step": _r(r.prefill_attn),
                        "prefill_mean_tok_per_step": _r(r.prefill_mean),
                        "requests_per_step": _r(r.prefill_reqs),
                    }
                    if r.prefill_info
                    else {}
                ),
                **({"warnings": r.warnings} if r.warnings else {}),
            }
        )
    return observations


def _measured_entry(rec: DriveRecord, cfg: CalibrateConfig) -> dict:
    """What was measured, when, against which engine."""
    return {
        "when": dt.datetime.fromtimestamp(rec.started, dt.UTC).isoformat(timespec="seconds"),
        "against": rec.targets,
        "ranks": rec.ranks,
        "model": rec.model,
        "engine_version": rec.engine_version,
        "rank_header": cfg.rank_header if cfg.dp_endpoint else None,
        "max_model_len": rec.max_model_len,
        "time_scale": cfg.time_scale,
        "duration_s": _r(rec.duration_s, 4),
        "step_time_from": cfg.source,
        "metrics": rec.metrics,
        "tokenize": rec.tokenize,
    }


def _grid_entry(rec: DriveRecord, cfg: CalibrateConfig) -> dict:
    """The measurement grid as planned and what became of each phase."""
    return {
        "prompt_lens": list(cfg.prompt_lens),
        "concurrency": list(cfg.concurrency),
        "unequal": cfg.unequal,
        "warmup_tokens": cfg.warmup_tokens,
        "measure_steps": cfg.measure_steps,
        "max_tokens": rec.max_tokens,
        "holdout_every": cfg.holdout_every,
        **(
            {
                "prefill_lens": list(cfg.prefill_lens),
                "prefill_hits": list(cfg.prefill_hits),
                "prefill_requests": cfg.prefill_requests,
                "block_size": cfg.block_size,
            }
            if cfg.prefill_lens
            else {}
        ),
        "seed": cfg.seed,
        "phases_planned": len(rec.results) + len(rec.failed) + len(rec.skipped),
        "phases_measured": len(rec.results),
        "failed": [{"phase": ph.label, "why": msg} for ph, msg in rec.failed],
        "skipped_for_time": [ph.label for ph in rec.skipped],
    }


def document(
    rec: DriveRecord, cfg: CalibrateConfig, cal: Calibration, obs: Observations, mask: np.ndarray, used
) -> dict:
    """The step-time file's content: the chosen model, every fitted one, what was measured and every observation."""
    return {
        "format": STEP_TIME_FILE_FORMAT,
        "model": cal.chosen,
        "why": cal.reason,
        **({"per_request": cal.per_request} if cal.per_request else {}),
        "models": _model_entries(cal),
        **({"not_fitted": cal.skipped} if cal.skipped else {}),
        "units": UNITS,
        "measured": _measured_entry(rec, cfg),
        "grid": _grid_entry(rec, cfg),
        "observations": _observation_entries(rec, cfg.time_scale, obs, mask, used),
        **({"warnings": rec.warnings} if rec.warnings else {}),
    }


HEADER = """\
# dpbalance step-time model, measured by `dpbalance calibrate`.
# Use it with: dpbalance simulate --step-time {name}   (or {name}:model=NAME for another model below)
# 'model' is the recommended model; 'models' holds every fitted one with its residuals and held-out error.
"""


def write(path: Path, doc: dict) -> None:
    """Write atomically as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(doc, indent=2) + "\n"
    else:
        text = HEADER.format(name=path.name) + yaml.safe_dump(
            doc, sort_keys=False, allow_unicode=True, width=110, default_flow_style=None
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
