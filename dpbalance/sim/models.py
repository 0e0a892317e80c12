"""Step-time and energy models, registered by name and configured by spec strings.

Step-time models map a step's per-worker loads to its duration; energy models map a block of steps
(loads matrix + durations) to joules. Both are vectorised over steps so the simulator can reduce its
history in chunks instead of per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.specs import Entry, Registry


def _default_c(slots: int) -> float:
    """C = (B·0.6e-3 + 35e-3)/16 s: fixed per-step cost of a DeepSeek-V3-like MLA decode on one rank."""
    return (slots * 0.6e-3 + 35e-3) / 16.0


T_TOK_DEFAULT = 1.5 * 2 * 576 * 61e-6 / 2**20  # seconds per KV token (MLA, 61 layers)


class StepTimeModel:
    name = "step_time"

    def __call__(self, max_load: float, mean_load: float) -> float:
        raise NotImplementedError

    def vector(self, max_load: np.ndarray, mean_load: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def busy(self, loads: np.ndarray) -> np.ndarray:
        """Time worker(s) with these loads would be busy in a step (the rest of τ is barrier idle)."""
        return self.vector(loads, loads)

    def params(self) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class LinearMaxConfig:
    C: float | None = field(default=None, metadata={"doc": "fixed step cost, s (default (B·0.6e-3+35e-3)/16)"})
    t_tok: float = field(default=T_TOK_DEFAULT, metadata={"doc": "seconds per KV token of the straggler"})


class LinearMax(StepTimeModel):
    def __init__(self, cfg: LinearMaxConfig, *, slots: int):
        self.C = _default_c(slots) if cfg.C is None else float(cfg.C)
        self.t_tok = float(cfg.t_tok)

    def __call__(self, max_load, mean_load):
        return self.C + self.t_tok * max_load

    def vector(self, max_load, mean_load):
        return self.C + self.t_tok * np.asarray(max_load, dtype=np.float64)

    def params(self):
        return {"model": "linear_max", "C_s": self.C, "t_tok_s": self.t_tok}


@dataclass(frozen=True)
class LinearMaxMeanConfig:
    c: float | None = field(default=None, metadata={"doc": "fixed step cost, s (default as linear_max's C)"})
    a: float = field(default=T_TOK_DEFAULT, metadata={"doc": "seconds per token of the max-loaded worker"})
    b: float = field(default=0.5 * T_TOK_DEFAULT, metadata={"doc": "seconds per token of the mean load (shared experts)"})


class LinearMaxMean(StepTimeModel):
    def __init__(self, cfg: LinearMaxMeanConfig, *, slots: int):
        self.c = _default_c(slots) if cfg.c is None else float(cfg.c)
        self.a = float(cfg.a)
        self.b = float(cfg.b)

    def __call__(self, max_load, mean_load):
        return self.c + self.a * max_load + self.b * mean_load

    def vector(self, max_load, mean_load):
        return self.c + self.a * np.asarray(max_load, np.float64) + self.b * np.asarray(mean_load, np.float64)

    def params(self):
        return {"model": "linear_max_mean", "c_s": self.c, "a_s": self.a, "b_s": self.b}


# ----------------------------------------------------------------------------------- energy
class EnergyModel:
    name = "energy"

    def step_energy(self, loads: np.ndarray, tau: np.ndarray, step_time: StepTimeModel) -> np.ndarray:
        """Joules per step for a block: ``loads`` [steps, G], ``tau`` [steps]."""
        raise NotImplementedError

    def params(self) -> dict:
        raise NotImplementedError

    def idle_power_w(self) -> float:
        """Watts one worker draws while no decode step runs (an idle cluster still draws power)."""
        raise NotImplementedError


@dataclass(frozen=True)
class BfioPowerConfig:
    p_idle: float = field(default=100.0, metadata={"doc": "watts per worker at zero utilisation"})
    p_max: float = field(default=400.0, metadata={"doc": "watts per worker at full utilisation"})
    gamma: float = field(default=0.7, metadata={"doc": "power curve exponent"})


class BfioPower(EnergyModel):
    def __init__(self, cfg: BfioPowerConfig, **_):
        self.cfg = cfg

    def step_energy(self, loads, tau, step_time):
        loads = np.asarray(loads, dtype=np.float64)
        m = loads.max(axis=1, keepdims=True)
        u = np.divide(loads, m, out=np.zeros_like(loads), where=m > 0)
        p = self.cfg.p_idle + (self.cfg.p_max - self.cfg.p_idle) * np.power(u, self.cfg.gamma)
        return p.sum(axis=1) * tau

    def idle_power_w(self) -> float:
        return self.cfg.p_idle

    def params(self):
        return {"model": "bfio_power", "p_idle_w": self.cfg.p_idle, "p_max_w": self.cfg.p_max, "gamma": self.cfg.gamma}


@dataclass(frozen=True)
class BusyIdleConfig:
    p_busy: float = field(default=400.0, metadata={"doc": "watts per worker while computing"})
    p_idle: float = field(default=100.0, metadata={"doc": "watts per worker waiting at the barrier"})


class BusyIdle(EnergyModel):
    def __init__(self, cfg: BusyIdleConfig, **_):
        self.cfg = cfg

    def step_energy(self, loads, tau, step_time):
        loads = np.asarray(loads, dtype=np.float64)
        busy = np.minimum(step_time.busy(loads), tau[:, None])
        idle = tau[:, None] - busy
        return (self.cfg.p_busy * busy + self.cfg.p_idle * idle).sum(axis=1)

    def idle_power_w(self) -> float:
        return self.cfg.p_idle

    def params(self):
        return {"model": "busy_idle", "p_busy_w": self.cfg.p_busy, "p_idle_w": self.cfg.p_idle}


STEP_TIME: Registry[StepTimeModel] = Registry("step-time model", entries=[
    Entry("linear_max", LinearMax, LinearMaxConfig, "τ = C + t_tok · max_g L_g (barrier: the straggler sets the pace)"),
    Entry("linear_max_mean", LinearMaxMean, LinearMaxMeanConfig,
          "τ = c + a·max_g L_g + b·mean_g L_g (MoE with shared experts)"),
])

ENERGY: Registry[EnergyModel] = Registry("energy model", entries=[
    Entry("bfio_power", BfioPower, BfioPowerConfig,
          "P(u_g) = P_idle + (P_max - P_idle)·u_g^γ with u_g = L_g / M, for the whole step (BF-IO App. D.1)"),
    Entry("busy_idle", BusyIdle, BusyIdleConfig,
          "worker g is busy for step_time(L_g) at P_busy and idles at the barrier for the rest of τ at P_idle"),
])


def make_step_time(spec: str, slots: int) -> StepTimeModel:
    return STEP_TIME.create(spec, slots=slots)


def make_energy(spec: str) -> EnergyModel:
    return ENERGY.create(spec)
