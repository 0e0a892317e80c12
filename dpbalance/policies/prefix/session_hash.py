"""session_hash: consistent hashing by session (vllm-router's ``consistent_hash``: a session key onto a hash ring
of the workers, ``replicas`` virtual nodes each; a worker without a free slot passes the request to the next one
clockwise, the bounded-load variant, since a request may only go where a slot is free).

The session identity is the request's **first block hash** when the prefix view offers it (the optional
``PrefixView.first_block(request_ids)``; the engine view does), else the pool's prompt key, else none (the
lowest token load). Neither is a true session id: in Mooncake conversation every request starts with the same
block, so the first block sends every request to one worker (the degenerate case of pure affinity); in synthetic
sessions the first block is the shared system prompt when it is at least one block long. The prompt key of a
Mooncake request identifies its whole prompt, so hashing by it would spread a conversation's turns.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from ...core.config import setting
from ...core.snapshot import Snapshot
from ...core.workload import NO_KEY
from ..base import PolicyContext
from .common import PrefixFifo, Scratch, pick


def _mix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


@dataclass(frozen=True)
class SessionHashConfig:
    replicas: int = setting(160, "virtual nodes per worker on the hash ring", min=1)


class SessionHashPolicy(PrefixFifo):
    def __init__(self, cfg: SessionHashConfig, ctx: PolicyContext):
        ring = sorted((_mix(g * 1_000_003 + r), g) for g in range(ctx.workers) for r in range(cfg.replicas))
        self.points = [p for p, _ in ring]
        self.owner = [g for _, g in ring]
        self.keys: list[int] = []

    def begin(self, snap: Snapshot, sc: Scratch) -> None:
        n = len(sc.hit)
        first = getattr(snap.prefix, "first_block", None) if snap.prefix is not None else None
        keys = np.asarray(first(snap.pool_ids[:n]), dtype=np.int64) if first is not None else np.full(n, NO_KEY)
        pk = snap.pool_key[:n]
        self.keys = np.where(keys != NO_KEY, keys, pk).tolist()

    def choose(self, sc: Scratch, i: int, s: float) -> int:
        key = self.keys[i]
        if key == NO_KEY:
            return pick(sc.free, sc.loads)
        k = bisect.bisect_left(self.points, _mix(key & 0xFFFFFFFFFFFFFFFF))
        m = len(self.points)
        for j in range(m):
            g = self.owner[(k + j) % m]
            if sc.free[g] > 0:
                return g
        return pick(sc.free, sc.loads)
