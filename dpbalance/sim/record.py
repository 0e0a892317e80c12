"""What a simulated run records: per-step aggregates (reduced a chunk at a time) and the raw run record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class StepRecorder:
    """Keeps per-step aggregates; raw load rows are buffered and reduced a chunk at a time."""

    CHUNK = 4096

    def __init__(self, G: int, step_model, energy_model, stride: int):
        self.G = G
        self.step_model = step_model
        self.energy_model = energy_model
        self.stride = max(1, stride)
        self.rows = np.empty((self.CHUNK, G), dtype=np.int64)
        self.tau = np.empty(self.CHUNK, dtype=np.float64)
        self.t_end = np.empty(self.CHUNK, dtype=np.float64)
        self.active = np.empty(self.CHUNK, dtype=np.int64)
        self.i = 0
        self.n = 0
        self.parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("max", "min", "sum", "tau", "t_end", "active", "energy")
        }
        self.sample_rows: list[np.ndarray] = []
        self.sample_idx: list[np.ndarray] = []

    def add(self, loads: np.ndarray, tau: float, t_end: float, active: int) -> None:
        i = self.i
        self.rows[i] = loads
        self.tau[i] = tau
        self.t_end[i] = t_end
        self.active[i] = active
        self.i = i + 1
        if self.i == self.CHUNK:
            self.flush()

    def flush(self) -> None:
        k = self.i
        if k == 0:
            return
        rows = self.rows[:k]
        tau = self.tau[:k].copy()
        p = self.parts
        p["max"].append(rows.max(axis=1))
        p["min"].append(rows.min(axis=1))
        p["sum"].append(rows.sum(axis=1))
        p["tau"].append(tau)
        p["t_end"].append(self.t_end[:k].copy())
        p["active"].append(self.active[:k].copy())
        p["energy"].append(self.energy_model.step_energy(rows, tau, self.step_model))
        first = (-self.n) % self.stride
        idx = np.arange(first, k, self.stride)
        self.sample_rows.append(rows[idx].copy())
        self.sample_idx.append(idx + self.n)
        self.n += k
        self.i = 0

    def arrays(self) -> dict[str, np.ndarray]:
        self.flush()
        out = {
            k: (
                np.concatenate(v)
                if v
                else np.empty(0, dtype=np.float64 if k in ("tau", "t_end", "energy") else np.int64)
            )
            for k, v in self.parts.items()
        }
        out["sample_rows"] = np.concatenate(self.sample_rows) if self.sample_rows else np.empty((0, self.G), np.int64)
        out["sample_idx"] = np.concatenate(self.sample_idx) if self.sample_idx else np.empty(0, np.int64)
        return out


@dataclass
class RunRecord:
    """Raw outcome of a run; ``results.summarize`` turns it into the Result record."""

    workers: int
    slots: int
    steps: dict[str, np.ndarray]  # per decode step: max, min, sum, tau, t_end, active, energy (+ sampled rows)
    arrival: np.ndarray  # per request: time it became visible to the router
    admit_step: np.ndarray  # index of the step it was placed on a rank in (its first decode step, decode-only)
    worker: np.ndarray
    output: np.ndarray
    dispatch_ns: np.ndarray  # per policy call that had a decision to make
    wall_s: float
    step_params: dict
    energy_params: dict
    idle_power_w: float = 0.0  # per worker, drawn while no decode step runs
    final_loads: np.ndarray = None  # per-worker loads and counts after the run (all zero: nothing left behind)
    final_counts: np.ndarray = None
    #: index of the step that sampled each request's first token (the engine model; decode-only: admit_step)
    first_step: np.ndarray | None = None
    #: engine model statistics (prefix cache, prefill, preemptions) and per-step arrays; None when decode-only
    engine: dict | None = None
    #: how requests reached the ranks: "pool" (held until a slot is free) or "forward" (queued in the rank)
    front: str = "pool"

    @property
    def n_steps(self) -> int:
        return len(self.steps["tau"])

    @property
    def token_step(self) -> np.ndarray:
        return self.admit_step if self.first_step is None else self.first_step

    def admit_time(self) -> np.ndarray:
        """When each request got its slot: the start of the step it was placed in."""
        return self.steps["t_end"][self.admit_step] - self.steps["tau"][self.admit_step]

    def first_token_time(self) -> np.ndarray:
        """The end of the step that sampled its first token (the engine queue and the prefill included)."""
        return self.steps["t_end"][self.token_step]

    def finish_time(self) -> np.ndarray:
        if self.engine is not None and "finish_step" in self.engine:
            return self.steps["t_end"][self.engine["finish_step"]]
        return self.steps["t_end"][self.token_step + self.output - 1]


class EngineSteps:
    """Per-step statistics of the engine model (tokens per rank, barrier idle and the part prefill causes)."""

    def __init__(self):
        self.tok_max: list[int] = []
        self.tok_sum: list[int] = []
        self.idle_s: list[float] = []
        self.stall_s: list[float] = []
        self.prefill: list[int] = []

    def add(self, out) -> None:
        tok = out.generated + out.prefill_tokens
        self.tok_max.append(int(tok.max()))
        self.tok_sum.append(int(tok.sum()))
        busy = out.busy
        self.idle_s.append(float((out.tau - busy).sum()))
        if out.prefill_tokens.any():
            # each rank's wait beyond what decode work alone would have made it wait: the prefill stall
            floor = np.maximum(busy, out.decode_busy.max())
            self.stall_s.append(float(np.maximum(out.tau - floor, 0.0).sum()))
        else:
            self.stall_s.append(0.0)
        self.prefill.append(int(out.prefill_tokens.sum()))

    def summary(self, engine, finish_step: np.ndarray) -> dict:
        """Arrays per step and the engine's totals, for ``RunRecord.engine``."""
        return {
            "tok_max": np.asarray(self.tok_max, dtype=np.int64),
            "tok_sum": np.asarray(self.tok_sum, dtype=np.int64),
            "idle_s": np.asarray(self.idle_s, dtype=np.float64),
            "stall_s": np.asarray(self.stall_s, dtype=np.float64),
            "prefill": np.asarray(self.prefill, dtype=np.int64),
            "finish_step": finish_step,
            "prompt_tokens": np.array(engine.prompt_tokens, dtype=np.int64),
            "hit_tokens": np.array(engine.hit_tokens, dtype=np.int64),
            "prefilled": engine.prefilled.copy(),
            "preemptions": engine.preemptions.copy(),
            "evicted_blocks": None if engine.cache is None else engine.cache.evicted.copy(),
            "block_size": engine.bs,
            "config": engine.cfg,
        }
