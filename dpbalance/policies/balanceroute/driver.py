"""The BalanceRoute driver shared by BR-0 and BR-H (they differ only in the scorer, see ``scorers``).

One dispatch, on the waiting requests the snapshot shows (the first ``window`` of them, oldest first):

0. **Bounded overtaking** (``max_wait_s`` = W): once the oldest waiting request has been passed over by a request
   that arrived more than W after it, it is *overdue*: the lightest worker is marked for it, and it is admitted
   there at the first moment it fits that worker's margin and the worker has a free slot, or at the first free
   slot anywhere once it has waited 2·W. So no request waits more than 2·W plus the time until a slot frees
   (overdue requests go in arrival order), and a large prompt goes where there is room for it rather than wherever a
   slot happened to free.
1. **Placement** while slots are plentiful (``s_greedy``; by default while every waiting request fits):
   ``placement=load`` places the requests largest first, each on the worker with the highest F (ties: lowest
   load), no worker taking more than its share of the batch (``quota``) — the load-aware rule that wins when
   slots are not scarce, where a count rule (most free slots) loses to join-shortest-queue by tokens;
   ``placement=free`` is the BF-IO authors' greedy: the worker with most free slots (ties: lowest load) takes the
   waiting request with the highest F. ``hold_s`` optionally holds a small batch (fewer requests than workers)
   briefly so it can be spread (TensorRT-LLM's coordinated waiting; off by default).
2. **Packing** when slots are scarce: workers with free slots in order (lowest load first, or most free slots
   then largest margin), each taking a subset of the candidates (``subset_rule``, see ``packing``) sized to its
   target Δ*; a worker with slots left goes back in the queue.
Every free slot is used while requests wait (work-conserving): when no subset scores above zero the single best
request is admitted anyway.
"""

from __future__ import annotations

import bisect
import heapq

import numpy as np

from ...core.snapshot import Assignment, Snapshot
from . import packing
from .config import BR0Config
from .scorers import Br0Scorer, Scorer


