"""The versioned result of one run and how it is computed from raw run data.

The simulator and the router both end in ``build_result``: per-step load aggregates (exact per step in
the simulator, sampled in the router) plus per-request timestamps. The field names below are the
contract of the JSON files; ``SCHEMA_VERSION`` changes whenever they do.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core.metrics import step_stats

SCHEMA_VERSION = "dpbalance.result/3"


def _m(doc: str) -> dict:
    return {"doc": doc, "table": True}


@dataclass
class Result:
    """One run's metrics. Every field marked ``table`` is a column of the printed table, in this order."""

    policy: str = field(metadata=_m("policy label (name and every non-default option; predictor always)"))
    workers: int = field(metadata=_m("G, data-parallel decode workers"))
    slots: int = field(metadata=_m("B, max concurrent sequences per worker"))
    requests: int = field(metadata=_m("requests in the workload"))
    completed: int = field(metadata=_m("requests that finished (all their output tokens)"))
    running: int = field(metadata=_m("requests still decoding when the run ended"))
    never_admitted: int = field(metadata=_m("requests never admitted to a worker (rejected, failed or waiting)"))
    makespan_s: float = field(metadata=_m("first arrival to last finish, s"))
    throughput_tok_s: float = field(metadata=_m("output tokens per second over the measurement window"))
    throughput_all_tok_s: float = field(metadata=_m("output tokens per second over the whole run"))
    avg_imbalance_gap: float = field(metadata=_m("mean over window steps of G·max load − Σ load (token·workers)"))
    avg_imbalance_maxmin: float = field(metadata=_m("mean over window steps of max load − min load (tokens)"))
    maxmin_all: float = field(metadata=_m("mean over every step of the run of max load − min load (tokens)"))
    balance_ratio: float = field(metadata=_m("mean over window steps of mean load / max load"))
    idle_fraction: float = field(metadata=_m("mean over window steps of the barrier-idle share of worker time"))
    energy_j: float = field(metadata=_m("energy of the whole run, idle cluster included, J"))
    energy_j_per_token: float = field(metadata=_m("whole-run energy per output token, J"))
    ttft_p50_s: float = field(metadata=_m("time to first token, median, s"))
    ttft_p95_s: float = field(metadata=_m("time to first token, 95th percentile, s"))
    ttft_p99_s: float = field(metadata=_m("time to first token, 99th percentile, s"))
    wait_max_s: float = field(metadata=_m("longest time any request waited before admission, s"))
    tpot_p50_ms: float = field(metadata=_m("time per output token, median, ms"))
    tpot_p95_ms: float = field(metadata=_m("time per output token, 95th percentile, ms"))
    tpot_p99_ms: float = field(metadata=_m("time per output token, 99th percentile, ms"))
    e2e_p50_s: float = field(metadata=_m("end-to-end latency, median, s"))
    e2e_p95_s: float = field(metadata=_m("end-to-end latency, 95th percentile, s"))
    e2e_p99_s: float = field(metadata=_m("end-to-end latency, 99th percentile, s"))
    dispatch_us_p50: float = field(metadata=_m("policy decision time per call, median, µs"))
    dispatch_us_p99: float = field(metadata=_m("policy decision time per call, 99th percentile, µs"))
    steps: int = field(metadata=_m("decode steps"))
    sim_wall_s: float = field(metadata=_m("wall time of the run, s"))
    # the engine model's figures (prefill and prefix caches); nan in decode-only runs
    prefix_hit_rate: float = field(
        default=math.nan, metadata=_m("prompt tokens the ranks' prefix caches served / prompt tokens (whole run)")
    )
    prefill_tokens: float = field(
        default=math.nan,
        metadata=_m("prompt tokens the ranks computed, recomputations after preemption included (whole run)"),
    )
    prefill_balance_ratio: float = field(
        default=math.nan,
        metadata=_m(
            "mean over window steps of mean / max tokens per rank in a step, prefill included (TensorRT-LLM's)"
        ),
    )
    prefill_stall_share: float = field(
        default=math.nan,
        metadata=_m("share of barrier idle in the window that ranks spent waiting for another rank's prefill"),
    )
    preemptions: float = field(default=math.nan, metadata=_m("requests preempted for KV room (whole run)"))
    rank_hit_rates: list[float] | None = None  # per rank: prefix hit rate (the engine model)
    window: str = "all"
    label: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        names = {f.name for f in fields(cls)}
        missing = [
            f.name for f in fields(cls) if f.name not in d and f.default is MISSING and f.default_factory is MISSING
        ]
        if missing:
            raise ValueError(f"result is missing fields: {', '.join(missing)}")
        return cls(**{k: (math.nan if v is None and k in TABLE_FIELDS else v) for k, v in d.items() if k in names})

    @property
    def name(self) -> str:
        return self.label or self.policy


