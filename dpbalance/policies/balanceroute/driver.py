"""The BalanceRoute driver shared by BR-0 and BR-H (they differ only in the scorer, see ``scorers``).

One dispatch, on the waiting requests the snapshot shows (the first ``window`` of them, oldest first):

0. **Overdue requests first** (``max_wait_s``): a request that has waited longer than the cap is admitted before
   anything else, on the free worker where F is highest — so no wait exceeds the cap by more than the time until
   some slot frees.
1. **Placement** while slots are plentiful (``s_greedy``; by default while every waiting request fits):
   ``placement=load`` places the requests largest first, each on the worker with the highest F (ties: lowest
   load) — a load-aware rule, which is what wins when slots are not scarce; ``placement=free`` is the BF-IO
   authors' greedy: the worker with most free slots (ties: lowest load) takes the waiting request with the
   highest F.
2. **Packing** when slots are scarce: workers with free slots in order (lowest load first, or most free slots
   then largest margin), each taking a subset of the candidates (``subset_rule``, see ``packing``) sized to its
   target Δ*; a worker with slots left goes back in the queue.
Every free slot is used while requests wait (work-conserving): when no subset scores above zero the single
best request is admitted anyway.
"""

from __future__ import annotations

import heapq

import numpy as np

from ...core.snapshot import Assignment, Snapshot
from . import packing
from .config import BR0Config
from .scorers import Scorer


class BalanceRoute:
    def __init__(self, cfg: BR0Config, workers: int, scorer: Scorer):
        self.cfg = cfg.resolved()
        self.G = workers
        self.scorer = scorer

    # ------------------------------------------------------------------ helpers
    def _best_worker(self, s: float, free: np.ndarray) -> int:
        """The free worker with the highest F for s; ties go to the lowest load."""
        f = self.scorer.scores(s)
        f = np.where(free > 0, f, -np.inf)
        best = f.max()
        cand = np.flatnonzero(f >= best - 1e-9 * max(1.0, abs(best)))
        return int(cand[0]) if len(cand) == 1 else int(cand[np.argmin(self.scorer.load[cand])])

    def _take(self, i: int, g: int) -> None:
        self._taken[i] = True
        self._out.append(Assignment(int(self._ids[i]), g))
        self._free[g] -= 1
        self.scorer.add(g, self._sizes[i])

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, snap: Snapshot) -> list[Assignment]:
        free = snap.free.astype(np.int64)
        total_free = int(free.sum())
        n_pool = snap.pool_size
        if total_free == 0 or n_pool == 0:
            return []
        cfg = self.cfg
        n = min(n_pool, cfg.window)
        if not isinstance(cfg.max_wait_s, str):
            # bounded overtaking: only requests that arrived within max_wait_s of the oldest waiting one are
            # candidates, so nobody is passed over for a request that arrived more than max_wait_s after it
            arr = snap.pool_arrival[:n]
            n = max(1, int(np.searchsorted(arr, arr[0] + cfg.max_wait_s, side="right")))
        self._ids = snap.pool_ids[:n]
        self._sizes = sizes = snap.pool_prompt[:n].astype(np.float64)
        self._taken = taken = np.zeros(n, dtype=bool)
        self._free = free
        self._out = out = []
        sc = self.scorer
        sc.prepare(snap)
        left = n

        # 1. placement while slots are plentiful
        def plentiful() -> bool:
            return left <= total_free if cfg.s_greedy == "fit" else total_free > cfg.s_greedy

        placement = cfg.placement
        if placement == "auto":  # a burst (at least one request per worker) is spread; a trickle goes by load
            placement = "free" if n >= self.G else "load"
        if left and total_free and plentiful():
            if placement == "load":
                order = np.argsort(-sizes, kind="stable") if cfg.s_greedy == "fit" else np.arange(n)
                for i in order.tolist():
                    if taken[i]:
                        continue
                    if not (left and total_free and plentiful()):
                        break
                    self._take(i, self._best_worker(sizes[i], free))
                    left -= 1
                    total_free -= 1
            else:
                while left and total_free and plentiful():
                    best_free = free.max()
                    ws = np.flatnonzero(free == best_free)
                    g = int(ws[0]) if len(ws) == 1 else int(ws[np.argmin(sc.load[ws])])
                    score = np.where(taken, -np.inf, sc.score(g, sizes))
                    self._take(int(np.argmax(score)), g)
                    left -= 1
                    total_free -= 1

        # 2. packing when slots are scarce
        if left and total_free:
            self._pack(left)
        return out

    def _key(self, g: int):
        L = self.scorer.load
        if self.cfg.worker_key == "load":
            return (L[g], g)
        return (-int(self._free[g]), L[g], g)  # most free slots, then largest margin (= lowest load)

    def _pack(self, left: int) -> None:
        cfg, sc, free, sizes = self.cfg, self.scorer, self._free, self._sizes
        r_max = cfg.r_max or len(sizes)
        heap = [self._key(g) + (g,) for g in np.flatnonzero(free > 0).tolist()]
        heapq.heapify(heap)
        while heap and left:
            g = heapq.heappop(heap)[-1]
            pos = np.flatnonzero(~self._taken)[:r_max]
            s = sizes[pos]
            K = min(int(free[g]), len(pos))
            if cfg.subset_rule == "max_count":
                chosen = packing.max_count(s, float(sc.targets_of(g)), K, cfg.dp_buckets)
            else:
                chosen = packing.max_f(s, K, float(sc.targets_of(g)), lambda d, g=g: sc.score(g, d), cfg.dp_buckets)
            if not chosen:  # anti-starvation: the single best request by F
                chosen = [int(np.argmax(sc.score(g, s)))]
            for j in chosen:
                self._take(int(pos[j]), g)
            left -= len(chosen)
            if free[g] > 0 and left:
                heapq.heappush(heap, self._key(g) + (g,))
