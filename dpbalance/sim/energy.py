"""Energy models, registered by name and configured by spec strings: a block of decode steps (loads matrix and
step durations) to joules, vectorised over steps so the simulator can reduce its history in chunks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.config import setting
from ..core.specs import Entry, Registry
from ..engine.step_time import StepTimeModel


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
    p_idle: float = setting(100.0, "watts per worker at zero utilisation")
    p_max: float = setting(400.0, "watts per worker at full utilisation")
    gamma: float = setting(0.7, "power curve exponent")


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
    p_busy: float = setting(400.0, "watts per worker while computing")
    p_idle: float = setting(100.0, "watts per worker waiting at the barrier")


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


ENERGY: Registry[EnergyModel] = Registry(
    "energy model",
    entries=[
        Entry(
            "bfio_power",
            BfioPower,
            BfioPowerConfig,
            "P(u_g) = P_idle + (P_max - P_idle)·u_g^γ with u_g = L_g / M, for the whole step (BF-IO App. D.1)",
        ),
        Entry(
            "busy_idle",
            BusyIdle,
            BusyIdleConfig,
            "worker g is busy for step_time(L_g) at P_busy and idles at the barrier for the rest of τ at P_idle",
        ),
    ],
)


def make_energy(spec: str) -> EnergyModel:
    return ENERGY.create(spec)
