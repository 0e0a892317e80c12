"""What a policy sees of the engine model: the ``PrefixView`` of ``core.snapshot``, read from the engine."""

from __future__ import annotations

import numpy as np

from .core import Engine
from .prefix import fill_depths


class EngineView:
    """Pending prefill, KV headroom and cached prompt tokens per rank, straight from the engine's state (exact:
    the simulator knows its caches).

    ``cached`` counts, besides the blocks a rank's cache holds, the full prompt blocks of the requests queued or
    prefilling on that rank (``inflight``, on by default): a request placed behind them finds those blocks cached
    when it is scheduled, and a router's prefix index counts a prompt as cached on the rank it was sent to from the
    moment it sends it. Without this, under queueing every request of a shared prefix looks uncached everywhere
    until the first of them has finished its prefill, and a cache-aware rule cannot follow its own earlier
    choices."""

    def __init__(self, engine: Engine, inflight: bool = True):
        self.engine = engine
        self.inflight = inflight
        self._step = -1
        self._in: dict[int, tuple[int, list[int]]] = {}  # request id -> (rank, full prompt blocks), queued ones
        self._cnt: list[dict[int, int]] = [{} for _ in range(engine.G)]
        self._bits: dict[int, int] = {}  # block -> bit mask of ranks with a queued request holding it
        self._hints: dict[int, tuple] = {}  # request id -> its last lookup's (ranks, depth) groups and [G] depths
        self.block_size = engine.bs
        #: True when prompts cost time at the barrier (``--prefill``); policies that weigh prefill read it (a
        #: view without it is taken to model prefill, as the router's does)
        self.prefill = bool(engine.cfg.prefill)

    @property
    def pending_prefill(self) -> np.ndarray:
        """[G] prompt tokens queued or prefilling per rank, less what each rank's cache is estimated to serve (the
        engine starts estimating at the first read: a policy reads it before it places anything)."""
        self.engine.start_estimates()
        return np.array(self.engine.pending, dtype=np.int64)

    @property
    def kv_free(self) -> np.ndarray:
        return self.engine.kv_free()

    def cached(self, request_ids: np.ndarray) -> np.ndarray:
        e = self.engine
        out = np.zeros((len(request_ids), e.G), dtype=np.int64)
        if e.cache is None:
            return out
        bits = self._queued_blocks() if self.inflight else {}
        old, hints = self._hints, {}  # a request waits through many dispatches: each lookup starts from the last
        for row, i in enumerate(np.asarray(request_ids).tolist()):
            hl, prompt = e.hashes_of(i), int(e._source[0][i])
            if hl:
                hint, depths = old.get(i, (None, None))
                groups = e.cache.match_groups(hl, e.max_hit_blocks(prompt), bits, hint)
                if groups is not hint:  # (the same list: nothing it holds changed)
                    depths = fill_depths(groups, e.G)
                hints[i] = groups, depths
                out[row] = depths
        self._hints = hints
        return out * e.bs

    def _queued_blocks(self) -> dict[int, int]:
        """Block -> ranks with a queued or prefilling request whose full prompt blocks include it; kept up to date
        incrementally, once per engine step."""
        e = self.engine
        if self._step == e.steps:
            return self._bits
        self._step = e.steps
        now: dict[int, object] = {}
        for g in e.queued:
            for lst in (e.waiting[g], e.prefilling[g]):
                for r in lst:
                    if r.hashes:
                        now[r.rid] = r
        old, cnt, bits = self._in, self._cnt, self._bits
        for rid in [k for k in old if k not in now]:
            g, hs = old.pop(rid)
            c, keep = cnt[g], ~(1 << g)
            for h in hs:
                n = c[h] - 1
                if n:
                    c[h] = n
                else:
                    del c[h]
                    m = bits[h] & keep
                    if m:
                        bits[h] = m
                    else:
                        del bits[h]
        for rid, r in now.items():
            if rid in old:
                continue
            g, hs = r.g, r.hashes[: r.prompt // e.bs]
            old[rid] = (g, hs)
            c, bit = cnt[g], 1 << g
            for h in hs:
                n = c.get(h, 0)
                c[h] = n + 1
                if not n:
                    bits[h] = bits.get(h, 0) | bit
        return bits

    def blocks(self, request_ids: np.ndarray) -> list[list[int]]:
        """The block hashes a lookup of each request may match (its full prompt blocks but the last token's): an
        optional part of the ``PrefixView``, so a policy can see which requests of one dispatch share a prefix."""
        e = self.engine
        out = []
        for i in np.asarray(request_ids).tolist():
            hl = e.hashes_of(i)
            out.append(hl[: e.max_hit_blocks(int(e._source[0][i]))] if hl else [])
        return out

    def first_block(self, request_ids: np.ndarray) -> np.ndarray:
        """[n] the hash of each request's first prompt block (-1 when it has none): an optional part of the
        ``PrefixView`` that session-affinity rules use as a session identity."""
        src = self.engine._source
        out = np.full(len(request_ids), -1, dtype=np.int64)
        if src is None or src[1] is None:
            return out
        b = src[1]
        rid = np.asarray(request_ids, dtype=np.int64)
        has = b.offsets[rid + 1] > b.offsets[rid]
        out[has] = b.hashes[b.offsets[rid[has]]]
        return out
