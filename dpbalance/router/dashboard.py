"""``/dashboard``: a live view of the router — per-rank load bars, imbalance and barrier idle over the last minutes,
the pool, and the outcomes — as one static page (no build step) that polls ``/dashboard/state`` every second.

The router samples its own accounting once a second into a ring buffer (``History``); the page draws from it.
The same figures are in ``/metrics`` for Prometheus (``docs/grafana-dashboard.json`` charts them in Grafana).
"""

from __future__ import annotations

import time
from collections import deque
from importlib import resources

import numpy as np

PAGE = resources.files("dpbalance.router").joinpath("static/dashboard.html")


class History:
    """One sample a second of the router's state, the last ``seconds`` of them."""

    def __init__(self, G: int, seconds: float):
        self.G = G
        self.samples: deque[dict] = deque(maxlen=max(10, int(seconds)))

    def sample(
        self,
        state,
        in_rotation: np.ndarray,
        breaker: list[int],
        pool: int,
        outcomes: dict,
        tokens: np.ndarray,
        policy: str,
        prefix=None,
    ) -> None:
        loads = state.loads.astype(np.int64)
        M = int(loads.max()) if len(loads) else 0
        gap = self.G * M - int(loads.sum())
        self.samples.append(
            {
                "t": time.time(),
                "loads": loads.tolist(),
                "running": state.counts.tolist(),
                "free": state.free.tolist(),
                "in_rotation": [bool(x) for x in in_rotation],
                "breaker": list(breaker),
                "pool": int(pool),
                "maxmin": int(M - loads.min()) if len(loads) else 0,
                "gap": gap,
                "idle": gap / (self.G * M) if M > 0 else 0.0,
                "outcomes": dict(outcomes),
                "tokens": int(tokens.sum()),
                "policy": policy,
                # the prefix index's estimates (cache-aware policies only): hit rate and prefill left per rank
                "prefix_hit_rate": prefix.hit_rates() if prefix is not None else None,
                "pending_prefill": prefix.pending_prefill.tolist() if prefix is not None else None,
            }
        )

    def state(self) -> dict:
        """What the page draws: the latest sample in full and the time series of the rest."""
        s = list(self.samples)
        if not s:
            return {"ranks": self.G, "series": {}, "now": None}
        keys = ("t", "maxmin", "idle", "pool", "tokens")
        return {"ranks": self.G, "now": s[-1], "series": {k: [x[k] for x in s] for k in keys}}


def page() -> bytes:
    return PAGE.read_bytes()
