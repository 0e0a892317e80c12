"""The predictor contract: how likely each active request is to still be decoding h steps from now.

BR-H and BF-IO look H decode steps ahead. All they need from a predictor is, for every active request, the
probability that it is still running at horizon step h = 0..H (step 0 is the coming step, so column 0 is 1):

    alive[i, h] = P(r_i > h | age_i, key_i),   r_i = remaining decode steps.

Everything else follows from it: ĉ_i = E[min(r_i, H)] = Σ_{h<H} alive[i, h]; p_fin = P(r_i ≤ H) = 1 − alive[i, H];
μ_rem = E[r_i | r_i ≤ H]. A predictor is fitted once, at construction, on a *training* workload that is never
replayed, and evaluated vectorised over the active set.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..core.workload import Workload


class PredictorError(ValueError):
    """A predictor cannot be built (e.g. it needs a training split and none was given)."""


class Predictor(Protocol):
    def alive(
        self, age: np.ndarray, key: np.ndarray, limit: np.ndarray, H: int, rid: np.ndarray | None = None
    ) -> np.ndarray:
        """[n, H+1] probabilities that each request (tokens generated so far: ``age``; prompt identity ``key``;
        output hint ``limit``: true length in the simulator, ``max_tokens`` live) still decodes at step h."""
        ...


def expected_steps(alive: np.ndarray) -> np.ndarray:
    """ĉ = E[min(r, H)] = Σ_{h<H} P(r > h)."""
    return alive[:, :-1].sum(axis=1)


def finish_stats(alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p_fin, μ_rem): P(finish within H) and E[remaining steps | finish within H] (nan when p_fin = 0)."""
    H = alive.shape[1] - 1
    p_fin = 1.0 - alive[:, H]
    # P(r = h) for h = 1..H is alive[h-1] - alive[h]
    mass = alive[:, :-1] - alive[:, 1:]
    num = (mass * np.arange(1, H + 1)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(p_fin > 0, num / np.where(p_fin > 0, p_fin, 1.0), np.nan)
    return p_fin, mu


def need_train(train: Workload | None, name: str) -> Workload:
    if train is None or len(train) == 0:
        raise PredictorError(
            f"predictor {name!r} needs a training split of requests that are not replayed: use --max-requests "
            "smaller than the trace (later rows train), or --train-split F (the router: --train-trace); or use "
            "predictor=oracle"
        )
    return train
