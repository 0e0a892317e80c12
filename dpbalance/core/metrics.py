"""The one place the balance quantities (envelope, imbalance gap, max–min, idle fraction) are defined.

All functions accept a load vector ``[G]`` or a matrix ``[steps, G]`` (one row per decode step) and
return a scalar or a vector over steps.
"""

from __future__ import annotations

import numpy as np


def envelope(loads: np.ndarray) -> np.ndarray:
    """M = max_g L_g."""
    return np.max(loads, axis=-1)


def margins(loads: np.ndarray) -> np.ndarray:
    """m_g = M - L_g (how much worker g can absorb before it becomes the straggler)."""
    return envelope(loads)[..., None] - loads if np.ndim(loads) > 1 else envelope(loads) - loads


def imbalance_gap(loads: np.ndarray) -> np.ndarray:
    """I = G·M - Σ_g L_g: token·worker units of barrier idle (the optimisation objective)."""
    g = np.shape(loads)[-1]
    return g * envelope(loads) - np.sum(loads, axis=-1)


def imbalance_maxmin(loads: np.ndarray) -> np.ndarray:
    """D = max_g L_g - min_g L_g (the BalanceRoute paper's table metric)."""
    return envelope(loads) - np.min(loads, axis=-1)


def idle_fraction(loads: np.ndarray) -> np.ndarray:
    """I / (G·M): the share of worker-time spent waiting at the barrier (0 when nothing is loaded)."""
    g = np.shape(loads)[-1]
    m = envelope(loads).astype(np.float64)
    gap = imbalance_gap(loads).astype(np.float64)
    return np.divide(gap, g * m, out=np.zeros_like(m), where=m > 0)


def balance_ratio(loads: np.ndarray) -> np.ndarray:
    """mean_g L_g / max_g L_g (TensorRT-LLM's metric; 1 is perfect balance)."""
    g = np.shape(loads)[-1]
    m = envelope(loads).astype(np.float64)
    mean = np.sum(loads, axis=-1) / g
    return np.divide(mean, m, out=np.ones_like(m), where=m > 0)


def step_stats(max_: np.ndarray, min_: np.ndarray, sum_: np.ndarray, g: int) -> dict[str, np.ndarray]:
    """The same quantities from per-step aggregates (max, min, sum) — what the simulator keeps."""
    max_ = np.asarray(max_, dtype=np.float64)
    gap = g * max_ - sum_
    pos = max_ > 0
    return {
        "gap": gap,
        "maxmin": max_ - min_,
        "idle": np.divide(gap, g * max_, out=np.zeros_like(max_), where=pos),
        "balance": np.divide(sum_ / g, max_, out=np.ones_like(max_), where=pos),
    }
