"""llmd_prefix: llm-d's inference scheduler with its default scheduling profile (``queue-scorer`` weight 2,
``kv-cache-utilization-scorer`` weight 2, ``prefix-cache-scorer`` weight 3, ``max-score-picker``).

Each scorer gives every worker a score in [0, 1]; the worker with the highest weighted sum wins, ties at random
(seeded), as the max-score picker does:

- prefix: cached prompt tokens / prompt tokens (llm-d: matched blocks / the request's blocks);
- queue: min–max normalised, (max q − q_g) / (max q − min q), 1 for all when equal. llm-d reads vLLM's waiting
  queue length; the ``PrefixView`` has no per-rank request queue, so pending prefill tokens stand in for it
  (the work queued before a new request's prefill); without a view, the in-flight request counts;
- KV utilisation: 1 − usage, usage_g = held / (held + free) with held = the worker's KV tokens of active requests
  and free = ``kv_free`` (0 usage when the capacity is unlimited or unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.config import setting
from ..base import PolicyContext
from .common import PrefixFifo, Scratch, pick_random


@dataclass(frozen=True)
class LlmdPrefixConfig:
    prefix_weight: float = setting(3.0, "weight of the prefix-cache scorer", min=0.0)
    queue_weight: float = setting(2.0, "weight of the queue scorer", min=0.0)
    kv_weight: float = setting(2.0, "weight of the KV-cache-utilisation scorer", min=0.0)


def minmax_low_is_good(q: np.ndarray, ok: np.ndarray) -> np.ndarray:
    v = q[ok]
    lo, hi = float(v.min()), float(v.max())
    out = np.ones_like(q, dtype=np.float64)
    if hi > lo:
        out = (hi - q) / (hi - lo)
    return out


class LlmdPrefixPolicy(PrefixFifo):
    def __init__(self, cfg: LlmdPrefixConfig, ctx: PolicyContext):
        self.cfg = cfg
        self.rng = np.random.default_rng(ctx.seed)

    def scores(self, sc: Scratch, i: int, s: float) -> np.ndarray:
        cfg = self.cfg
        ok = sc.free > 0
        prefix = sc.hit[i] / s if s > 0 else np.zeros_like(sc.loads)
        queue = minmax_low_is_good(sc.pending if sc.has_view else sc.counts.astype(np.float64), ok)
        kvf = sc.kv_free
        with np.errstate(invalid="ignore", divide="ignore"):
            usage = np.where(np.isfinite(kvf), sc.loads / np.maximum(sc.loads + kvf, 1.0), 0.0)
        return cfg.prefix_weight * prefix + cfg.queue_weight * queue + cfg.kv_weight * (1.0 - np.clip(usage, 0, 1))

    def choose(self, sc: Scratch, i: int, s: float) -> int:
        return pick_random(sc.free, -self.scores(sc, i, s), self.rng)
