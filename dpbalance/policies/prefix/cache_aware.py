"""The cache-aware rule of SGLang's router (sgl-router / sgl-model-gateway ``policies/cache_aware.rs``), which
vllm-router forked; both are one class here with their own defaults.

Per request: the load of a worker is its in-flight requests (the router's counter; here ``counts``, updated as
this dispatch places). If the loads are imbalanced — max − min > ``balance_abs_threshold`` **and**
max > ``balance_rel_threshold`` · min — the request goes to the least-loaded worker (shortest queue). Otherwise,
with match rate = longest cached prefix / prompt length, the worker with the best match takes it if the rate
exceeds ``cache_threshold``; else the worker with the smallest tree. The tree of a worker is the text the router
has sent it: here the prompt tokens this policy placed there that were not already cached there (a radix tree
grows by the unmatched suffix), never evicted (SGLang evicts by ``max_tree_size`` every ``eviction_interval``;
at its CLI default of 2^26 characters that is not reached in these runs). Matches come from ``PrefixView.cached``
(the ranks' caches, or the router's index of them) instead of the router's own character tree.

Defaults: ``sglang_cache_aware`` takes the sglang-router CLI defaults (cache_threshold 0.3,
balance_abs_threshold 64, balance_rel_threshold 1.5: what a user launching ``sglang_router.launch_router`` gets,
and what our testbed ran); ``vllm_router_cache_aware`` the library defaults of the shared gateway code
(``CacheAwareConfig::default``: 0.5, 32, 1.1). Without a prefix view no worker matches, so it routes to the
smallest tree (the fewest tokens sent) unless the request counts are imbalanced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.config import setting
from ...core.snapshot import Snapshot
from ..base import PolicyContext
from .common import PrefixFifo, Scratch, pick


@dataclass(frozen=True)
class SglangCacheAwareConfig:
    cache_threshold: float = setting(0.3, "least match rate (cached / prompt) that routes by cache", min=0.0, max=1.0)
    balance_abs_threshold: int = setting(64, "imbalanced when max − min in-flight requests exceeds this", min=0)
    balance_rel_threshold: float = setting(1.5, "… and max exceeds this times min", min=1.0)


@dataclass(frozen=True)
class VllmRouterCacheAwareConfig:
    cache_threshold: float = setting(0.5, "least match rate (cached / prompt) that routes by cache", min=0.0, max=1.0)
    balance_abs_threshold: int = setting(32, "imbalanced when max − min in-flight requests exceeds this", min=0)
    balance_rel_threshold: float = setting(1.1, "… and max exceeds this times min", min=1.0)


class CacheAwarePolicy(PrefixFifo):
    def __init__(self, cfg, ctx: PolicyContext):
        self.cfg = cfg
        self.tree = np.zeros(ctx.workers)  # tokens sent to each worker that it did not already hold

    def imbalanced(self, counts: np.ndarray) -> bool:
        hi, lo = int(counts.max()), int(counts.min())
        return hi - lo > self.cfg.balance_abs_threshold and hi > self.cfg.balance_rel_threshold * lo

    def begin(self, snap: Snapshot, sc: Scratch) -> None:
        if len(self.tree) != snap.workers:
            self.tree = np.zeros(snap.workers)

    def choose(self, sc: Scratch, i: int, s: float) -> int:
        if self.imbalanced(sc.counts):
            return pick(sc.free, sc.counts)
        hit = np.where(sc.free > 0, sc.hit[i], -1.0)
        best = float(hit.max())
        if s > 0 and best / s > self.cfg.cache_threshold:
            return pick(sc.free, -sc.hit[i])
        return pick(sc.free, self.tree)

    def placed(self, sc: Scratch, i: int, g: int, s: float) -> None:
        self.tree[g] += s - sc.hit[i, g]
