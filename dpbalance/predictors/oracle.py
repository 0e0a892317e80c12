"""``oracle``: the true remaining length (an upper bound on what prediction can do), optionally noisy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.config import setting
from ..core.workload import Workload


@dataclass(frozen=True)
class OracleConfig:
    noise: float = setting(0.0, "δ: o_est = o·U[1−δ, 1+δ], fixed per request")
    seed: int = setting(0, "seed of the noise")

    def __post_init__(self):
        if not 0.0 <= self.noise < 1.0:
            raise ValueError("noise must be in [0, 1)")


def uniform_by_id(rid: np.ndarray, seed: int) -> np.ndarray:
    """A stable U[0,1) per request id (so noisy estimates don't change from step to step)."""
    x = (rid.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class OraclePredictor:
    """alive[i, h] = 1 while h < remaining length (the simulator's true o_i; the router's max_tokens)."""

    def __init__(self, cfg: OracleConfig, train: Workload | None = None):
        self.cfg = cfg

    def remaining(self, age: np.ndarray, limit: np.ndarray, rid: np.ndarray | None) -> np.ndarray:
        o = np.asarray(limit, dtype=np.float64)
        if self.cfg.noise > 0:
            if rid is None:
                raise ValueError("a noisy oracle needs request ids")
            u = uniform_by_id(np.asarray(rid), self.cfg.seed)
            o = np.round(o * (1 - self.cfg.noise + 2 * self.cfg.noise * u))
        return np.maximum(o - age, 1.0)

    def alive(self, age, key, limit, H, rid=None):
        rem = self.remaining(age, limit, rid)
        return (np.arange(H + 1)[None, :] < rem[:, None]).astype(np.float64)
