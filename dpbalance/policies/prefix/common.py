"""The shared driver of the prefix-aware baselines: the oldest waiting requests, one at a time, each onto the free
worker its rule chooses from a ``Scratch`` of per-worker state that the driver updates after every placement (so
one dispatch places many requests consistently).

``Scratch`` holds, for the requests of this dispatch and every worker: ``hit`` [n, G] prompt tokens the worker
would serve from its cache (``PrefixView.cached``; zeros without a view), and per worker the token ``loads``,
request ``counts``, ``free`` slots, ``pending`` prefill tokens and ``kv_free`` KV headroom (inf: unlimited or
unknown). A placement of a request of s tokens on g adds s to the load, one to the count, s − hit to the pending
prefill and takes s − hit of KV headroom. When the view offers ``blocks`` (optional: the block hashes of each
request), a placement also counts as cached on its worker for the requests placed after it in the same dispatch
(``hit`` is raised to their common prefix), as a router's prefix index does from the moment it sends.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from ...core.snapshot import Assignments, Snapshot
from ..base import NONE, Policy


class Scratch:
    __slots__ = ("hit", "loads", "counts", "free", "pending", "kv_free", "has_view", "block_size", "_blocks", "_sent")

    def __init__(self, snap: Snapshot, ids: np.ndarray):
        v = snap.prefix
        G = snap.workers
        self.has_view = v is not None
        self.loads = snap.loads.astype(np.float64)
        self.counts = snap.counts.astype(np.int64)
        self.free = snap.free.astype(np.int64)
        if v is None:
            self.hit = np.zeros((len(ids), G))
            self.pending = np.zeros(G)
            self.kv_free = np.full(G, np.inf)
            self.block_size = 1
        else:
            self.hit = np.asarray(v.cached(ids), dtype=np.float64)
            self.pending = np.asarray(v.pending_prefill, dtype=np.float64).copy()
            self.kv_free = np.asarray(v.kv_free, dtype=np.float64).copy()
            self.block_size = int(v.block_size)
        fn = getattr(v, "blocks", None) if v is not None else None
        self._blocks = fn(ids) if fn is not None and len(ids) > 1 else None
        self._sent: dict[int, int] = {}  # block -> mask of workers given a request holding it in this dispatch

    def refresh(self, i: int) -> None:
        """Raise request i's hits by what this dispatch's earlier placements will have cached."""
        if self._blocks is None or not self._sent:
            return
        row, sent, bs = self.hit[i], self._sent, self.block_size
        mask = (1 << len(row)) - 1
        for k, x in enumerate(self._blocks[i]):
            mask &= sent.get(x, 0)
            if not mask:
                break
            m = mask
            while m:
                low = m & -m
                g = low.bit_length() - 1
                if row[g] < (k + 1) * bs:
                    row[g] = (k + 1) * bs
                m ^= low

    def place(self, i: int, g: int, s: float) -> None:
        miss = s - self.hit[i, g]
        self.loads[g] += s
        self.counts[g] += 1
        self.free[g] -= 1
        self.pending[g] += miss
        self.kv_free[g] -= miss
        if self._blocks is not None:
            bit, sent = 1 << g, self._sent
            for x in self._blocks[i]:
                sent[x] = sent.get(x, 0) | bit


def pick(free: np.ndarray, *keys: np.ndarray) -> int:
    """The worker with a free slot whose keys are lexicographically smallest (first key first); ties: lowest index."""
    ok = np.flatnonzero(free > 0)
    if len(ok) == 1 or not keys:
        return int(ok[0])
    order = np.lexsort(tuple(k[ok] for k in reversed(keys)))  # lexsort: last key is primary, stable by index
    return int(ok[order[0]])


def pick_random(free: np.ndarray, key: np.ndarray, rng: np.random.Generator, tol: float = 1e-9) -> int:
    """The worker with a free slot and the smallest key; ties broken uniformly at random (seeded)."""
    ok = np.flatnonzero(free > 0)
    k = key[ok]
    best = k.min()
    cand = ok[k <= best + tol * max(1.0, abs(best))]
    return int(cand[0]) if len(cand) == 1 else int(cand[rng.integers(len(cand))])


class PrefixFifo(Policy):
    """Oldest first: every waiting request that has a free slot somewhere is placed now, on ``choose``'s worker."""

    forwards = True  # the systems these rules stand for route at once and let the rank queue

    def dispatch(self, snap: Snapshot) -> Assignments:
        n = min(snap.pool_size, snap.total_free) if snap.pool_size else 0
        if n <= 0:
            return NONE
        ids = snap.pool_ids[:n]
        prompt = snap.pool_prompt[:n].tolist()
        sc = Scratch(snap, ids)
        self.begin(snap, sc)
        ws = np.empty(n, dtype=np.int64)
        for i, s in enumerate(prompt):
            sc.refresh(i)
            g = ws[i] = self.choose(sc, i, float(s))
            self.placed(sc, i, g, float(s))
            sc.place(i, g, float(s))
        return Assignments(ids, ws)

    def begin(self, snap: Snapshot, sc: Scratch) -> None:
        """Called once per dispatch with requests to place."""

    def placed(self, sc: Scratch, i: int, g: int, s: float) -> None:
        """Called after each choice, before the scratch is updated (per-policy state)."""

    @abstractmethod
    def choose(self, sc: Scratch, i: int, s: float) -> int:
        """The worker (with ``sc.free > 0``) for request ``i`` of this dispatch, of ``s`` prompt tokens."""
