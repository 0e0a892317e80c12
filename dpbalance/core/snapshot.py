"""The read-only view of the cluster a policy decides from, and the assignment it returns.

A policy sees per-worker loads, counts, caps and free slots, the active requests (prompt, age,
output hint, prompt key) and the waiting pool, and nothing else. All arrays are read-only views;
policies that need scratch copies make them. The same type is built by the simulator every step
and by the router on every dispatcher tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from .state import ClusterState, Pool


class Assignment(NamedTuple):
    request_id: int
    worker: int


class Assignments:
    """A batch of assignments held as two equal-length int64 arrays, ``request_id`` and ``worker``.

    Policies that place many requests per call return this instead of a list of pairs: the guard in
    ``core.apply`` takes the arrays as they are. It still reads like a list of ``Assignment`` pairs (``len``,
    iteration, indexing, ``==`` with a list), so code written for lists keeps working.
    """

    __slots__ = ("request_id", "worker")

    def __init__(self, request_id, worker):
        self.request_id = np.asarray(request_id, dtype=np.int64)
        self.worker = np.asarray(worker, dtype=np.int64)
        if self.request_id.shape != self.worker.shape or self.request_id.ndim != 1:
            raise ValueError(f"{self.request_id.shape} request ids but {self.worker.shape} workers")

    @classmethod
    def from_lists(cls, request_ids: list[int], workers: list[int]) -> Assignments:
        """From two equal-length lists of ints (a policy's own output: no checks beyond numpy's conversion)."""
        out = object.__new__(cls)
        out.request_id = np.array(request_ids, dtype=np.int64)
        out.worker = np.array(workers, dtype=np.int64)
        return out

    def __len__(self) -> int:
        return len(self.request_id)

    def __iter__(self):
        return map(Assignment, self.request_id.tolist(), self.worker.tolist())

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Assignments(self.request_id[i], self.worker[i])
        return Assignment(int(self.request_id[i]), int(self.worker[i]))

    def __eq__(self, other) -> bool:
        try:
            return list(self) == [tuple(a) for a in other]
        except TypeError:
            return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"Assignments({list(map(tuple, self))})"


@dataclass(frozen=True)
class ActiveView:
    """Active requests, one entry per occupied slot (any order)."""

    worker: np.ndarray  # int64
    request_id: np.ndarray
    prompt: np.ndarray  # s_i
    age: np.ndarray  # tokens generated so far
    limit: np.ndarray  # output-length hint: true o_i in the simulator, max_tokens in the router (oracle only)
    key: np.ndarray  # prompt key or NO_KEY

    @property
    def load(self) -> np.ndarray:
        """Current KV tokens of each request, ``s_i + age``."""
        return self.prompt + self.age

    def __len__(self) -> int:
        return len(self.worker)


class PrefixView(Protocol):
    """What a policy may know about the ranks' prefill work and prefix caches (``Snapshot.prefix``). The simulator
    fills it from its engine model; the router from its per-rank index of the prompts it sent."""

    #: tokens per cache block
    block_size: int

    @property
    def pending_prefill(self) -> np.ndarray:
        """[G] prompt tokens each rank still has to prefill (queued and part-way requests, after cache hits)."""

    @property
    def kv_free(self) -> np.ndarray:
        """[G] KV tokens each rank could still give (cached blocks nobody uses count as free; inf: unlimited)."""

    def cached(self, request_ids: np.ndarray) -> np.ndarray:
        """[n, G] prompt tokens each rank would serve from its cache for each of these waiting requests."""


class Snapshot:
    """Immutable view handed to ``Policy.dispatch``. Cheap to build: it wraps the live arrays.

    ``prefix`` is a ``PrefixView`` when the ranks' prefill and prefix caches are known (the simulator's engine
    model, the router's prefix index), else None."""

    __slots__ = ("_state", "_pool", "step", "now", "loads", "counts", "free", "caps", "prefix", "_pool_view", "_active")

    def __init__(
        self,
        state: ClusterState,
        pool: Pool,
        now: float = 0.0,
        free: np.ndarray | None = None,
        prefix: PrefixView | None = None,
    ):
        self._state = state
        self._pool = pool
        self.step = state.clock
        self.now = now
        self.loads = state.loads_ro
        self.counts = state.counts_ro
        self.free = state.free_ro if free is None else free
        self.caps = state.caps_ro
        self.prefix = prefix
        self._pool_view = None
        self._active = None

    # -------------------------------------------------------------- workers
    @property
    def workers(self) -> int:
        return self._state.G

    @property
    def total_free(self) -> int:
        return int(self.free.sum())

    @property
    def envelope(self) -> int:
        """M = max_g L_g."""
        return int(self.loads.max())

    @property
    def margins(self) -> np.ndarray:
        """m_g = M - L_g."""
        return self.loads.max() - self.loads

    # -------------------------------------------------------------- pool
    def _pv(self):
        if self._pool_view is None:
            self._pool_view = self._pool.view()
        return self._pool_view

    @property
    def pool_size(self) -> int:
        return len(self._pool)

    @property
    def pool_ids(self) -> np.ndarray:
        return self._pv()[0]

    @property
    def pool_prompt(self) -> np.ndarray:
        return self._pv()[1]

    @property
    def pool_arrival(self) -> np.ndarray:
        return self._pv()[2]

    @property
    def pool_key(self) -> np.ndarray:
        return self._pv()[3]

    # -------------------------------------------------------------- active requests
    @property
    def active(self) -> ActiveView:
        if self._active is None:
            st = self._state
            occ = np.flatnonzero(st.slot_rid >= 0)
            self._active = ActiveView(
                worker=occ // st.bmax,
                request_id=st.slot_rid[occ],
                prompt=st.slot_prompt[occ],
                age=st.clock - st.slot_start[occ],
                limit=st.slot_limit[occ],
                key=st.slot_key[occ],
            )
        return self._active
