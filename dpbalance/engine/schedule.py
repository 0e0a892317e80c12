"""How a rank schedules prefill work in one step (part of the engine model: see ``engine.core``'s docstring).

Running prompts first, then waiting requests, oldest first, under the step's token budget left after decodes
and while the rank runs fewer than ``max_num_seqs`` requests; each chunk at most ``long_prefill_threshold``
tokens. With unlimited KV nothing is ever preempted, and one pass
without per-chunk bookkeeping does (``_schedule_unbounded``); with a finite capacity a running prompt makes room
by preempting later-scheduled requests, as vLLM does (``_schedule_rank``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .req import PREFILL

if TYPE_CHECKING:
    from .req import Req


class PrefillScheduler:
    """The prefill half of ``Engine.step`` (a mixin: it works on the engine's own queues and counters)."""

    def _seats(self, g: int) -> int:
        """Waiting requests rank g may start this step (``max_num_seqs`` less the requests it runs)."""
        cap = self.seq_cap
        if cap is None:
            return 1 << 62
        return cap - int(self.dec_count[g]) - len(self.prefilling[g])

    def _schedule_unbounded(self, g: int, budget: int, new_ok: bool, first: list[Req]) -> tuple[int, float, int]:
        """``_schedule_rank`` when KV is unlimited (nothing is ever preempted): the same decisions, one pass, no
        per-chunk bookkeeping beyond the request's own."""
        thr = self.cfg.long_prefill_threshold
        toks, attn, n = 0, 0.0, 0
        running = self.prefilling[g]
        wait = self.waiting[g]
        keep: list[Req] = []
        seats = self._seats(g)
        j = 0  # next running prompt; then the waiting queue, oldest first (if new prefills may start)
        while budget > 0:
            if j < len(running):
                r = running[j]
                j += 1
            elif new_ok and wait and seats > 0:
                seats -= 1
                r = wait.popleft()
                self._lookup(r)  # as vLLM, at first scheduling: it finds what was cached while it waited
                r.state = PREFILL
            else:
                break
            c = r.target - r.computed
            if c > budget:
                c = budget
            if 0 < thr < c:
                c = thr
            before = r.computed
            r.computed = before + c
            r.left -= c
            budget -= c
            toks += c
            attn += c * (before + (c + 1) / 2.0)
            n += 1
            if r.computed >= r.target:
                self._prefilled(r, first)
            else:
                keep.append(r)
        keep += running[j:]  # the budget ran out before them
        if new_ok and wait and self.cfg.prefill_interval > 1:
            self._capacity_bound = True
        self.prefilling[g] = keep
        self.pending[g] -= toks
        return toks, attn, n

    def _prefilled(self, r: Req, first: list[Req]) -> None:
        """The request's last prompt chunk ran: its full blocks join the cache, and it samples a token."""
        if r.hashes and r.computed // self.bs > r.acquired:
            self._cache_new_blocks(r)
        first.append(r)

    def _schedule_rank(
        self, g: int, budget: int, new_ok: bool, first: list[Req], preempted: list[int]
    ) -> tuple[int, float, int]:
        """One rank's prefill scheduling: running prompts first, then waiting requests (see the module
        docstring). Returns this rank's prefill tokens, attention pairs and scheduled prompts, and adds the requests
        whose last chunk ran to ``first``."""
        thr = self.cfg.long_prefill_threshold
        toks, attn, n = 0, 0.0, 0
        running = self.prefilling[g]
        seats = self._seats(g)
        for r in list(running):
            if budget <= 0:
                break
            if r.state != PREFILL:  # preempted meanwhile to make room for an earlier one
                continue
            c = self._chunk(r, budget, thr, preempted)
            if c <= 0:
                break
            budget -= c
            toks, attn, n = toks + c, attn + self._advance(r, c, first), n + 1
        wait = self.waiting[g]
        if new_ok and not preempted:
            while wait and budget > 0 and seats > 0:
                r = wait[0]
                if r.computed == 0:
                    self._lookup(r)
                c = self._chunk(r, budget, thr, None)
                if c <= 0:  # no room: it waits, holding nothing (vLLM frees a lookup it cannot schedule)
                    if r.acquired:
                        self._free(r)
                    break
                wait.popleft()
                seats -= 1
                r.state = PREFILL
                running.append(r)
                if self.order is not None:
                    self.order[g].append(r)
                budget -= c
                toks, attn, n = toks + c, attn + self._advance(r, c, first), n + 1
            if wait and self.cfg.prefill_interval > 1:
                self._capacity_bound = True
        return toks, attn, n

    def _chunk(self, r: Req, budget: int, thr: int, preempted: list[int] | None) -> int:
        """Tokens the request prefills this step. A running request (``preempted`` given) makes KV room by
        preempting later-scheduled ones, as vLLM does; a waiting one that does not fit waits (0)."""
        c = min(r.target - r.computed, budget)
        if 0 < thr < c:
            c = thr
        if c <= 0:
            return 0
        if self.cap is not None:
            while not self._room(r.g, c):
                order = self.order[r.g]
                if preempted is None or not order or order[-1] is r:
                    return 0
                victim, was_decoding = self._preempt(r.g)
                if was_decoding:
                    preempted.append(victim.rid)
        return c

    def _advance(self, r: Req, c: int, first: list[Req]) -> float:
        """The request computes c more tokens; returns their attention pairs. A finished prompt samples a token."""
        g = r.g
        before = r.computed
        r.computed = before + c
        if self.kvt:
            r.kv += c
            self.kv_private[g] += c
        r.left -= c
        self.pending[g] -= c
        if r.computed >= r.target:
            self.prefilling[g].remove(r)
            self._prefilled(r, first)
        return c * (before + (c + 1) / 2.0)