class BalanceRoute:
    def __init__(self, cfg: BR0Config, workers: int, scorer: Scorer):
        self.cfg = cfg.resolved()
        self.G = workers
        self.scorer = scorer
        self._newest = -np.inf  # latest arrival time among the requests this policy admitted
        self._reserved: tuple[int, int] | None = None  # (overdue request id, the worker marked for it)

    # ------------------------------------------------------------------ helpers
    def _best_worker(self, s: float, room: np.ndarray) -> int:
        """The worker with room and the highest F for s; ties go to the lowest load."""
        f = np.where(room > 0, self.scorer.scores(s), -np.inf)
        best = f.max()
        cand = np.flatnonzero(f >= best - 1e-9 * max(1.0, abs(best)))
        if len(cand) == 1:
            return int(cand[0])
        return int(cand[np.argmin(self.scorer.load[cand])])

    def _take(self, i: int, g: int) -> None:
        self._taken[i] = True
        self._out.append(Assignment(int(self._ids[i]), g))
        self._free[g] -= 1
        self._left -= 1
        self.scorer.add(g, self._sizes[i])
        a = float(self._arrival[i])
        if a > self._newest:
            self._newest = a

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, snap: Snapshot) -> list[Assignment]:
        n_pool = snap.pool_size
        if n_pool == 0:
            self._reserved = None
        if snap.total_free == 0 or n_pool == 0:
            return []
        cfg = self.cfg
        n = min(n_pool, cfg.window)
        self._ids = snap.pool_ids[:n]
        self._sizes = snap.pool_prompt[:n].astype(np.float64)
        self._arrival = snap.pool_arrival[:n]
        self._taken = np.zeros(n, dtype=bool)
        self._free = snap.free.astype(np.int64)
        self._out = []
        self._left = n
        self.scorer.prepare(snap)
        self._overdue(snap)
        if self._left and self._free.sum():
            self._place(snap)
        if self._left and self._free.sum():
            self._pack()
        return self._out

    def _overdue(self, snap: Snapshot) -> None:
        """Step 0: admit the overdue request where it fits, or keep it waiting for its reserved worker."""
        W = self.cfg.max_wait_s
        if isinstance(W, str):
            return None
        res = self._reserved
        if res is not None and (len(self._ids) == 0 or int(self._ids[0]) != res[0]):
            res = self._reserved = None  # it left the pool (admitted, or gone in the router)
        if res is None:
            if self._newest - float(self._arrival[0]) <= W:
                return
            g = int(np.argmin(np.where(snap.caps > 0, self.scorer.load, np.inf)))
            res = self._reserved = (int(self._ids[0]), g)
        g = res[1]
        fits = self._sizes[0] <= self.scorer.targets_of(g)
        late = snap.now - float(self._arrival[0]) > 2 * W  # waited twice the bound: the first free slot
        if self._free[g] > 0 and (fits or late):
            self._take(0, g)
            self._reserved = None
        elif late and self._free.sum():  # its worker has no slot yet: the first free slot anywhere
            self._take(0, self._best_worker(self._sizes[0], self._free))
            self._reserved = None
        else:
            self._taken[0] = True  # it waits for its worker; the others are placed as usual
            self._left -= 1

    def _place(self, snap: Snapshot) -> None:
        cfg, sc, free, sizes, taken = self.cfg, self.scorer, self._free, self._sizes, self._taken
        total_free = int(free.sum())
        if cfg.s_greedy == "fit":
            if self._left > total_free:
                return
        elif total_free <= cfg.s_greedy:
            return
        if cfg.hold_s and self._left < self.G and snap.now - float(self._arrival[~taken][0]) < cfg.hold_s:
            self._left = 0  # coordinated waiting: gather a batch of at least one request per worker, briefly
            return

        def plentiful() -> bool:
            tf = int(free.sum())
            return tf > 0 and (self._left <= tf if cfg.s_greedy == "fit" else tf > cfg.s_greedy)

        if cfg.placement == "load":
            order = np.argsort(-sizes, kind="stable")  # largest first
            # a worker takes at most its share of this dispatch's requests (in proportion to its free slots, or
            # evenly), so a batch spreads over the workers instead of filling the lightest ones' slots
            if cfg.quota == "even":
                quota = np.where(free > 0, -(-self._left // max(1, int((free > 0).sum()))), 0)
            elif cfg.quota == "free":
                quota = np.ceil(free * (self._left / total_free)).astype(np.int64)
            else:
                quota = free.copy()
            if isinstance(sc, Br0Scorer):
                self._lpt(order, np.minimum(free, quota))
                return
            for i in order.tolist():
                if taken[i]:
                    continue
                if not (self._left and plentiful()):
                    break
                room = np.minimum(free, quota)
                g = self._best_worker(sizes[i], room if (room > 0).any() else free)
                quota[g] -= 1
                self._take(i, g)
        else:
            while self._left and plentiful():
                ws = np.flatnonzero(free == free.max())
                g = int(ws[0]) if len(ws) == 1 else int(ws[np.argmin(sc.load[ws])])
                self._take(int(np.argmax(np.where(taken, -np.inf, sc.score(g, sizes)))), g)

    def _lpt(self, order: np.ndarray, room: np.ndarray) -> None:
        """Load placement with the BR-0 score, in O(log G) per request: for one request the best F is always at the
        lightest worker with room (if any worker's margin holds it, the lightest does; if none does, the lightest
        overflows least), so the placement is largest-first onto the lightest worker — a heap of loads."""
        free, sizes, taken = self._free, self._sizes, self._taken
        if not (room > 0).any():
            room = free.copy()
        room = room.tolist()
        sc = self.scorer
        heap = [(float(sc.load[g]), g) for g in range(len(room)) if room[g] > 0]
        heapq.heapify(heap)
        picked_i, picked_g = [], []
        left = self._left
        sz = sizes.tolist()
        for i in order.tolist():
            if not heap or not left:
                break
            if taken[i]:
                continue
            L, g = heapq.heappop(heap)
            picked_i.append(i)
            picked_g.append(g)
            left -= 1
            room[g] -= 1
            if room[g] > 0:
                heapq.heappush(heap, (L + sz[i], g))
        if not picked_i:
            return
        idx = np.array(picked_i)
        ws = np.array(picked_g)
        taken[idx] = True
        free -= np.bincount(ws, minlength=len(free))
        self._left = left
        sc.add_many(ws, sizes[idx])
        self._out.extend(map(Assignment, self._ids[idx].tolist(), picked_g))
        self._newest = max(self._newest, float(self._arrival[idx].max()))

    def _key(self, g: int):
        L = self.scorer.load
        if self.cfg.worker_key == "load":
            return (L[g], g)
        return (-int(self._free[g]), L[g], g)  # most free slots, then largest margin (= lowest load)

    def _pack(self) -> None:
        cfg, sc, free, sizes = self.cfg, self.scorer, self._free, self._sizes
        r_max = cfg.r_max or len(sizes)
        # a worker with one free slot under the BR-0 score takes the largest candidate within its target, else the
        # smallest (least overflow): a bisection in the sorted candidates instead of a scan of the pool
        fast = isinstance(sc, Br0Scorer) and cfg.subset_rule == "max_count" and r_max >= len(sizes) and sc.beta >= 1
        if fast:
            avail = np.flatnonzero(~self._taken)
            avail = avail[np.argsort(sizes[avail], kind="stable")]
            vals, idx = sizes[avail].tolist(), avail.tolist()
        heap = [self._key(g) + (g,) for g in np.flatnonzero(free > 0).tolist()]
        heapq.heapify(heap)
        while heap and self._left:
            g = heapq.heappop(heap)[-1]
            if fast and free[g] == 1:
                k = bisect.bisect_right(vals, float(sc.targets_of(g))) - 1
                if k < 0:
                    k = 0
                else:
                    k = bisect.bisect_left(vals, vals[k])  # the oldest of equal sizes, as the scan would pick
                self._take(idx[k], g)
                del vals[k], idx[k]
                continue
            if fast and len(vals) * min(int(free[g]), len(vals)) > packing.EXACT_WORK:
                # many candidates, several slots: the greedy max-count on the sorted candidates as they stand
                picked = packing.greedy_sorted(vals, idx, float(sc.targets_of(g)), int(free[g])) or [idx[0]]
                for i in picked:
                    k = bisect.bisect_left(vals, float(sizes[i]))
                    k += idx[k:].index(i) if idx[k] != i else 0
                    del vals[k], idx[k]
                    self._take(i, g)
                if free[g] > 0 and self._left:
                    heapq.heappush(heap, self._key(g) + (g,))
                continue
            pos = np.flatnonzero(~self._taken)[:r_max]
            s = sizes[pos]
            K = min(int(free[g]), len(pos))
            target = float(sc.targets_of(g))
            if cfg.subset_rule == "max_count":
                chosen = packing.max_count(s, target, K, cfg.dp_buckets)
            else:
                chosen = packing.max_f(s, K, target, lambda d, g=g: sc.score(g, d), cfg.dp_buckets)
            if not chosen:  # anti-starvation: the single best request by F
                chosen = [int(np.argmax(sc.score(g, s)))]
            for j in chosen:
                i = int(pos[j])
                self._take(i, g)
                if fast:
                    k = bisect.bisect_left(vals, float(sizes[i]))
                    k += idx[k:].index(i) if idx[k] != i else 0
                    del vals[k], idx[k]
            if free[g] > 0 and self._left:
                heapq.heappush(heap, self._key(g) + (g,))
