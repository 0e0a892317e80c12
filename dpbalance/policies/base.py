"""The policy contract: what a routing policy is given, what it returns, and when it is called.

A policy is pure decision logic. It is built once per run from its typed config and a ``PolicyContext``
(``factory(config, ctx)``, the one factory signature of every policy), then asked ``dispatch(snapshot)``
over and over. It may keep state across calls (a round-robin pointer, a seeded RNG, counters), but it does no
I/O, reads no clock other than ``snapshot.now`` and never changes the snapshot. The simulator and the router
run the same policy object; the two calling contexts differ only in what the snapshot holds:

=========================  ==========================================  ===============================================
                           simulator (``dpbalance simulate``)           router (``dpbalance serve``)
=========================  ==========================================  ===============================================
when                       once per engine step in which requests       on every arrival, every finish and every tick
                           wait, before the step                        (``--tick-ms``), while requests wait and a
                                                                        slot is free
``snap.now``               simulated seconds since the first arrival    ``time.monotonic()`` seconds (wall time)
``snap.pool_*``            every waiting request (in saturated mode:    the first ``--dispatch-batch`` waiting
                           the ``--visible`` oldest)                    requests; bursts are placed in back-to-back
                                                                        calls
``snap.active.limit``      the true output length                       the request's ``max_tokens``
``snap.prefix``            the ranks' prefix caches and pending          the router's per-rank index of what it sent
                           prefill (engine model on), else empty        (prefix routing on), else empty
an exception or a bad      stops the run with an error naming the      counted (``dpbalance_policy_errors_total``)
assignment                 policy and the step                          and that batch goes to ``--fallback-policy``
=========================  ==========================================  ===============================================

``dispatch`` returns an ``Assignments`` batch (request ids and workers, two int arrays): each request must be
waiting in the pool, none may appear twice, and a worker may be given at most its free slots. ``NONE`` is the
empty batch. The guard in ``core.apply`` checks the whole batch before anything changes.

Helper bases for the common shapes: ``FifoPolicy`` (walk the pool oldest first, choose a worker per request) and
``LowestKeyPolicy`` (oldest first onto the free worker with the lowest key, kept in a heap).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..core.costs import StepCosts
from ..core.snapshot import Assignments, Snapshot
from ..core.workload import Workload


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the deployment when it is built."""

    workers: int
    slots: int
    seed: int = 0
    #: requests a predictor may learn from (never the replayed ones); None when unavailable
    train: Workload | None = field(default=None, repr=False, compare=False)
    #: the marginal prices of a step on these ranks (the simulator's ``--step-time``, the router's ``serve
    #: --step-time``); None: not known, a policy that weighs work uses ``core.costs.DEFAULT_COSTS``
    costs: StepCosts | None = None


@dataclass(frozen=True)
class NoOptions:
    """The config of a policy that has no options (``name`` is its whole spec)."""


#: the empty batch
NONE = Assignments(np.empty(0, np.int64), np.empty(0, np.int64))


def assign(request_ids: Iterable[int] | np.ndarray, workers: Iterable[int] | np.ndarray) -> Assignments:
    """An ``Assignments`` batch from two equal-length sequences (lists or arrays)."""
    return Assignments(np.asarray(request_ids, dtype=np.int64), np.asarray(workers, dtype=np.int64))


class Policy(ABC):
    """A routing policy (see the module docstring for when and how it is called)."""

    #: True when the system this rule stands for sends every request to a rank at once and lets the rank queue
    #: it (the Rust cache-aware routers, inference gateways, the engines' own balancers); the simulator then
    #: models those queues (``SimConfig.front``). dpbalance's own rules hold requests until a slot is free.
    forwards: bool = False

    @abstractmethod
    def dispatch(self, snap: Snapshot) -> Assignments:
        """Choose which waiting requests go to which worker now.

        ``snap`` is read-only and valid only during this call (copy what you keep). Return ``NONE`` to place
        nothing; requests not placed stay waiting and are offered again at the next call."""


class FifoPolicy(Policy):
    """Helper base: walk the pool in FIFO order and place each request with ``choose``.

    Subclasses implement ``choose(loads, counts, free, prompt) -> worker`` on scratch copies that this driver
    updates after every placement, so one dispatch can place many requests consistently; a negative worker
    stops the walk.
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

    def begin(self, snap: Snapshot) -> None:
        """Called at the start of every dispatch with requests to place (refresh per-call state here)."""

    @abstractmethod
    def choose(self, loads: np.ndarray, counts: np.ndarray, free: np.ndarray, prompt: int) -> int:
        """The worker for the next request of ``prompt`` tokens (only workers with ``free > 0`` are valid)."""


class LowestKeyPolicy(Policy):
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

    def begin(self, snap: Snapshot) -> None:
        """Called at the start of every dispatch with requests to place."""

    def placed(self, workers: list[int], prompts: list[int]) -> None:
        """Called after the placements of one dispatch (update per-policy state here)."""

    @abstractmethod
    def keys(self, snap: Snapshot, workers: np.ndarray):
        """One key tuple per worker in ``workers`` (ending in the worker index)."""

    @abstractmethod
    def next_key(self, key: tuple, prompt: int) -> tuple:
        """The key of that worker once it has taken a request of ``prompt`` tokens."""
