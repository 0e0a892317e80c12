"""The policy contract.

A policy is pure decision logic: ``dispatch(snapshot) -> assignments``, a list of (request id, worker) pairs (or
a pair of equal-length int arrays). It may keep internal state across calls (a round-robin pointer, a seeded
RNG, iteration counters) but does no I/O, reads no clock and never changes the snapshot. The simulator and the
router build policies the same way, from a spec string such as ``brh:predictor=survival,H=40`` (see
``registry``), and both apply the assignments through the one guard in ``core.apply``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..core.snapshot import Assignment, Snapshot
from ..core.workload import Workload


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the deployment when it is built."""

    workers: int
    slots: int
    seed: int = 0
    #: requests a predictor may learn from (never the replayed ones); None when unavailable
    train: Workload | None = field(default=None, repr=False, compare=False)


@runtime_checkable
class Policy(Protocol):
    def dispatch(self, snap: Snapshot) -> list[Assignment]: ...


class FifoPolicy:
    """Helper base: walk the pool in FIFO order and place each request with ``choose``.

    Subclasses implement ``choose(loads, counts, free, prompt) -> worker`` on scratch copies that this driver
    updates after every placement, so one dispatch can place many requests consistently.
    """

    def dispatch(self, snap: Snapshot) -> list[Assignment]:
        n_free = snap.total_free
        if n_free == 0 or snap.pool_size == 0:
            return []
        ids = snap.pool_ids
        prompt = snap.pool_prompt
        loads = snap.loads.copy()
        counts = snap.counts.copy()
        free = snap.free.copy()
        out: list[Assignment] = []
        self.begin(snap)
        for i in range(min(n_free, len(ids))):
            g = self.choose(loads, counts, free, int(prompt[i]))
            if g < 0:
                break
            out.append(Assignment(int(ids[i]), g))
            loads[g] += prompt[i]
            counts[g] += 1
            free[g] -= 1
        return out

    def begin(self, snap: Snapshot) -> None:  # per-dispatch hook
        pass

    def choose(self, loads: np.ndarray, counts: np.ndarray, free: np.ndarray, prompt: int) -> int:
        raise NotImplementedError
