"""The policy contract.

A policy is pure decision logic: ``dispatch(snapshot) -> assignments``: a list of (request id, worker) pairs, an
``Assignments`` batch (two int arrays that also read as a list of pairs) or a pair of equal-length int arrays. It
may keep internal state across calls (a round-robin pointer, a seeded RNG, iteration counters) but does no I/O,
reads no clock and never changes the snapshot. The simulator and the router build policies the same way, from a
spec string such as ``brh:predictor=survival,H=40`` (see ``registry``), and both apply the assignments through
the one guard in ``core.apply``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..core.snapshot import Assignment, Assignments, Snapshot
from ..core.workload import Workload


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the deployment when it is built."""

    workers: int
    slots: int
    seed: int = 0
    #: requests a predictor may learn from (never the replayed ones); None when unavailable
    train: Workload | None = field(default=None, repr=False, compare=False)


#: the empty batch
NONE = Assignments(np.empty(0, np.int64), np.empty(0, np.int64))


@runtime_checkable
class Policy(Protocol):
    def dispatch(self, snap: Snapshot) -> list[Assignment] | Assignments: ...


class FifoPolicy:
    """Helper base: walk the pool in FIFO order and place each request with ``choose``.

    Subclasses implement ``choose(loads, counts, free, prompt) -> worker`` on scratch copies that this driver
    updates after every placement, so one dispatch can place many requests consistently.
    """

    def dispatch(self, snap: Snapshot) -> Assignments:
        n = min(snap.pool_size, snap.total_free) if snap.pool_size else 0
        if n <= 0:
            return NONE
        prompt = snap.pool_prompt[:n]
        loads = snap.loads.copy()
        counts = snap.counts.copy()
        free = snap.free.copy()
        ws = np.empty(n, dtype=np.int64)
        self.begin(snap)
        m = 0
        for s in prompt.tolist():
            g = self.choose(loads, counts, free, s)
            if g < 0:
                break
            ws[m] = g
            m += 1
            loads[g] += s
            counts[g] += 1
            free[g] -= 1
        return Assignments(snap.pool_ids[:m], ws[:m])

    def begin(self, snap: Snapshot) -> None:  # per-dispatch hook
        pass

    def choose(self, loads: np.ndarray, counts: np.ndarray, free: np.ndarray, prompt: int) -> int:
        raise NotImplementedError


class LowestKeyPolicy:
    """Helper base for FIFO rules that give each request to the free worker with the lowest key.

    ``keys(snap, workers)`` gives the keys of the workers with free slots (an index array), each a tuple ending in
    the worker index so ties go to the lowest index; ``next_key(key, prompt)`` is the key after that worker takes
    a request of ``prompt`` tokens. The driver keeps the workers with free slots in a heap: O(G + n log G) per
    call instead of an O(G) scan per request, with exactly the choices of the scan.
    """

    def dispatch(self, snap: Snapshot) -> Assignments:
        n = min(snap.pool_size, snap.total_free) if snap.pool_size else 0
        if n <= 0:
            return NONE
        self.begin(snap)
        free = snap.free.tolist()
        heap = list(self.keys(snap, np.flatnonzero(snap.free > 0)))
        heapq.heapify(heap)
        prompt = snap.pool_prompt[:n].tolist()
        ws = [0] * n
        for i, s in enumerate(prompt):
            key = heap[0]
            g = ws[i] = key[-1]
            free[g] -= 1
            if free[g]:
                heapq.heapreplace(heap, self.next_key(key, s))
            else:
                heapq.heappop(heap)
        self.placed(ws, prompt)
        return Assignments(snap.pool_ids[:n], ws)

    def begin(self, snap: Snapshot) -> None:  # per-dispatch hook
        pass

    def placed(self, workers: list[int], prompts: list[int]) -> None:  # after the placements of one call
        pass

    def keys(self, snap: Snapshot, workers: np.ndarray):
        raise NotImplementedError

    def next_key(self, key: tuple, prompt: int) -> tuple:
        raise NotImplementedError
