"""The request population a run replays: columnar arrays sorted by arrival.

A ``Workload`` is what every trace loader and synthetic generator produces and what the simulator,
predictors and load generator consume. Request ``i`` is row ``i``; ids are dense and follow arrival
order, which lets the pool keep ids sorted and find them by binary search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NO_KEY = -1  # prompt_key value for "no prompt identity known"


@dataclass(frozen=True)
class Workload:
    """Columnar requests. ``arrival`` in seconds from the first request (0 when the trace has none)."""

    arrival: np.ndarray  # float64 [N], non-decreasing
    prompt: np.ndarray  # int64 [N], s_i >= 0
    output: np.ndarray  # int64 [N], o_i >= 1
    key: np.ndarray  # int64 [N], prompt identity hash or NO_KEY
    name: str = "workload"
    has_timestamps: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.arrival)
        for col in ("prompt", "output", "key"):
            if len(getattr(self, col)) != n:
                raise ValueError(f"workload column {col!r} has {len(getattr(self, col))} rows, expected {n}")
        if n and np.any(np.diff(self.arrival) < 0):
            raise ValueError("workload arrivals must be sorted (use Workload.from_rows to sort)")
        if n and (self.output.min() < 1):
            raise ValueError("every request needs output length >= 1")
        if n and (self.prompt.min() < 0):
            raise ValueError("prompt lengths must be >= 0")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        arrival,
        prompt,
        output,
        key=None,
        *,
        name: str = "workload",
        has_timestamps: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> Workload:
        """Build from arbitrary columns: sorted by arrival (stable), times shifted to start at 0."""
        arrival = np.asarray(arrival, dtype=np.float64)
        prompt = np.asarray(prompt, dtype=np.int64)
        output = np.asarray(output, dtype=np.int64)
        key = np.full(len(arrival), NO_KEY, dtype=np.int64) if key is None else np.asarray(key, dtype=np.int64)
        order = np.argsort(arrival, kind="stable")
        arrival = arrival[order]
        if len(arrival):
            arrival = arrival - arrival[0]
        return cls(arrival, prompt[order], output[order], key[order], name, has_timestamps, dict(meta or {}))

    def __len__(self) -> int:
        return len(self.arrival)

    def _take(self, idx, **meta_updates) -> Workload:
        arrival = self.arrival[idx]
        if len(arrival):
            arrival = arrival - arrival[0]
        meta = {**self.meta, **meta_updates}
        return Workload(
            arrival, self.prompt[idx], self.output[idx], self.key[idx], self.name, self.has_timestamps, meta
        )

    # ------------------------------------------------------------------ filters
    def filter(
        self,
        *,
        min_output: int | None = None,
        max_output: int | None = None,
        start_s: float | None = None,
        end_s: float | None = None,
        max_requests: int | None = None,
    ) -> Workload:
        """Keep rows matching every given bound, then the first ``max_requests`` of them."""
        mask = np.ones(len(self), dtype=bool)
        if min_output is not None:
            mask &= self.output >= min_output
        if max_output is not None:
            mask &= self.output <= max_output
        if start_s is not None:
            mask &= self.arrival >= start_s
        if end_s is not None:
            mask &= self.arrival < end_s
        idx = np.flatnonzero(mask)
        if max_requests is not None:
            if max_requests < 1:
                raise ValueError("max_requests must be >= 1")
            idx = idx[:max_requests]
        applied = {
            k: v
            for k, v in dict(
                min_output=min_output, max_output=max_output, start_s=start_s, end_s=end_s, max_requests=max_requests
            ).items()
            if v is not None
        }
        return self._take(idx, filters={**self.meta.get("filters", {}), **applied})

    def split(self, train_fraction: float = 0.5) -> tuple[Workload, Workload]:
        """Time-ordered train/test split: the first ``train_fraction`` of requests train predictors,
        the rest are replayed. Ordering by time means no test request's future leaks into training."""
        if not 0.0 < train_fraction < 1.0:
            raise ValueError("train_fraction must be in (0, 1)")
        cut = int(round(len(self) * train_fraction))
        idx = np.arange(len(self))
        return self._take(idx[:cut], split="train"), self._take(idx[cut:], split="test")

    def head_tail(self, n_test: int) -> tuple[Workload, Workload]:
        """Replay the first ``n_test`` requests and train on everything after them.

        Used when a run replays a prefix (``--max-requests``): the remaining rows are a training split
        disjoint from the replayed requests."""
        idx = np.arange(len(self))
        return self._take(idx[n_test:], split="train"), self._take(idx[:n_test], split="test")

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, float]:
        def q(x, p):
            return float(np.percentile(x, p)) if len(x) else float("nan")

        n = len(self)
        span = float(self.arrival[-1] - self.arrival[0]) if n else 0.0
        return {
            "requests": n,
            "span_s": span,
            "rate_req_s": (n / span) if span > 0 else float("nan"),
            "prompt_mean": float(self.prompt.mean()) if n else float("nan"),
            "prompt_p50": q(self.prompt, 50),
            "prompt_p99": q(self.prompt, 99),
            "prompt_max": int(self.prompt.max()) if n else 0,
            "output_mean": float(self.output.mean()) if n else float("nan"),
            "output_p50": q(self.output, 50),
            "output_p99": q(self.output, 99),
            "output_max": int(self.output.max()) if n else 0,
            "output_gt_1000": int((self.output > 1000).sum()),
            "distinct_keys": int(len(np.unique(self.key[self.key != NO_KEY]))),
        }
