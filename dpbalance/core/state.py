"""Live cluster state (per-worker loads, slots, active table) and the waiting pool.

Both the simulator and the online router keep exactly these structures and hand policies a
``Snapshot`` of them. Everything is a numpy array updated in place, so a decode step costs O(G) plus
O(1) per admission and finish, never O(active requests).

Load accounting: a request of prompt ``s`` that has generated ``age`` tokens contributes
``s + age`` KV tokens to its worker. The state has a step ``clock``; a request admitted at clock ``c``
has ``age = clock - start`` with ``start = c``. ``advance()`` is one decode step for everybody:
``clock += 1`` and ``loads += counts``. The router, which learns token counts from SSE streams, sets
``start = clock - generated`` instead.
"""

from __future__ import annotations

import numpy as np

from .workload import NO_KEY


def _ro(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class StateError(RuntimeError):
    """An assignment that breaks the model's rules (full worker, unknown or duplicate request)."""


class ClusterState:
    """G workers with slot caps, their token loads, and a fixed-size table of active requests.

    Slot table: worker ``g`` owns slots ``g*B_max … (g+1)*B_max - 1``. Free slot indices per worker are
    kept in stacks so admission and release are O(1).
    """

    def __init__(self, workers: int, slots: int | np.ndarray):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        caps = np.broadcast_to(np.asarray(slots, dtype=np.int64), (workers,)).copy()
        if caps.min() < 1:
            raise ValueError("every worker needs at least one slot")
        self.G = int(workers)
        self.caps = caps
        self.bmax = int(caps.max())
        self.loads = np.zeros(workers, dtype=np.int64)
        self.counts = np.zeros(workers, dtype=np.int64)
        self.free = caps.copy()
        n = self.G * self.bmax
        self.slot_rid = np.full(n, -1, dtype=np.int64)
        self.slot_prompt = np.zeros(n, dtype=np.int64)
        self.slot_start = np.zeros(n, dtype=np.int64)
        self.slot_limit = np.zeros(n, dtype=np.int64)  # output length hint (oracle / max_tokens)
        self.slot_key = np.full(n, NO_KEY, dtype=np.int64)
        self.clock = 0
        # stacks of unoccupied slot indices; pop() yields the worker's lowest index first
        self._free_slots = [list(range((g + 1) * self.bmax - 1, g * self.bmax - 1, -1)) for g in range(workers)]
        # read-only views handed to policies; they track in-place updates for free
        self.loads_ro = _ro(self.loads)
        self.counts_ro = _ro(self.counts)
        self.free_ro = _ro(self.free)
        self.caps_ro = _ro(self.caps)

    @property
    def active(self) -> int:
        return int(self.counts.sum())

    def admit(self, rid: int, worker: int, prompt: int, limit: int = 0, key: int = NO_KEY) -> int:
        """Place request ``rid`` on ``worker``; returns its slot index. Raises on a full worker."""
        if self.free[worker] <= 0:
            raise StateError(f"worker {worker} has no free slot (cap {int(self.caps[worker])}) for request {rid}")
        slot = self._free_slots[worker].pop()
        self.slot_rid[slot] = rid
        self.slot_prompt[slot] = prompt
        self.slot_start[slot] = self.clock
        self.slot_limit[slot] = limit
        self.slot_key[slot] = key
        self.loads[worker] += prompt
        self.counts[worker] += 1
        self.free[worker] -= 1
        return slot

    def admit_many(
        self, rids: np.ndarray, workers: np.ndarray, prompts: np.ndarray, limits: np.ndarray, keys: np.ndarray
    ) -> np.ndarray:
        """Admit a validated batch (see ``core.apply``); returns the slot index of each request.

        The caller has checked that every worker has room for what it is given."""
        stacks = self._free_slots
        slots = np.fromiter((stacks[g].pop() for g in workers.tolist()), dtype=np.int64, count=len(workers))
        self.slot_rid[slots] = rids
        self.slot_prompt[slots] = prompts
        self.slot_start[slots] = self.clock
        self.slot_limit[slots] = limits
        self.slot_key[slots] = keys
        if len(workers) == 1:
            g = int(workers[0])
            self.loads[g] += int(prompts[0])
            self.counts[g] += 1
            self.free[g] -= 1
        else:
            G = self.G
            self.loads += np.bincount(workers, weights=prompts, minlength=G).astype(np.int64)  # exact below 2**53
            cnt = np.bincount(workers, minlength=G)
            self.counts += cnt
            self.free -= cnt
        return slots

    def release(self, slot: int) -> int:
        """Remove the request in ``slot``; returns the load it carried (``s + age``)."""
        worker = slot // self.bmax
        load = int(self.slot_prompt[slot] + (self.clock - self.slot_start[slot]))
        self.loads[worker] -= load
        self.counts[worker] -= 1
        self.free[worker] = max(0, self.caps[worker] - self.counts[worker])
        self.slot_rid[slot] = -1
        self._free_slots[worker].append(slot)
        return load

    def release_many(self, slots: np.ndarray) -> None:
        """Remove the requests in ``slots`` (distinct, occupied), exactly as ``release`` one by one in this order."""
        workers = slots // self.bmax
        load = self.slot_prompt[slots] + (self.clock - self.slot_start[slots])
        if len(slots) == 1:
            g = int(workers[0])
            self.loads[g] -= int(load[0])
            self.counts[g] -= 1
        else:
            G = self.G
            self.loads -= np.bincount(workers, weights=load, minlength=G).astype(np.int64)  # exact below 2**53
            self.counts -= np.bincount(workers, minlength=G)
        np.maximum(self.caps - self.counts, 0, out=self.free)
        self.slot_rid[slots] = -1
        stacks = self._free_slots  # a Python list per worker beats array stacks at the batch sizes seen here
        for s, g in zip(slots.tolist(), workers.tolist()):
            stacks[g].append(s)

    def add_tokens(self, slot: int, n: int = 1) -> None:
        """Router path: ``n`` tokens observed for one request (its age and its worker's load grow)."""
        self.slot_start[slot] -= n
        self.loads[slot // self.bmax] += n

    def advance(self) -> None:
        """One decode step for every active request."""
        self.clock += 1
        self.loads += self.counts

    def slot_age(self, slot: int) -> int:
        return int(self.clock - self.slot_start[slot])

    def set_cap(self, worker: int, cap: int) -> None:
        """Change a worker's slot cap at run time (the router drains an unhealthy rank with cap 0).

        Requests already placed stay; the worker simply takes no new ones until it is below its cap."""
        if not 0 <= cap <= self.bmax:
            raise ValueError(f"cap must be in [0, {self.bmax}]")
        self.caps[worker] = cap
        self.free[worker] = max(0, cap - self.counts[worker])


class Pool:
    """Waiting requests in id order (= arrival order), stored as array columns ``[head:tail]``.

    Policies read array views; removals of arbitrary members compact only the prefix up to the
    last removed position, which is cheap because policies take from the front of the pool.
    """

    __slots__ = ("ids", "prompt", "arrival", "key", "head", "tail")

    def __init__(self, capacity: int = 1024):
        capacity = max(16, int(capacity))
        self.ids = np.empty(capacity, dtype=np.int64)
        self.prompt = np.empty(capacity, dtype=np.int64)
        self.arrival = np.empty(capacity, dtype=np.float64)
        self.key = np.empty(capacity, dtype=np.int64)
        self.head = 0
        self.tail = 0

    def __len__(self) -> int:
        return self.tail - self.head

    def _make_room(self, n: int) -> None:
        cap = len(self.ids)
        if self.tail + n <= cap:
            return
        size = self.tail - self.head
        if size + n <= cap // 2:
            new_cap = cap
        else:
            new_cap = max(2 * cap, size + n + 16)
        for name in ("ids", "prompt", "arrival", "key"):
            old = getattr(self, name)
            new = np.empty(new_cap, dtype=old.dtype) if new_cap != cap else old
            new[:size] = old[self.head : self.tail]
            setattr(self, name, new)
        self.head, self.tail = 0, size

    def push(self, rid: int, prompt: int, arrival: float, key: int = NO_KEY) -> None:
        """Append one request; ids must arrive in increasing order (use ``insert`` otherwise)."""
        if self.tail > self.head and rid <= self.ids[self.tail - 1]:
            self.insert(rid, prompt, arrival, key)
            return
        self._make_room(1)
        t = self.tail
        self.ids[t] = rid
        self.prompt[t] = prompt
        self.arrival[t] = arrival
        self.key[t] = key
        self.tail = t + 1

    def extend(self, ids, prompt, arrival, key) -> None:
        """Append a block of requests whose ids are increasing and above every pooled id."""
        n = len(ids)
        if n == 0:
            return
        if self.tail > self.head and ids[0] <= self.ids[self.tail - 1]:
            for i in range(n):
                self.push(int(ids[i]), int(prompt[i]), float(arrival[i]), int(key[i]))
            return
        self._make_room(n)
        t = self.tail
        self.ids[t : t + n] = ids
        self.prompt[t : t + n] = prompt
        self.arrival[t : t + n] = arrival
        self.key[t : t + n] = key
        self.tail = t + n

    def insert(self, rid: int, prompt: int, arrival: float, key: int = NO_KEY) -> None:
        """Put a request back in id order (router re-queue after a rank failure)."""
        self._make_room(1)
        pos = self.head + int(np.searchsorted(self.ids[self.head : self.tail], rid))
        if pos < self.tail and self.ids[pos] == rid:
            raise StateError(f"request {rid} is already in the pool")
        for name, value in (("ids", rid), ("prompt", prompt), ("arrival", arrival), ("key", key)):
            arr = getattr(self, name)
            arr[pos + 1 : self.tail + 1] = arr[pos : self.tail].copy()
            arr[pos] = value
        self.tail += 1

    def positions(self, rids) -> np.ndarray:
        """Pool-relative positions of ``rids``; raises StateError if any is not waiting."""
        view = self.ids[self.head : self.tail]
        rids = np.asarray(rids, dtype=np.int64)
        pos = np.searchsorted(view, rids)
        bad = view.take(pos, mode="clip") != rids if len(view) else np.ones(len(rids), bool)
        if bad.any():
            missing = rids[bad][:5].tolist()
            raise StateError(f"request(s) {missing} are not in the waiting pool")
        return pos

    def remove_positions(self, pos: np.ndarray) -> None:
        """Remove members at pool-relative sorted-unique positions ``pos``."""
        k = len(pos)
        if k == 0:
            return
        last = int(pos[-1])
        h = self.head
        if k == last + 1:  # removing a pure prefix
            self.head = h + k
            return
        keep = np.ones(last + 1, dtype=bool)
        keep[pos] = False
        src = h + np.flatnonzero(keep)
        dst0 = h + k
        for arr in (self.ids, self.prompt, self.arrival, self.key):
            arr[dst0 : h + last + 1] = arr[src]
        self.head = dst0

    def remove(self, rids) -> np.ndarray:
        pos = np.unique(self.positions(rids))
        if len(pos) != len(rids):
            raise StateError("duplicate request ids in one removal")
        self.remove_positions(pos)
        return pos

    def view(self):
        """(ids, prompt, arrival, key) read-only array views of the waiting requests."""
        h, t = self.head, self.tail
        return _ro(self.ids[h:t]), _ro(self.prompt[h:t]), _ro(self.arrival[h:t]), _ro(self.key[h:t])
