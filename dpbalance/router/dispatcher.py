"""The pool of waiting requests, the live cluster state, and the policy calls that admit requests to ranks.

Every admission goes through ``core.apply.apply_assignments`` (the same guard the simulator uses). A policy
that raises, or returns an assignment the guard refuses, never stops the dispatcher: the error is counted in
``dpbalance_policy_errors_total{kind}``, logged once per kind, and that batch is placed by the fallback rule
(``jsq_tokens`` by default) so traffic keeps flowing.

Waiting requests fail fast: after ``queue_timeout_s`` with no rank in rotation (503), or after ``max_wait_s``
without a slot (504). A non-stream request's load is estimated while its upstream call runs (its rank's
measured tokens per second per streaming sequence), since no tokens are visible until the answer arrives.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass

import numpy as np

from ..core.apply import EMPTY, apply_assignments
from ..core.snapshot import Snapshot
from ..core.state import ClusterState, Pool, StateError
from ..core.workload import NO_KEY
from .outcomes import Reason

log = logging.getLogger("dpbalance.router")
_DEFAULT_RATE = 20.0  # tokens/s per sequence assumed for non-stream estimates until streams are measured


class QueueTimeout(Exception):
    """A waiting request gave up: ``reason`` is no_rank_in_rotation (503) or max_wait (504)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class Ticket:
    """One client request inside the router, from validation to its single outcome."""

    rid: int
    body: dict
    chat: bool
    stream: bool
    prompt_tokens: int
    limit: int  # output budget (max_tokens) as the policy's length hint
    arrival: float
    key: int = NO_KEY
    assigned: asyncio.Future | None = None
    waiting: bool = False  # in the pool
    slot: int = -1  # held slot (released exactly once)
    rank: int = -1
    attempts: int = 0
    tokens: int = 0  # tokens relayed so far
    est_tokens: int = 0  # non-stream: tokens estimated into the load so far
    started: float = 0.0  # when the current upstream call began
    first_token: float = 0.0
    last_io: float = 0.0  # loop time of the last upstream read (stall watchdog)
    stalled: bool = False
    outcome: str | None = None
    blocks: list[int] | None = None  # the prompt's block hashes, for the recording (when its token ids are known)
    want_usage: bool = False  # the client asked stream_options.include_usage
    want_continuous: bool = False  # ... and continuous_usage_stats (usage in every event)
    resp: object = None  # the client's stream response once opened (aiohttp StreamResponse)
    clock0: int = -1  # decision-only picker: its rank's step count when it was placed (-1: not yet)


class PoolPrefix:
    """The first ``k`` waiting requests, as the snapshot's pool view (bounds one policy call)."""

    __slots__ = ("pool", "k")

    def __init__(self, pool: Pool, k: int):
        self.pool, self.k = pool, k

    def __len__(self) -> int:
        return min(self.k, len(self.pool))

    def view(self):
        return tuple(a[: self.k] for a in self.pool.view())


