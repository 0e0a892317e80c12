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

from ...core.snapshot import Assignments, Snapshot
from ..base import NONE, Policy
from . import packing
from .config import BR0Config
from .scorers import Round, Scorer


class Batch:
    """The scratch of one dispatch: the candidates (the first ``window`` waiting requests), what is taken, the free
    slots left, the scorer's round and the assignments made so far. Passed to every stage explicitly."""

    __slots__ = ("ids", "sizes", "arrival", "free", "sc", "taken", "left", "out_r", "out_g")

    def __init__(self, ids: np.ndarray, sizes: np.ndarray, arrival: np.ndarray, free: np.ndarray, sc: Round):
        self.ids = ids  # request ids of the candidates, oldest first
        self.sizes = sizes  # their prompt tokens (float64)
        self.arrival = arrival
        self.free = free  # free slots per worker, updated as requests are placed
        self.sc = sc
        self.taken = np.zeros(len(ids), dtype=bool)
        self.left = len(ids)  # candidates not taken and not held back
        self.out_r: list[int] = []
        self.out_g: list[int] = []

    def room(self) -> bool:
        return bool(self.left) and bool(self.free.sum())


class BalanceRoute(Policy):
    def __init__(self, cfg: BR0Config, workers: int, scorer: Scorer):
        self.cfg = cfg.resolved()
        self.G = workers
        self.scorer = scorer
        self._newest = -np.inf  # latest arrival time among the requests this policy admitted
        self._reserved: tuple[int, int] | None = None  # (overdue request id, the worker marked for it)

    # ------------------------------------------------------------------ helpers
    def _best_worker(self, b: Batch, s: float, room: np.ndarray) -> int:
        """The worker with room and the highest F for s; ties go to the lowest load."""
        f = np.where(room > 0, b.sc.scores(s), -np.inf)
        best = f.max()
        cand = np.flatnonzero(f >= best - 1e-9 * max(1.0, abs(best)))
        if len(cand) == 1:
            return int(cand[0])
        return int(cand[np.argmin(b.sc.load[cand])])

    def _take(self, b: Batch, i: int, g: int) -> None:
        b.taken[i] = True
        b.out_r.append(int(b.ids[i]))
        b.out_g.append(g)
        b.free[g] -= 1
        b.left -= 1
        b.sc.add(g, b.sizes[i])
        a = float(b.arrival[i])
        if a > self._newest:
            self._newest = a

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, snap: Snapshot) -> Assignments:
        n_pool = snap.pool_size
        if n_pool == 0:
            self._reserved = None
        if snap.total_free == 0 or n_pool == 0:
            return NONE
        n = min(n_pool, self.cfg.window)
        b = Batch(
            ids=snap.pool_ids[:n],
            sizes=snap.pool_prompt[:n].astype(np.float64),
            arrival=snap.pool_arrival[:n],
            free=snap.free.astype(np.int64),
            sc=self.scorer.prepare(snap),
        )
        self._overdue(snap, b)
        if b.room():
            self._place(snap, b)
        if b.room():
            self._pack(b)
        return Assignments.from_lists(b.out_r, b.out_g) if b.out_r else NONE

    def _overdue(self, snap: Snapshot, b: Batch) -> None:
        """Step 0: admit the overdue request where it fits, or keep it waiting for its reserved worker."""
        W = self.cfg.max_wait_s
        if isinstance(W, str):
            return None
        res = self._reserved
        if res is not None and (len(b.ids) == 0 or int(b.ids[0]) != res[0]):
            res = self._reserved = None  # it left the pool (admitted, or gone in the router)
        if res is None:
            if self._newest - float(b.arrival[0]) <= W:
                return
            g = int(np.argmin(np.where(snap.caps > 0, b.sc.load, np.inf)))
            res = self._reserved = (int(b.ids[0]), g)
        g = res[1]
        fits = b.sizes[0] <= b.sc.target(g)
        late = snap.now - float(b.arrival[0]) > 2 * W  # waited twice the bound: the first free slot
        if b.free[g] > 0 and (fits or late):
            self._take(b, 0, g)
            self._reserved = None
        elif late and b.free.sum():  # its worker has no slot yet: the first free slot anywhere
            self._take(b, 0, self._best_worker(b, b.sizes[0], b.free))
            self._reserved = None
        else:
            b.taken[0] = True  # it waits for its worker; the others are placed as usual
            b.left -= 1

    def _plentiful(self, b: Batch) -> bool:
        """The first stage runs while slots are plentiful (see ``s_greedy``)."""
        tf = int(b.free.sum())
        return tf > 0 and (b.left <= tf if self.cfg.s_greedy == "fit" else tf > self.cfg.s_greedy)

    def _place(self, snap: Snapshot, b: Batch) -> None:
        cfg, free = self.cfg, b.free
        total_free = int(free.sum())
        if cfg.s_greedy == "fit":
            if b.left > total_free:
                return
        elif total_free <= cfg.s_greedy:
            return
        if cfg.hold_s and b.left < self.G and snap.now - float(b.arrival[~b.taken][0]) < cfg.hold_s:
            b.left = 0  # coordinated waiting: gather a batch of at least one request per worker, briefly
            return
        if cfg.placement == "free":
            while b.left and self._plentiful(b):
                ws = np.flatnonzero(free == free.max())
                g = int(ws[0]) if len(ws) == 1 else int(ws[np.argmin(b.sc.load[ws])])
                self._take(b, int(np.argmax(np.where(b.taken, -np.inf, b.sc.score(g, b.sizes)))), g)
            return
        order = np.argsort(-b.sizes, kind="stable")  # largest first
        # a worker takes at most its share of this dispatch's requests (in proportion to its free slots, or
        # evenly), so a batch spreads over the workers instead of filling the lightest ones' slots
        if cfg.quota == "even":
            quota = np.where(free > 0, -(-b.left // max(1, int((free > 0).sum()))), 0)
        elif cfg.quota == "free":
            quota = np.ceil(free * (b.left / total_free)).astype(np.int64)
        else:
            quota = free.copy()
        if b.sc.lightest_is_best:
            self._lpt(b, order, np.minimum(free, quota))
            return
        for i in order.tolist():
            if b.taken[i]:
                continue
            if not (b.left and self._plentiful(b)):
                break
            room = np.minimum(free, quota)
            g = self._best_worker(b, b.sizes[i], room if (room > 0).any() else free)
            quota[g] -= 1
            self._take(b, i, g)

    def _lpt(self, b: Batch, order: np.ndarray, room: np.ndarray) -> None:
        """Load placement when the best worker for one request is always the lightest with room (BR-0's score: if
        any worker's margin holds the request, the lightest does; if none does, the lightest overflows least): the
        placement is largest-first onto the lightest worker, a heap of loads, O(log G) per request."""
        free, sizes, taken = b.free, b.sizes, b.taken
        if not (room > 0).any():
            room = free.copy()
        room = room.tolist()
        heap = [(float(b.sc.load[g]), g) for g in range(len(room)) if room[g] > 0]
        heapq.heapify(heap)
        picked_i, picked_g = [], []
        left = b.left
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
        b.left = left
        b.sc.add_many(ws, sizes[idx])
        b.out_r.extend(b.ids[idx].tolist())
        b.out_g.extend(picked_g)
        self._newest = max(self._newest, float(b.arrival[idx].max()))

    def _key(self, b: Batch, g: int):
        L = b.sc.load
        if self.cfg.worker_key == "load":
            return (L[g], g)
        return (-int(b.free[g]), L[g], g)  # most free slots, then largest margin (= lowest load)

    def _pack(self, b: Batch) -> None:
        """Step 2: workers with free slots in key order, each taking the subset of the candidates its target asks
        for; a worker with slots left goes back in the queue."""
        r_max = self.cfg.r_max or len(b.sizes)
        # when a worker's best single request is the largest within its margin (BR-0, β ≥ 1), the candidates are
        # kept sorted and a worker bisects them instead of scanning the pool
        fast = b.sc.margin_target and self.cfg.subset_rule == "max_count" and r_max >= len(b.sizes)
        srt = _SortedCandidates(b) if fast else None
        heap = [self._key(b, g) + (g,) for g in np.flatnonzero(b.free > 0).tolist()]
        heapq.heapify(heap)
        while heap and b.left:
            g = heapq.heappop(heap)[-1]
            if srt is not None and b.free[g] == 1:
                self._take(b, srt.pop_within(float(b.sc.target(g))), g)
                continue
            if srt is not None and len(srt.vals) * min(int(b.free[g]), len(srt.vals)) > packing.EXACT_WORK:
                # many candidates, several slots: the greedy max-count on the sorted candidates as they stand
                picked = packing.greedy_sorted(srt.vals, srt.idx, float(b.sc.target(g)), int(b.free[g]))
                for i in picked or [srt.idx[0]]:
                    srt.remove(i)
                    self._take(b, i, g)
            else:
                for i in self._subset(b, g, r_max):
                    self._take(b, i, g)
                    if srt is not None:
                        srt.remove(i)
            if b.free[g] > 0 and b.left:
                heapq.heappush(heap, self._key(b, g) + (g,))

    def _subset(self, b: Batch, g: int, r_max: int) -> list[int]:
        """The candidates worker g takes by the subset rule (indices into the batch), never none."""
        pos = np.flatnonzero(~b.taken)[:r_max]
        s = b.sizes[pos]
        K = min(int(b.free[g]), len(pos))
        target = float(b.sc.target(g))
        if self.cfg.subset_rule == "max_count":
            chosen = packing.max_count(s, target, K, self.cfg.dp_buckets)
        else:
            chosen = packing.max_f(s, K, target, lambda d: b.sc.score(g, d), self.cfg.dp_buckets)
        if not chosen:  # anti-starvation: the single best request by F
            chosen = [int(np.argmax(b.sc.score(g, s)))]
        return [int(pos[j]) for j in chosen]


class _SortedCandidates:
    """The untaken candidates sorted by size (ties in candidate order), as two parallel lists."""

    def __init__(self, b: Batch):
        avail = np.flatnonzero(~b.taken)
        avail = avail[np.argsort(b.sizes[avail], kind="stable")]
        self.sizes = b.sizes
        self.vals, self.idx = b.sizes[avail].tolist(), avail.tolist()

    def pop_within(self, target: float) -> int:
        """Remove and return the largest candidate within ``target`` (the oldest of equal sizes), else the
        smallest (the least overflow)."""
        vals = self.vals
        k = bisect.bisect_right(vals, target) - 1
        k = 0 if k < 0 else bisect.bisect_left(vals, vals[k])
        i = self.idx[k]
        del vals[k], self.idx[k]
        return i

    def remove(self, i: int) -> None:
        k = bisect.bisect_left(self.vals, float(self.sizes[i]))
        k += self.idx[k:].index(i) if self.idx[k] != i else 0
        del self.vals[k], self.idx[k]
