"""The load-balancing rules built into the engines: vLLM's internal data-parallel rule (old and new score),
SGLang's ``total_tokens`` and TensorRT-LLM's attention-DP balance (coordinated waiting)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.config import setting
from ..core.snapshot import Assignments, Snapshot
from .base import NONE, FifoPolicy, LowestKeyPolicy, Policy, PolicyContext, assign


class _StaleStats:
    """Engines publish running/waiting counts periodically (vLLM's DP coordinator: ≤ every 100 ms);
    between refreshes the front-end only adds its own optimistic bumps. ``stats_interval`` is the
    refresh period in dispatch calls (1 = fresh every decode step). The engines' own front ends hand every request
    to a rank at once (``forwards``)."""

    forwards = True

    def __init__(self, cfg, ctx: PolicyContext):
        self.cfg = cfg
        self.G = ctx.workers
        self.calls = 0
        self.running = np.zeros(ctx.workers, dtype=np.int64)
        self.waiting = np.zeros(ctx.workers, dtype=np.int64)
        self.held = np.zeros(ctx.workers, dtype=np.int64)
        self.start = 0

    def begin(self, snap: Snapshot) -> None:
        if self.calls % max(1, self.cfg.stats_interval) == 0:
            self.running[:] = snap.counts
            self.held[:] = snap.loads
            self.waiting[:] = 0
        self.calls += 1

    def _bump(self, g: int, prompt: int) -> int:
        """Record the optimistic bump of a choice (no-op for g < 0) and return g."""
        if g >= 0:
            self.waiting[g] += self.cfg.client_count
            self.held[g] += prompt
        return g

    def _pick_rotating(self, score: np.ndarray, free: np.ndarray) -> int:
        """Lowest score among free workers; scan starts at a rotating index so ties spread."""
        start = self.start
        self.start = (start + 1) % len(score)
        s = np.where(free > 0, score, np.inf)
        best = s.min()
        if not np.isfinite(best):
            return -1
        cand = np.flatnonzero(s == best)
        i = int(np.searchsorted(cand, start))  # the first minimum at or after the scan start, else wrap around
        return int(cand[i]) if i < len(cand) else int(cand[0])


@dataclass(frozen=True)
class VllmConfig:
    stats_interval: int = setting(1, "dispatch calls between engine stat refreshes (1 = every step)")
    client_count: int = setting(1, "front-end API servers sharing the engines (bump size)")

    def __post_init__(self):
        if self.stats_interval < 1 or self.client_count < 1:
            raise ValueError("stats_interval and client_count must be >= 1")


class VllmPolicy(_StaleStats, FifoPolicy):
    def choose(self, loads, counts, free, prompt):
        return self._bump(self._pick_rotating(4 * self.waiting + self.running, free), prompt)


@dataclass(frozen=True)
class VllmKvConfig(VllmConfig):
    kv_tokens_per_slot: int = setting(16384, "KV capacity per slot; kv_usage = load / (slots·this)")

    def __post_init__(self):
        super().__post_init__()
        if self.kv_tokens_per_slot < 1:
            raise ValueError("kv_tokens_per_slot must be >= 1")


class VllmKvPolicy(_StaleStats, FifoPolicy):
    def begin(self, snap: Snapshot) -> None:
        super().begin(snap)
        self.kv_cap = np.maximum(snap.caps, 1) * self.cfg.kv_tokens_per_slot

    def choose(self, loads, counts, free, prompt):
        inflight = self.running + self.waiting  # this front-end's own in-flight requests per engine
        base = np.maximum(self.cfg.client_count * inflight, self.waiting + self.running).astype(np.float64)
        usage = self.held / self.kv_cap
        score = base + self.waiting * 6.0 * np.maximum(0.0, usage - 0.5)
        return self._bump(self._pick_rotating(score, free), prompt)


@dataclass(frozen=True)
class SglangConfig:
    stats_interval: int = setting(1, "dispatch calls between rank stat refreshes")

    def __post_init__(self):
        if self.stats_interval < 1:
            raise ValueError("stats_interval must be >= 1")

    @property
    def client_count(self) -> int:
        return 1


class SglangTotalTokensPolicy(_StaleStats, LowestKeyPolicy):
    """Lowest held tokens among ranks with a free slot (ties: lowest index); each choice is bumped by its prompt."""

    def keys(self, snap, workers):
        return zip(self.held[workers].tolist(), workers.tolist())

    def next_key(self, key, prompt):
        return (key[0] + prompt, key[1])

    def placed(self, workers, prompts):
        np.add.at(self.waiting, workers, self.cfg.client_count)
        np.add.at(self.held, workers, prompts)


# --------------------------------------------------------------------------- TensorRT-LLM ADP balance
@dataclass(frozen=True)
class AdpBalanceConfig:
    timeout_iters: int = setting(50, "max iterations new work waits for every rank to have room")
    batching_wait_iters: int = setting(10, "extra iterations to accumulate a batch of >= one request per rank")

    def __post_init__(self):
        if self.timeout_iters < 0 or self.batching_wait_iters < 0:
            raise ValueError("timeout_iters and batching_wait_iters must be >= 0")


class AdpBalancePolicy(Policy):
    """Coordinated waiting: ranks admit new work together so prefills/loads line up.

    Work is held while some rank is full (up to ``timeout_iters`` dispatches) and, once all ranks have
    room, while fewer than G requests wait (up to ``batching_wait_iters``). On release the pool is sorted
    by prompt tokens (largest first) and dealt round-robin over ranks ordered by load (lightest first).
    """

    def __init__(self, cfg: AdpBalanceConfig, ctx: PolicyContext):
        self.cfg = cfg
        self.wait = 0
        self.batch_wait = 0

    def dispatch(self, snap: Snapshot) -> Assignments:
        if snap.pool_size == 0 or snap.total_free == 0:
            self.wait = self.batch_wait = 0 if snap.pool_size == 0 else self.wait
            return NONE
        free = snap.free.copy()
        all_ready = bool(np.all(free > 0))
        if not all_ready and self.wait < self.cfg.timeout_iters:
            self.wait += 1
            return NONE
        if all_ready and snap.pool_size < snap.workers and self.batch_wait < self.cfg.batching_wait_iters:
            self.batch_wait += 1
            return NONE
        self.wait = self.batch_wait = 0
        ids, prompt = snap.pool_ids, snap.pool_prompt
        n = min(snap.total_free, len(ids))
        # take the oldest n requests, then order them by size for the deal
        take = np.argsort(-prompt[:n], kind="stable")
        ranks = [int(g) for g in np.argsort(snap.loads, kind="stable") if free[g] > 0]
        out_r: list[int] = []
        out_g: list[int] = []
        k = 0
        for i in take:
            while ranks and free[ranks[k % len(ranks)]] <= 0:
                ranks.pop(k % len(ranks))
            if not ranks:
                break
            g = ranks[k % len(ranks)]
            out_r.append(int(ids[i]))
            out_g.append(g)
            free[g] -= 1
            k += 1
        return assign(out_r, out_g)