class Dispatcher:
    def __init__(self, G: int, slots: int, policy, fallback, metrics, cfg, label: str = "the policy"):
        self.G, self.slots, self.cfg = G, slots, cfg
        self.label = label  # the policy's spec, as its errors are logged
        self.state = ClusterState(G, slots)
        self.pool = Pool()
        self.policy, self.fallback, self.metrics = policy, fallback, metrics
        self.prefix = None  # a PrefixIndex when policies should see the ranks' estimated caches
        self.tickets: dict[int, Ticket] = {}
        self.in_rotation = np.ones(G, dtype=bool)
        self.last_in_rotation = time.monotonic()
        self.nonstream: dict[int, Ticket] = {}  # slot -> running non-stream ticket
        self.pending: dict[int, int] = {}  # slot -> relayed tokens not yet in the state arrays (see flush)
        self.rate = np.full(G, _DEFAULT_RATE)
        self.measure_rate = True  # rates from the relayed streams; off when a front door sets ``rate`` itself
        self._rate_mark = (time.monotonic(), metrics.tokens.copy())
        self._next_id = 0
        self._wake = asyncio.Event()
        self._logged: set[str] = set()
        self._last_housekeeping = 0.0
        self.dispatch_us: collections.deque = collections.deque(maxlen=100_000)
        self.dispatch_cpu_us: collections.deque = collections.deque(maxlen=100_000)

    # ------------------------------------------------------------------ requests in and out
    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def submit(self, t: Ticket) -> None:
        t.assigned = asyncio.get_running_loop().create_future()
        self.tickets[t.rid] = t
        self.pool.push(t.rid, t.prompt_tokens, t.arrival, t.key)
        t.waiting = True
        self.wake()

    def requeue(self, t: Ticket) -> None:
        t.assigned = asyncio.get_running_loop().create_future()
        self.tickets[t.rid] = t
        self.pool.insert(t.rid, t.prompt_tokens, t.arrival, t.key)
        t.waiting = True
        self.wake()

    def release(self, t: Ticket) -> None:
        """Free the ticket's slot (idempotent)."""
        if t.slot >= 0:
            self.nonstream.pop(t.slot, None)
            n = self.pending.pop(t.slot, 0)
            if n:
                self.state.add_tokens(t.slot, n)
                self.metrics.tokens[t.rank] += n
            self.state.release(t.slot)
            t.slot = -1
            self.wake()

    def drop(self, t: Ticket) -> None:
        """Forget the ticket: out of the pool if it waits there (idempotent)."""
        if t.waiting:
            try:
                self.pool.remove([t.rid])
            except StateError:  # pragma: no cover - waiting means pooled
                pass
            t.waiting = False
        self.tickets.pop(t.rid, None)

    def add_tokens(self, t: Ticket, n: int) -> None:
        """Relayed tokens (the per-token hot path: a dict update; ``flush`` moves them into the arrays)."""
        p = self.pending
        p[t.slot] = p.get(t.slot, 0) + n
        if t.tokens == 0 and self.prefix is not None:
            self.prefix.first_token(t.rid)  # its prefill is done
        t.tokens += n

    def flush(self) -> None:
        """Put the relayed tokens into the loads and counters (before every policy call and every scrape)."""
        p = self.pending
        if not p:
            return
        slots = np.fromiter(p.keys(), dtype=np.int64, count=len(p))
        ns = np.fromiter(p.values(), dtype=np.int64, count=len(p))
        p.clear()
        st = self.state
        st.slot_start[slots] -= ns
        per_rank = np.bincount(slots // st.bmax, weights=ns, minlength=self.G).astype(np.int64)
        st.loads += per_rank
        self.metrics.tokens += per_rank

    def start_nonstream(self, t: Ticket) -> None:
        t.started = time.monotonic()
        t.est_tokens = 0
        self.nonstream[t.slot] = t

    def set_rotation(self, g: int, ok: bool) -> None:
        self.in_rotation[g] = ok
        self.state.set_cap(g, self.slots if ok else 0)
        if ok:
            self.last_in_rotation = time.monotonic()
        self.wake()

    @property
    def active(self) -> int:
        return int(self.state.counts.sum())

    # ------------------------------------------------------------------ policy calls
    def wake(self) -> None:
        self._wake.set()

    def _limits(self, rids: np.ndarray) -> np.ndarray:
        return np.fromiter((self.tickets[int(r)].limit for r in rids), dtype=np.int64, count=len(rids))

    def _policy_error(self, exc: BaseException, who: str) -> None:
        kind = type(exc).__name__
        self.metrics.policy_errors.labels(kind).inc()
        if (who, kind) not in self._logged:
            self._logged.add((who, kind))
            log.error(
                "%s raised %s: %s (counted; further %s errors are not logged)", who, kind, exc, kind, exc_info=exc
            )

    def _place(self, snap: Snapshot):
        try:
            return apply_assignments(self.state, self.pool, self.policy.dispatch(snap), limit=self._limits)
        except Exception as exc:  # a policy bug must never stop the dispatcher
            self._policy_error(exc, f"policy {self.label}")
        try:
            return apply_assignments(self.state, self.pool, self.fallback.dispatch(snap), limit=self._limits)
        except Exception as exc:  # pragma: no cover - the built-in fallback is tested on its own
            self._policy_error(exc, "fallback policy")
            return EMPTY

    def dispatch_once(self) -> int:
        if len(self.pool) == 0 or self.state.free.sum() == 0:
            return 0
        self.flush()
        snap = Snapshot(
            self.state, PoolPrefix(self.pool, self.cfg.dispatch_batch), time.monotonic(), prefix=self.prefix
        )
        c0 = time.thread_time_ns()
        t0 = time.perf_counter()
        adm = self._place(snap)
        dt = time.perf_counter() - t0
        self.metrics.dispatch.observe(dt)
        self.dispatch_us.append(dt * 1e6)
        self.dispatch_cpu_us.append((time.thread_time_ns() - c0) / 1e3)
        now = time.monotonic()
        for rid, g, slot in zip(adm.request_id.tolist(), adm.worker.tolist(), adm.slot.tolist()):
            t = self.tickets[rid]
            t.waiting, t.slot, t.rank = False, slot, g
            if self.prefix is not None:
                self.prefix.sent(rid, g)
            self.metrics.queue_wait.observe(now - t.arrival)
            if not t.assigned.done():
                t.assigned.set_result((g, slot))
        return len(adm.request_id)

    # ------------------------------------------------------------------ housekeeping
    def _expire(self, now: float) -> None:
        if len(self.pool) == 0:
            return
        ids, _, arrival, _ = self.pool.view()
        late = arrival < now - self.cfg.max_wait_s
        reason = np.full(len(ids), "", dtype=object)
        reason[late] = Reason.MAX_WAIT
        if not self.in_rotation.any():
            stuck = np.maximum(arrival, self.last_in_rotation) < now - self.cfg.queue_timeout_s
            reason[stuck & ~late] = Reason.NO_RANK_IN_ROTATION
            late |= stuck
        for rid, why in list(zip(ids[late].tolist(), reason[late].tolist())):  # copied: drop() edits the pool
            t = self.tickets.get(rid)
            if t is None:
                continue
            if t.assigned is not None and not t.assigned.done():
                t.assigned.set_exception(QueueTimeout(why))
            self.drop(t)

    def _estimate_nonstream(self, now: float) -> None:
        self.flush()
        t0, tok0 = self._rate_mark
        if self.measure_rate and now - t0 >= 0.5:
            streams = self.state.counts.copy()
            for t in self.nonstream.values():
                streams[t.rank] -= 1
            d = (self.metrics.tokens - tok0) / (now - t0)
            ok = (streams > 0) & (d > 0)
            self.rate[ok] = 0.7 * self.rate[ok] + 0.3 * d[ok] / streams[ok]
            self._rate_mark = (now, self.metrics.tokens.copy())
        for slot, t in self.nonstream.items():
            est = min(t.limit - 1, int(self.rate[t.rank] * (now - t.started)))
            if est > t.est_tokens:
                self.state.add_tokens(slot, est - t.est_tokens)
                t.est_tokens = est

    async def run(self) -> None:
        tick = self.cfg.tick_ms / 1000.0
        self.metrics.dispatcher_alive.set(1)
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
                    # arrives as the wake-up does, and this loop then never ends (seen when stopping under load)
                    async with asyncio.timeout(tick):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                try:
                    now = time.monotonic()
                    if now - self._last_housekeeping >= 0.05:
                        self._last_housekeeping = now
                        self._expire(now)
                        self._estimate_nonstream(now)
                    # a burst is placed in bounded calls, yielding to the event loop (streams keep flowing)
                    while self.dispatch_once() and len(self.pool) and self.state.free.sum():
                        await asyncio.sleep(0)
                except Exception:  # pragma: no cover - defensive: keep dispatching whatever happens
                    log.exception("dispatcher iteration failed")
                    await asyncio.sleep(tick)
        finally:
            self.metrics.dispatcher_alive.set(0)