#: the table columns, in order: every Result field marked ``table``
TABLE_FIELDS = tuple(f.name for f in fields(Result) if f.metadata.get("table"))


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if not math.isfinite(f) else f
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def write_json(path: Path | str, data: Any) -> None:
    """Write atomically: a crash never leaves a half-written result file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    payload = (
        [r.to_dict() for r in data]
        if isinstance(data, list)
        else (data.to_dict() if isinstance(data, Result) else data)
    )
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def read_results(path: Path | str) -> list[Result]:
    data = json.loads(Path(path).read_text())
    items = data if isinstance(data, list) else [data]
    return [Result.from_dict(d) for d in items]


def _pct(x: np.ndarray, *qs: float) -> list[float]:
    """Percentiles ``qs`` of ``x`` (nan when empty), from one partial sort."""
    return [float(v) for v in np.percentile(x, qs)] if len(x) else [math.nan] * len(qs)


@dataclass
class Series:
    """Time series kept for plots (not part of the JSON contract)."""

    t: np.ndarray  # end time of each decode step
    maxmin: np.ndarray
    gap: np.ndarray
    idle: np.ndarray
    tokens: np.ndarray  # output tokens decoded in each step (= sequences active)
    sample_t: np.ndarray  # times of the sampled per-worker rows
    sample_rows: np.ndarray  # [k, G]
    ttft: np.ndarray
    tpot_ms: np.ndarray
    e2e: np.ndarray
    wait: np.ndarray  # per admitted request: time from arrival to admission
    window_end_t: float  # end of the measurement window (shade it on time plots)

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: Path | str) -> Series:
        with np.load(path) as z:
            return cls(**{k: (float(z[k]) if z[k].ndim == 0 else z[k]) for k in cls.__dataclass_fields__})


def build_result(
    *,
    policy: str,
    workers: int,
    slots: int,
    steps: dict[str, np.ndarray],
    arrival: np.ndarray,
    admitted: np.ndarray,
    first_token: np.ndarray,
    finish: np.ndarray,
    output: np.ndarray,
    finished: np.ndarray,
    dispatch_ns: np.ndarray,
    window_end_step: int,
    window: str,
    wall_s: float,
    config: dict[str, Any],
    idle_energy_j: float = 0.0,
    label: str = "",
    t0: float = 0.0,
) -> tuple[Result, Series]:
    """Compute a run's metrics.

    ``steps`` holds per-step ``max``, ``min``, ``sum`` (token loads), ``tau``, ``t_end``, ``active``
    (sequences decoded, = tokens produced) and ``energy`` (J). Per request: ``arrival``, ``admitted`` (time it got
    a slot; nan if never), ``first_token``, ``finish`` and the ``finished`` mask. The balance metrics and
    ``throughput_tok_s`` cover the window, steps ``0..window_end_step``; ``throughput_all_tok_s`` and the energy
    (steps plus ``idle_energy_j`` for the time no step ran) cover the whole run; latency percentiles cover every
    finished request.
    """
    n_steps = len(steps["tau"])
    w_end = min(max(window_end_step, -1), n_steps - 1)
    sl = slice(0, w_end + 1)
    st = step_stats(steps["max"][sl], steps["min"][sl], steps["sum"][sl].astype(np.float64), workers)
    tokens = float(steps["active"][sl].sum())
    duration = float(steps["t_end"][w_end] - t0) if w_end >= 0 else 0.0
    all_tokens = float(steps["active"].sum())
    energy = float(steps["energy"].sum()) + float(idle_energy_j)
    done = finished
    was_admitted = np.isfinite(admitted)
    makespan = float(finish[done].max() - t0) if done.any() else math.nan
    ttft = (first_token - arrival)[done]
    e2e = (finish - arrival)[done]
    wait = np.round((admitted - arrival)[was_admitted], 9)  # ns: admission and arrival are sums of step times
    multi = done & (output > 1)
    tpot_ms = ((finish - first_token)[multi] / (output[multi] - 1)) * 1e3
    mean = lambda x: float(np.mean(x)) if len(x) else math.nan  # noqa: E731
    full = step_stats(steps["max"], steps["min"], steps["sum"].astype(np.float64), workers)
    res = Result(
        policy=policy,
        workers=workers,
        slots=slots,
        requests=int(len(arrival)),
        completed=int(done.sum()),
        running=int((was_admitted & ~done).sum()),
        never_admitted=int((~was_admitted).sum()),
        makespan_s=makespan,
        throughput_tok_s=tokens / duration if duration > 0 else math.nan,
        throughput_all_tok_s=all_tokens / makespan if makespan > 0 else math.nan,
        avg_imbalance_gap=mean(st["gap"]),
        avg_imbalance_maxmin=mean(st["maxmin"]),
        maxmin_all=mean(full["maxmin"]),
        balance_ratio=mean(st["balance"]),
        idle_fraction=mean(st["idle"]),
        energy_j=energy,
        energy_j_per_token=energy / all_tokens if all_tokens > 0 else math.nan,
        **_latency_fields(ttft, tpot_ms, e2e, wait, dispatch_ns / 1e3),
        steps=int(n_steps),
        sim_wall_s=float(wall_s),
        window=window,
        label=label,
        config=config,
    )
    lat = {"ttft": ttft, "tpot_ms": tpot_ms, "e2e": e2e, "wait": wait}
    return res, _series(steps, full, lat, workers, w_end, t0)


def _latency_fields(ttft, tpot_ms, e2e, wait, disp_us) -> dict[str, float]:
    """The Result's latency percentiles from the per-request latencies (s; TPOT in ms; dispatch in µs)."""
    ttft_q, tpot_q, e2e_q = _pct(ttft, 50, 95, 99), _pct(tpot_ms, 50, 95, 99), _pct(e2e, 50, 95, 99)
    disp_q = _pct(disp_us, 50, 99)
    return {
        "ttft_p50_s": ttft_q[0],
        "ttft_p95_s": ttft_q[1],
        "ttft_p99_s": ttft_q[2],
        "wait_max_s": float(wait.max()) if len(wait) else math.nan,
        "tpot_p50_ms": tpot_q[0],
        "tpot_p95_ms": tpot_q[1],
        "tpot_p99_ms": tpot_q[2],
        "e2e_p50_s": e2e_q[0],
        "e2e_p95_s": e2e_q[1],
        "e2e_p99_s": e2e_q[2],
        "dispatch_us_p50": disp_q[0],
        "dispatch_us_p99": disp_q[1],
    }


def _series(steps, full, lat: dict[str, np.ndarray], workers: int, w_end: int, t0: float) -> Series:
    """The per-step and per-request series the plots draw."""
    sidx = steps.get("sample_idx", np.empty(0, np.int64))
    return Series(
        t=steps["t_end"] - t0,
        maxmin=full["maxmin"],
        gap=full["gap"],
        idle=full["idle"],
        tokens=steps["active"],
        sample_t=steps["t_end"][sidx] - t0 if len(sidx) else np.empty(0),
        sample_rows=steps.get("sample_rows", np.empty((0, workers), np.int64)),
        **lat,
        window_end_t=float(steps["t_end"][w_end] - t0) if w_end >= 0 else 0.0,
    )
