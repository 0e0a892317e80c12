"""What the ranks say about their own load: the one picture every replica shares, and the step clock.

Every ``rank_metrics_interval_s`` the picker reads each rank's ``/metrics`` (vLLM's names; one DP endpoint
labels its engines ``engine="N"``):

- ``vllm:num_requests_running`` + ``vllm:num_requests_waiting`` and ``vllm:kv_cache_usage_perc`` ×
  capacity (``vllm:cache_config_info``'s ``num_gpu_blocks`` × ``block_size``): what the rank holds from
  *every* front door. What this replica does not account for itself (other picker or ``serve`` replicas, or
  clients that bypass the gateway) is held on that rank as *foreign* slots: placeholders in the same cluster
  state the policy reads, so the policy runs unchanged and sees the whole load. Between two scrapes the own
  requests are exact and the foreign ones stay as last seen.
- the step clock: decode advances every running sequence one token per engine step, so a request whose tokens
  the picker does not see (``--mode decision-only``, or a non-stream answer) is credited with the steps its
  rank ran since it was placed (capped at its ``max_tokens``). Steps are counted from
  ``vllm:iteration_tokens_total_count`` at every scrape, and between scrapes advanced at ``1 / step time``
  (``vllm:inter_token_latency_seconds`` sum / count since the last scrape); a rank that reports no iteration
  count gets the step time alone.

A rank whose metrics cannot be read for ``rank_metrics_stale_s`` drops its foreign slots: the replica then
balances on its own requests only (the single-replica picture), and says so in
``dpbalance_epp_rank_metrics_fresh``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import numpy as np

from ..router.rank_metrics import parse_metrics

log = logging.getLogger("dpbalance.gateway")
FOREIGN_BASE = 1 << 62  # request ids of foreign slots (never a ticket's)


class RankLoads:
    """Scrapes the ranks and keeps the foreign slots of the dispatcher's state up to date."""

    def __init__(self, router, cfg):
        self.r, self.cfg = router, cfg
        G = router.G
        self.G = G
        self.fresh = np.zeros(G, dtype=bool)
        self.seen_at = np.zeros(G)
        self.foreign_slots: list[list[int]] = [[] for _ in range(G)]
        self.foreign_load = np.zeros(G, dtype=np.int64)
        self.rank_running = np.zeros(G, dtype=np.int64)
        self.rank_tokens = np.zeros(G, dtype=np.int64)
        self.step_s = np.full(G, np.nan)
        self._itl = [(0.0, 0.0)] * G
        self._next_rid = FOREIGN_BASE
        self.clock = np.zeros(G)  # engine steps per rank (the step clock), advanced between scrapes
        self._clock_at = time.monotonic()
        self.unseen: dict[int, object] = {}  # slot -> ticket whose tokens are estimated
        if cfg.rank_metrics_interval_s > 0:  # the step clock sets the token rate of unseen requests
            router.dispatcher.measure_rate = False
        # this replica's share of every rank's slots (all of them when it is the only one)
        self.share = max(1, router.slots // cfg.replicas)
        d = router.dispatcher
        d.slots = self.share  # what a rank back in rotation gets (Dispatcher.set_rotation)
        for g in range(G):
            d.state.set_cap(g, self.share)

    # ------------------------------------------------------------------ reading
    async def _get(self, url: str) -> str | None:
        try:
            async with self.r.session.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                return await resp.text() if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError, UnicodeDecodeError):
            return None

    def _per_rank(self, texts: dict[str, str | None]) -> list[dict[str, float] | None]:
        out: list[dict[str, float] | None] = []
        dp = bool(self.cfg.dp_endpoint)
        for g, tgt in enumerate(self.r.targets):
            text = texts.get(tgt.url)
            if text is None:
                out.append(None)
                continue
            engines = parse_metrics(text)
            if dp:
                out.append(engines.get(str(g)))
            else:  # one server per rank: its engines (normally one) together
                tot: dict[str, float] = {}
                for e in engines.values():
                    for k, v in e.items():
                        tot[k] = v if k in ("kv_blocks", "block_size") else tot.get(k, 0.0) + v
                out.append(tot or None)
        return out

    async def scrape_once(self) -> None:
        urls = sorted({t.url for t in self.r.targets})
        texts = dict(zip(urls, await asyncio.gather(*(self._get(u) for u in urls))))
        now = time.monotonic()
        for g, m in enumerate(self._per_rank(texts)):
            if m is None or "vllm:num_requests_running" not in m:
                if now - self.seen_at[g] > self.cfg.rank_metrics_stale_s:
                    self.fresh[g] = False
                    self.set_foreign(g, 0, 0)
                continue
            self.seen_at[g] = now
            self.fresh[g] = True
            self._step_clock(g, m)
            self._foreign_from(g, m)

    def _step_clock(self, g: int, m: dict[str, float]) -> None:
        it = m.get("vllm:iteration_tokens_total_count")
        if it is not None:
            self.advance()
            self.clock[g] = it  # re-anchored to the rank's own count (a ticket's estimate still only grows)
        s, c = m.get("vllm:inter_token_latency_seconds_sum"), m.get("vllm:inter_token_latency_seconds_count")
        if s is None or c is None:
            return
        s0, c0 = self._itl[g]
        self._itl[g] = (s, c)
        if c0 and c - c0 > 0 and s - s0 > 0:
            step = (s - s0) / (c - c0)
            self.step_s[g] = step if np.isnan(self.step_s[g]) else 0.5 * self.step_s[g] + 0.5 * step
            self.r.dispatcher.rate[g] = 1.0 / self.step_s[g]

    def _foreign_from(self, g: int, m: dict[str, float]) -> None:
        running = int(m.get("vllm:num_requests_running", 0) + m.get("vllm:num_requests_waiting", 0))
        cap = m.get("kv_blocks", 0.0) * m.get("block_size", 0.0)
        tokens = int(round(m.get("vllm:kv_cache_usage_perc", 0.0) * cap)) if cap > 0 else -1
        self.rank_running[g], self.rank_tokens[g] = running, tokens
        d = self.r.dispatcher
        d.flush()
        own_n = int(d.state.counts[g]) - len(self.foreign_slots[g])
        own_load = int(d.state.loads[g]) - self._held_load(g)
        n = max(0, running - own_n)
        load = max(0, tokens - own_load) if tokens >= 0 else n * (own_load // own_n if own_n else 0)
        self.set_foreign(g, n, load if n else 0)

    def _held_load(self, g: int) -> int:
        st = self.r.dispatcher.state
        return sum(int(st.slot_prompt[s] + st.clock - st.slot_start[s]) for s in self.foreign_slots[g])

    # ------------------------------------------------------------------ the foreign slots
    def set_foreign(self, g: int, n: int, load: int) -> None:
        """Hold ``n`` foreign requests of ``load`` tokens in all on rank ``g``. The rank's cap becomes this
        replica's share plus the foreign slots (at most all the rank's slots): with one replica the foreign
        requests take free slots, with several each keeps its share beside what the others hold. (A replica
        never takes slots beyond its share, even idle ones: the slots another replica has not filled look the
        same as free ones, and taking them would overfill the rank when it fills them.)"""
        d = self.r.dispatcher
        st = d.state
        held = self.foreign_slots[g]
        for s in held:
            st.release(s)
        held.clear()
        base = self.share if d.in_rotation[g] else 0
        cap = min(st.bmax, base + n)
        st.set_cap(g, cap)
        n = max(0, min(n, cap - int(st.counts[g])))
        for i in range(n):
            share = load // n + (1 if i < load % n else 0)
            self._next_rid += 1
            held.append(st.admit(self._next_rid, g, share))
        self.foreign_load[g] = load if n else 0
        self.r.dispatcher.wake()

    # ------------------------------------------------------------------ requests whose tokens are not seen
    def advance(self) -> None:
        """Move the step clock to now at each rank's current step rate."""
        now = time.monotonic()
        d = self.r.dispatcher
        running = d.state.counts > 0
        self.clock[running] += d.rate[running] * (now - self._clock_at)
        self._clock_at = now

    def track(self, t) -> None:
        """Credit ``t`` with its rank's steps from now on (``progress``)."""
        if self.cfg.rank_metrics_interval_s <= 0:
            self.r.dispatcher.start_nonstream(t)  # no step clock: the dispatcher's rate estimate
            return
        self.advance()
        t.est_tokens = 0
        t.started = time.monotonic()
        t.clock0 = self.clock[t.rank]
        self.unseen[t.slot] = t

    def untrack(self, t) -> None:
        if self.unseen.get(t.slot) is t:
            self.progress_one(t)
            del self.unseen[t.slot]

    def progress_one(self, t) -> None:
        if t.slot < 0 or t.clock0 < 0:
            return
        est = min(t.limit - 1, int(self.clock[t.rank] - t.clock0))
        if est > t.est_tokens:
            self.r.dispatcher.state.add_tokens(t.slot, est - t.est_tokens)
            t.est_tokens = est

    async def run_progress(self, every: float = 0.02) -> None:
        while True:
            await asyncio.sleep(every)
            if self.unseen:
                self.advance()
                for t in list(self.unseen.values()):
                    self.progress_one(t)

    async def run(self) -> None:
        every = self.cfg.rank_metrics_interval_s
        if every <= 0:
            return
        while True:
            try:
                await self.scrape_once()
            except Exception:  # pragma: no cover - a bug here must not stop the scrapes
                log.exception("rank metrics scrape failed")
            await asyncio.sleep(every)
