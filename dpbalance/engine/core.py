"""The engine model of one data-parallel group: G ranks stepping together behind one barrier.

What one step does, on every rank (vLLM v1's scheduler, simplified to what costs time at the barrier):

1. **Running requests first.** Every decoding request takes one token of the step's token budget
   (``max_batched_tokens``); requests part-way through their prompt take the next chunk, at most
   ``long_prefill_threshold`` tokens each, while budget is left.
2. **Then waiting requests**, oldest first, while budget is left and none was preempted this step: the rank's
   prefix cache serves the longest prefix of full blocks it holds (never the last prompt token, which is always
   recomputed for its logits), and the rest is prefilled in chunks.
3. **KV capacity.** A rank holds the KV of its requests' computed tokens plus the cached blocks. When a step needs
   more than is free, unreferenced cached blocks are evicted (oldest first); if that is not enough the most
   recently scheduled request is preempted: it frees everything and waits at the head of the queue to be
   recomputed (its blocks stay cached until evicted, so it may find them again). A prompt's full blocks join the
   cache when its last chunk is computed (vLLM adds each block as soon as it is computed: the two differ only for
   requests prefilling the same new prefix on one rank at the same time). The cache is looked up, as in vLLM,
   when a request is first scheduled, so it finds what was cached while it waited (with unlimited KV, once a
   policy has read the ranks' pending prefill, an arrival estimate sets it until then); waiting requests never
   pin cached blocks, and a request that cannot be scheduled lets its lookup go.
4. **Time.** Each rank is busy for its decode work plus its prefill work (the step-time model's
   ``rank_times``), plus the model's ``per_request`` for each request placed on it since the last step (the
   work of a request's arrival and end); the step lasts as long as the slowest rank, and ranks with nothing to
   do run a dummy step.
   A request whose last prompt chunk was computed samples a token in the same step (its first, or its next
   after a preemption) and decodes from the next step on.

With ``prefill`` off, prompts cost nothing: an admitted request (after the cache lookup that counts its hits)
decodes in the very step it is admitted in, which is the decode-only model.

Engine-side mitigations (``EngineConfig``) gate when prefill work may start: vLLM's prefill schedule interval,
TensorRT-LLM's attention-DP balance wait and SGLang's prefill delayer.

Cost per step: O(G) vectorised plus O(1) Python work per request that is waiting or prefilling; decoding
requests cost nothing per step (their loads and KV grow as per-rank sums).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..core.workload import Blocks
from .config import EngineConfig
from .prefix import PrefixCache
from .req import DECODE, DEFAULT_BLOCK, PREFILL, WAITING, EngineError, Req, StepOut
from .schedule import PrefillScheduler
from .step_time import StepTimeModel


class Engine(PrefillScheduler):
    """The ranks of one DP group under the engine model (see the module docstring). Requests are known by an
    integer id; ``admit`` takes their prompt lengths and block hashes from ``source`` (the simulator's workload)
    or ``admit_one`` takes them directly (the emulator)."""

    def __init__(
        self, ranks: int, cfg: EngineConfig, step_model: StepTimeModel, *, slots: int, block_size: int | None = None
    ):
        if cfg.prefill and (step_model.prefill_tok is None or step_model.prefill_attn is None):
            src = f" (from {step_model.source})" if step_model.source else ""
            raise EngineError(
                f"the step-time model{src} has no prefill terms (prefill_tok, prefill_attn): it was calibrated "
                "without prefill phases. Re-run `dpbalance calibrate`, or give them in the spec"
            )
        running = min(slots, cfg.max_num_seqs or slots)
        if cfg.prefill and cfg.max_batched_tokens < running:
            what = "--max-num-seqs" if running < slots else "the slots per rank"
            raise EngineError(
                f"--max-batched-tokens {cfg.max_batched_tokens} is below {what} ({running}): "
                "every running sequence needs a token of the budget each step (vLLM requires this too)"
            )
        self.G, self.cfg, self.model, self.slots = ranks, cfg, step_model, slots
        #: most requests a rank runs at once (prefilling or decoding); None: the router's slots bound it
        self.seq_cap = running if running < slots else None
        self.bs = int(cfg.block_size or block_size or DEFAULT_BLOCK)
        self.cap = cfg.capacity
        self.cache = PrefixCache(ranks, self.bs, bounded=self.cap is not None) if cfg.prefix_cache else None
        self.reqs: dict[int, Req] = {}
        self.waiting: list[deque[Req]] = [deque() for _ in range(ranks)]
        self.prefilling: list[list[Req]] = [[] for _ in range(ranks)]
        self.order: list[list[Req]] | None = [[] for _ in range(ranks)] if self.cap is not None else None
        self.queued: set[int] = set()  # ranks with waiting or prefilling requests
        self.dec_count = np.zeros(ranks, dtype=np.int64)
        self.dec_load = np.zeros(ranks, dtype=np.int64)
        # KV is only counted when capacity is finite (``kv``: tokens held outside cache blocks, per rank)
        self.kvt = self.cap is not None
        self.kv_private = [0] * ranks
        self.pending = [0] * ranks  # prompt tokens still to prefill per rank (an estimate until looked up)
        #: estimate a waiting request's cached prefix on arrival (``pending`` then counts only what it would
        #: compute); off until something reads ``pending`` (``start_estimates``): a run whose policy never weighs
        #: queued prefill skips that lookup, and nothing else it sees changes
        self.estimate = False
        self.steps = 0
        self._zeros = np.zeros(ranks, dtype=np.int64)
        self._started: list[int] = []  # requests decoding since the last step began (admitted or restarted)
        #: requests each rank admitted since the last step began (counted only when the model charges them)
        self.arrived = np.zeros(ranks, dtype=np.int64) if step_model.per_request else None
        self._delay = 0  # prefill delayer / ADP wait counter
        self._capacity_bound = False  # vLLM's interval: the last release step left requests waiting
        self._source: tuple[np.ndarray, Blocks | None] | None = None
        # statistics
        self.prompt_tokens = [0] * ranks  # prompt tokens of first lookups
        self.hit_tokens = [0] * ranks  # of which the cache served
        self.prefilled = np.zeros(ranks, dtype=np.int64)  # prompt (and recomputed) tokens computed
        self.preemptions = np.zeros(ranks, dtype=np.int64)

    # ------------------------------------------------------------------ requests in and out
    def use_source(self, prompts: np.ndarray, blocks: Blocks | None) -> None:
        """Requests admitted by id alone take their prompt length and block hashes from here (row = id)."""
        self._source = (prompts, blocks)

    def hashes_of(self, rid: int) -> list[int] | None:
        """The block hashes of a request of the source (None: no block structure)."""
        prompts, blocks = self._source
        if blocks is None:
            return None
        return blocks.hashes[blocks.offsets[rid] : blocks.offsets[rid + 1]].tolist()

    def admit(self, rids, ranks) -> None:
        """The router placed these requests (of the source) on these ranks."""
        prompts, blocks = self._source
        rl, gl = rids.tolist(), ranks.tolist()
        if self.cache is None or blocks is None:
            for i, g, p in zip(rl, gl, prompts[rids].tolist()):
                self.admit_one(i, g, p)
            return
        # every request's hashes in one conversion (a numpy slice per request costs more than the lookup)
        lo, hi = blocks.offsets[rids], blocks.offsets[rids + 1]
        n = hi - lo
        flat = blocks.hashes[np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))].tolist()
        a = 0
        for i, g, p, k in zip(rl, gl, prompts[rids].tolist(), n.tolist()):
            self.admit_one(i, g, p, flat[a : a + k])
            a += k

    def admit_one(self, rid: int, g: int, prompt: int, hashes: list[int] | None = None) -> None:
        """Request ``rid`` joins rank g's waiting queue (prefill on), or decodes from this step (prefill off)."""
        r = self.reqs[rid] = Req(rid, g, prompt, hashes if self.cache is not None else None)
        if self.arrived is not None:
            self.arrived[g] += 1
        if not self.cfg.prefill:
            self._lookup(r)
            self._start_decode(r, 0)
            self._started.append(rid)
            return
        r.state = WAITING
        self.waiting[g].append(r)
        self.queued.add(g)
        # with finite KV a waiting request must not pin cached blocks: it looks up when scheduled (as it also does
        # while nothing has read the ranks' pending prefill, ``estimate``)
        if self.kvt or not self.estimate:
            r.left = r.target
            self.pending[g] += r.left
        else:  # an estimate of its prefill at arrival; the lookup that counts comes when it is first scheduled
            self._lookup(r, count=False)

    def start_estimates(self) -> None:
        """From now on estimate each arriving request's cached prefix (``pending`` counts what is left to compute),
        and estimate those already waiting against the caches as they are now."""
        if self.estimate:
            return
        self.estimate = True
        if self.kvt:
            return
        for g in self.queued:
            for r in self.waiting[g]:
                self._lookup(r, count=False)

    def finish(self, rids) -> None:
        """These requests are done (or aborted): their KV is freed, their blocks stay cached until evicted."""
        reqs, kvt = self.reqs, self.kvt
        release = self.cache is not None and self.cache.bounded and not kvt
        gs, toks = [], []
        for i in rids.tolist() if hasattr(rids, "tolist") else rids:
            r = reqs.pop(i, None)
            if r is None:
                continue
            g = r.g
            if r.state == DECODE:
                gs.append(g)
                toks.append(r.prompt + r.gen0 - r.dec_start)  # + steps, added below
            else:
                (self.waiting[g] if r.state == WAITING else self.prefilling[g]).remove(r)
                self.pending[g] -= r.left
            if kvt:
                self._free(r)
                self.order[g].remove(r)
            elif release and r.acquired:
                self.cache.release(g, r.hashes[: r.acquired])
        if gs:
            if len(gs) == 1:
                self.dec_count[gs[0]] -= 1
                self.dec_load[gs[0]] -= toks[0] + self.steps
            else:
                counts = np.bincount(gs, minlength=self.G)
                self.dec_count -= counts
                self.dec_load -= np.bincount(gs, weights=toks, minlength=self.G).astype(np.int64) + counts * self.steps

    def generated(self, rid: int) -> int:
        """Output tokens a request on a rank has sampled so far."""
        r = self.reqs[rid]
        if r.state == DECODE:
            return r.gen0 + self.steps - r.dec_start
        return r.target - r.prompt

    # ------------------------------------------------------------------ per-request bookkeeping
    def _max_hit(self, r: Req) -> int:
        """Blocks a lookup may serve: full blocks only, and never the last token to compute."""
        return max(0, r.target - 1) // self.bs

    def max_hit_blocks(self, prompt: int) -> int:
        """Blocks a lookup of a new prompt of this length may serve."""
        return max(0, prompt - 1) // self.bs

    def _lookup(self, r: Req, count: bool = True) -> None:
        """Serve the request's longest cached prefix on its rank; the hit counts at its first counted lookup only
        (``count`` False: an estimate at arrival, redone when the request is first scheduled)."""
        k = 0
        if r.hashes:
            cache, lim = self.cache, self._max_hit(r)
            if cache.bounded:
                k = cache.match(r.g, r.hashes, lim)
                if k:
                    cache.acquire(r.g, r.hashes[:k])
            else:  # a cache that never evicts still holds what an earlier lookup matched, and nothing is referenced
                k = cache.match(r.g, r.hashes, lim, start=min(r.acquired, lim))
        r.acquired = k
        r.computed = k * self.bs
        if r.state == WAITING:  # what is left to prefill
            left = r.target - r.computed
            self.pending[r.g] += left - r.left
            r.left = left
        if count and not r.looked_up:
            r.looked_up = True
            r.hit = k * self.bs
            self.prompt_tokens[r.g] += r.prompt
            self.hit_tokens[r.g] += r.hit

    def _cache_new_blocks(self, r: Req) -> None:
        """Full prompt blocks the request has computed join its rank's cache (shared with later requests)."""
        hl = r.hashes
        full = min(len(hl), r.prompt // self.bs, r.computed // self.bs)
        k = r.acquired
        if full > k:
            self.cache.acquire(r.g, hl[k:full])
            r.acquired = full
            moved = (full - k) * self.bs
            if self.kvt:
                r.kv -= moved
                self.kv_private[r.g] -= moved

    def _free(self, r: Req) -> None:
        if self.kvt:
            self.kv_private[r.g] -= r.kv + (self.steps - r.dec_start if r.state == DECODE else 0)
        if r.acquired:
            self.cache.release(r.g, r.hashes[: r.acquired])
        r.acquired = r.computed = r.kv = 0

    def _start_decode(self, r: Req, gen: int) -> None:
        """The request decodes from this step on, with ``gen`` output tokens so far."""
        g = r.g
        if not self.cfg.prefill:  # the prompt's KV appears at once; with a cache its full blocks are shared
            if self.kvt:
                new = r.target - r.computed
                r.kv += new
                self.kv_private[g] += new
            r.computed = r.target
            if r.hashes:
                self._cache_new_blocks(r)
        r.state = DECODE
        r.gen0 = gen
        r.dec_start = self.steps
        self.dec_count[g] += 1
        self.dec_load[g] += r.prompt + gen
        if self.order is not None and (not self.order[g] or self.order[g][-1] is not r):
            if r not in self.order[g]:
                self.order[g].append(r)

    # ------------------------------------------------------------------ KV capacity
    def _room(self, g: int, need: int) -> bool:
        """Make ``need`` tokens of KV room on rank g, evicting unreferenced cached blocks; False if even that is
        not enough."""
        if self.cap is None:
            return True
        resident = self.cache.resident[g] * self.bs if self.cache is not None else 0
        short = self.kv_private[g] + resident + need - self.cap
        if short > 0 and self.cache is not None:
            short -= self.cache.evict(g, -(-short // self.bs)) * self.bs
        return short <= 0

    def kv_free(self) -> np.ndarray:
        """[G] KV tokens each rank could still give (evictable cached blocks count as free; inf: unlimited)."""
        if self.cap is None:
            return np.full(self.G, np.inf)
        held = np.asarray(self.kv_private, dtype=np.float64)
        if self.cache is not None:
            held += np.array([self.cache.resident[g] - self.cache.evictable(g) for g in range(self.G)]) * self.bs
        return self.cap - held

    def _preempt(self, g: int) -> tuple[Req, bool] | None:
        """Preempt rank g's most recently scheduled request (it is recomputed later); returns it and whether it
        was decoding."""
        order = self.order[g]
        if not order:
            return None
        r = order.pop()
        was_decoding = r.state == DECODE
        if was_decoding:
            gen = r.gen0 + self.steps - r.dec_start
            self.dec_count[g] -= 1
            self.dec_load[g] -= r.prompt + gen
        else:
            gen = r.target - r.prompt
            if r.state == PREFILL:
                self.prefilling[g].remove(r)
                self.pending[g] -= r.left
        if r.state != WAITING:
            self._free(r)
            r.state = WAITING
            r.target = r.prompt + gen  # recompute the prompt and the output so far
            r.left = r.target
            self.pending[g] += r.left
            self.waiting[g].appendleft(r)
        self.queued.add(g)
        self.preemptions[g] += 1
        return r, was_decoding

    # ------------------------------------------------------------------ one step
    def step(self) -> StepOut:
        """Schedule and run one step on every rank (see the module docstring)."""
        G = self.G
        pre_tok = np.zeros(G, dtype=np.int64)
        pre_attn = np.zeros(G, dtype=np.float64)
        seqs = self.dec_count.copy()
        first: list[Req] = []
        preempted: list[int] = []
        if self.cap is not None:
            for g in np.flatnonzero(self.dec_count).tolist():  # every decode needs one more token of KV
                while self.dec_count[g] and not self._room(g, int(self.dec_count[g])):
                    r, was_decoding = self._preempt(g)
                    if was_decoding:
                        preempted.append(r.rid)
                seqs[g] = self.dec_count[g]
        if self.queued:
            if self.cfg.prefill:
                chunks, new_ok = self._prefill_gate()
                budgets = (self.cfg.max_batched_tokens - self.dec_count).tolist()
                for g in sorted(self.queued) if chunks else ():
                    if self.kvt:
                        work = self._schedule_rank(g, budgets[g], new_ok, first, preempted)
                    else:
                        work = self._schedule_unbounded(g, budgets[g], new_ok, first)
                    if work[2]:
                        pre_tok[g], pre_attn[g], seqs[g] = work[0], work[1], seqs[g] + work[2]
            else:
                for g in sorted(self.queued):
                    self._restart_instant(g)
        arrived = self.arrived
        if arrived is not None and arrived.any():  # what admitting them cost is not prefill: both times carry it
            self.arrived = np.zeros(G, dtype=np.int64)
        else:
            arrived = None
        dec_busy = self.model.rank_times(self.dec_load, self.dec_count, self._zeros, self._zeros, arrived)
        busy = self.model.rank_times(self.dec_load, seqs, pre_tok, pre_attn, arrived) if pre_tok.any() else dec_busy
        generated = self.dec_count.copy()
        if self.kvt:
            kv = self.kv_private
            for g, n in enumerate(self.dec_count.tolist()):
                kv[g] += n
        self.dec_load += self.dec_count
        self.steps += 1
        for r in first:
            generated[r.g] += 1
            self._start_decode(r, r.target - r.prompt + 1)
        reqs = self.reqs
        started = [i for i in self._started if reqs[i].state == DECODE] + [r.rid for r in first if r.state == DECODE]
        self._started = []
        stalled: list[int] = []
        for g in list(self.queued):
            if self.prefilling[g] or self.waiting[g]:
                stalled += [r.rid for r in self.prefilling[g]]
                stalled += [r.rid for r in self.waiting[g]]
            else:
                self.queued.discard(g)
        self.prefilled += pre_tok
        return StepOut(float(busy.max()), busy, generated, started, preempted, stalled, pre_tok, dec_busy)

    def _prefill_gate(self) -> tuple[bool, bool]:
        """(may prefill chunks run this step, may new prefills start this step), per the mitigation in use."""
        cfg = self.cfg
        if cfg.prefill_interval > 1:  # vLLM: prefill work only on cadence steps, unless the last left a queue
            release = self.steps % cfg.prefill_interval == 0 or self._capacity_bound
            if release:
                self._capacity_bound = False
            return release, release
        limit = cfg.adp_wait or cfg.prefill_delayer
        if limit:  # TensorRT-LLM / SGLang: new prefills wait until every rank has one, for a bounded time
            n_new = sum(1 for w in self.waiting if w)
            if n_new in (0, self.G):
                self._delay = 0
                return True, True
            self._delay += 1
            if self._delay >= limit:
                self._delay = 0
                return True, True
            return True, False
        return True, True

    def _restart_instant(self, g: int) -> None:
        """Prefill off: preempted requests resume as soon as their KV fits (recomputing costs no time)."""
        wait = self.waiting[g]
        while wait:
            r = wait[0]
            self._lookup(r)
            if not self._room(g, r.target - r.computed):  # still no room: it waits
                self._free(r)
                return
            wait.popleft()
            self.pending[g] -= r.left
            r.left = 0
            self._start_decode(r, r.target - r.prompt)
            self._started.append(r.rid)

    # ------------------------------------------------------------------ statistics
    def hit_rate(self) -> float:
        """Prompt tokens the caches served over prompt tokens looked up (first lookups only)."""
        total = sum(self.prompt_tokens)
        return sum(self.hit_tokens) / total if total else 0.0
