"""BRP: BalanceRoute with prefill at the barrier. BR-0 balances the decode load every rank carries into
the coming step; when ranks also prefill, a placement's cost at the barrier is its decode load *plus the prefill it
leaves to compute there* — the prompt minus what that rank already caches — on top of the prefill already queued
there. BRP scores exactly that work and places each request where it raises the barrier least.

Work, in KV-token units of the step-time model (seconds / ``t_tok``):

    W_g      = L_g + w · c_pend · P_g / t_tok                         (decode load + queued prefill of rank g)
    Δ_{i,g}  = s_i + w · τ(miss_{i,g}, hit_{i,g}) / t_tok              (request i's load + the prefill left on g)
    τ(m, h)  = prefill_tok · m + prefill_attn · m · (h + m / 2)         (its tokens, each attending to its context)
    cost_{i,g} = β · (W_g + Δ_{i,g} − M)₊ + λ · Δ_{i,g} + μ · w · c_pend · P_g / t_tok,  M = max_g W_g

``miss = s − cached`` (``PrefixView.cached``), ``P_g`` the rank's pending prefill tokens and ``c_pend`` their mean
cost per token (``prefill_tok`` + ``prefill_attn`` · half the batch's mean prompt). The prices ``t_tok``,
``prefill_tok`` and ``prefill_attn`` are the deployment's (``PolicyContext.costs``: the simulator's step-time model,
``serve --step-time``), or the default model's when it gives none; the config can set each. The first term is BR-0's
overflow: raising the envelope stalls all G ranks (β = G by default, as BR-0). The second is the work itself,
which some rank must spend however the batch is spread: a cache hit that does not raise the envelope always wins,
a hit on a rank that would overflow wins only while the overflow, paid G times, costs less than the prefill it
saves (λ = ``work_weight``). The third term is the request's own wait: the prefill queued ahead of it on that rank
(μ = ``wait_weight``, 0.3 by default, chosen on the training grid; with 0 a hit below the envelope wins however
long the queue ahead of it is).
``w`` (``prefill_weight``) scales prefill against decode: 1 counts a prefill token as what it costs in the step it
runs in (≈1,000 KV tokens with the default prices); the step-time model's own ratio, kept after a training grid
(see docs/results/prefix_matrix.md).

One dispatch places the oldest waiting requests that have a free slot (FIFO admission, except the bounded affinity
wait below), largest work first, each on the worker with the lowest cost among those with a free slot whose KV
headroom holds its miss (all free ones if none does); ties: the lowest W. A request whose cheapest rank (over all
ranks) has no free slot and caches more of its prompt than every free rank is held for it (``affinity_wait_s``,
bounded: that long after the first dispatch that held it, it goes to the best free rank) rather than recomputing its
prefix elsewhere; a full rank that is only less loaded is never waited for (a free slot left idle costs more than
the balance it would buy), nor is a closed one (slot cap 0: the router drains an unhealthy rank). The bound counts
from the first hold, not from the request's arrival: under overload every request has queued in the pool longer
than any fixed bound by the time a slot frees, and counting from arrival turned the wait off exactly when the
ranks were busiest (on the testbed's prices the simulator then gave up 9 points of hit rate to sglang-router's
rule; see docs/results/prefix_matrix.md).
``ttft_slo`` (seconds, off by default): a request whose estimated first token (its wait so far + the rank's queued
prefill seconds + its own) would miss the target on some ranks goes to a rank that meets it, or, if none does, to
the rank with the earliest estimate.

**Reduction to BR-0.** Without a prefix view, or when the ranks do not model prefill (``PrefixView.prefill``
False: prompts cost nothing, so there is nothing to weigh), or with ``prefill_weight`` 0, BRP *is* BR-0: it hands
the snapshot to a BR-0 built from the same BalanceRoute settings, so its decisions are BR-0's exactly (tested on
random snapshots). It does the same for a dispatch in which none of the requests it would place has a cached
prefix on any rank: every rank would prefill the whole prompt, so where it goes cannot change the prefill work,
and BR-0's placement (and its choice of which requests to admit when slots are scarce) stands. Traffic without
shared prefixes is therefore routed exactly as BR-0 routes it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ...core.config import setting
from ...core.costs import DEFAULT_COSTS, StepCosts
from ...core.snapshot import Assignments, Snapshot
from ..balanceroute import BR0Config, make_br0
from ..base import NONE, Policy, PolicyContext


@dataclass(frozen=True)
class BrpConfig(BR0Config):
    prefill_weight: float = setting(
        1.0, "w: weight of prefill work against decode load (1: a prefill token costs what it does in its step)"
    )
    work_weight: float = setting(1.0, "λ: weight of the work a placement adds, against β on the envelope it raises")
    prefill_tok: float | None = setting(
        None, "seconds per prompt token prefilled (default: the deployment's step-time model's)"
    )
    prefill_attn: float | None = setting(
        None, "seconds per prompt token per context token (default: the deployment's step-time model's)"
    )
    t_tok: float | None = setting(
        None, "seconds per KV token of decode load per step (default: the deployment's step-time model's)"
    )
    wait_weight: float = setting(
        0.3, "μ: weight of the prefill queued ahead of the request on a rank (its own wait), against λ", min=0.0
    )
    ttft_slo: float | None = setting(None, "target seconds to first token (none: off)")
    affinity_wait_s: float = setting(
        30.0,
        "a request whose cheapest rank has no free slot and caches more of its prompt than every free rank waits "
        "for it up to this long (from when it is first held, not from its arrival), instead of recomputing its "
        "prefix elsewhere (0: never waits)",
        min=0.0,
    )

    def __post_init__(self):
        super().__post_init__()
        if self.prefill_weight < 0 or self.work_weight < 0:
            raise ValueError("need prefill_weight >= 0 and work_weight >= 0")
        if (self.t_tok is not None and self.t_tok <= 0) or any(
            x is not None and x < 0 for x in (self.prefill_tok, self.prefill_attn)
        ):
            raise ValueError("need t_tok > 0, prefill_tok >= 0 and prefill_attn >= 0")
        if self.ttft_slo is not None and self.ttft_slo <= 0:
            raise ValueError("ttft_slo must be > 0 (or none)")

    def br0(self) -> BR0Config:
        """The BR-0 settings this config carries (what BRP reduces to)."""
        return BR0Config(**{f.name: getattr(self, f.name) for f in fields(BR0Config)})

    def costs(self, deployment: StepCosts | None) -> StepCosts:
        """The prices BRP weighs: each one this config sets, else the deployment's, else the defaults."""
        base = deployment or DEFAULT_COSTS
        return StepCosts(
            t_tok=base.t_tok if self.t_tok is None else self.t_tok,
            prefill_tok=base.prefill_tok if self.prefill_tok is None else self.prefill_tok,
            prefill_attn=base.prefill_attn if self.prefill_attn is None else self.prefill_attn,
        )


class BrpPolicy(Policy):
    def __init__(self, cfg: BrpConfig, ctx: PolicyContext):
        self.cfg = cfg
        self.costs = cfg.costs(ctx.costs)
        self.k = cfg.prefill_weight / self.costs.t_tok  # prefill seconds -> KV-token units of decode load
        self.G = ctx.workers
        self.beta = float(cfg.beta if cfg.beta is not None else ctx.workers)
        self.window = cfg.window
        self.br0 = make_br0(cfg.br0(), ctx)
        self._held: dict[int, float] = {}  # request id -> when a dispatch first held it for its caching rank

    def dispatch(self, snap: Snapshot) -> Assignments:
        v = snap.prefix
        if v is None or not getattr(v, "prefill", True) or self.cfg.prefill_weight == 0:
            return self.br0.dispatch(snap)
        n = min(snap.pool_size, snap.total_free, self.window) if snap.pool_size else 0
        if n <= 0:
            return NONE
        return self._place(snap, v, n)

    def _costs(self, snap: Snapshot, v, n: int):
        pc = self.costs
        s = snap.pool_prompt[:n].astype(np.float64)
        hit = np.minimum(np.asarray(v.cached(snap.pool_ids[:n]), dtype=np.float64), s[:, None])
        miss = s[:, None] - hit
        tau = pc.prefill_s(miss, hit)  # [n, G] seconds
        k = self.k
        delta = s[:, None] + k * tau
        c_pend = pc.prefill_tok + pc.prefill_attn * 0.5 * float(s.mean())
        pend_s = np.asarray(v.pending_prefill, dtype=np.float64) * c_pend  # queued prefill seconds per rank
        W = snap.loads.astype(np.float64) + k * pend_s
        return s, miss, tau, delta, pend_s, W

    def _place(self, snap: Snapshot, v, n: int) -> Assignments:
        cfg = self.cfg
        s, miss, tau, delta, pend_s, W = self._costs(snap, v, n)
        if not (miss < s[:, None]).any():  # nothing cached anywhere: placement cannot change the prefill work
            return self.br0.dispatch(snap)
        free = snap.free.astype(np.int64).tolist()
        kvf = np.asarray(v.kv_free, dtype=np.float64).copy()
        kv_bounded = bool(np.isfinite(kvf).any())  # unlimited KV: every free rank has room
        wait, slo = snap.now - snap.pool_arrival[:n], cfg.ttft_slo
        out = np.empty(n, dtype=np.int64)
        beta, lam, mu, k, hold = self.beta, cfg.work_weight, cfg.wait_weight, self.k, cfg.affinity_wait_s
        placed = np.ones(n, dtype=bool)
        now, rid = snap.now, snap.pool_ids[:n].tolist()
        closed = snap.caps <= 0
        held: dict[int, float] = {}  # request id -> when a dispatch first held it, for the requests held in this one
        okmask = snap.free > 0  # the ranks with a free slot (free[g] > 0) as they fill, and their indices next
        okidx = np.flatnonzero(okmask)
        w_max = float(W.max())  # W only grows: its maximum is kept as it grows
        # every request's cost on every rank, kept current as placements change W: rank-major ([G, n]), so that
        # the column of the rank a placement changes is one contiguous row
        delta_t = np.ascontiguousarray(delta.T)
        lam_delta = lam * delta_t
        mu_k = mu * k
        C = np.empty_like(delta_t)
        _price(C, W[:, None], delta_t, lam_delta, pend_s[:, None], w_max, beta, mu_k)
        order = np.argsort(-delta.min(axis=1), kind="stable")
        since = [self._held.get(r, now) for r in rid] if hold > 0 else None
        may_hold = now - np.array(since) < hold if hold > 0 else None
        pos = streak = 0  # streak: requests held in a row
        while pos < n:
            i = int(order[pos])
            pos += 1
            cost = C[:, i]
            # bounded affinity wait, counted from the first dispatch that held it (not from its arrival): only when
            # the cheapest rank of all is full and not closed (the cheap tests first: most requests stop there)
            if hold > 0 and 0 < len(okidx) < self.G and may_hold[i]:
                g = int(cost.argmin())
                if free[g] == 0 and not closed[g] and _waits_for_cache(cost, okidx, miss[i], g):
                    placed[i] = False
                    held[rid[i]] = since[i]
                    streak += 1
                    if streak == 4:  # nothing changes until a request is placed: check the run after it at once
                        j = pos + _leading_holds(C, order[pos:], okmask, okidx, closed, miss, may_hold)
                        for h in order[pos:j].tolist():
                            placed[h] = False
                            held[rid[h]] = since[h]
                        pos = j
                    continue
            streak = 0
            est = None if slo is None else wait[i] + pend_s + tau[i]
            g = self._choose(cost, okmask, okidx, miss[i], kvf if kv_bounded else None, est, W)
            out[i] = g
            W[g] += delta[i, g]
            pend_s[g] += tau[i, g]
            if W[g] > w_max:  # the envelope rose: every rank's overflow term changes
                w_max = float(W[g])
                _price(C, W[:, None], delta_t, lam_delta, pend_s[:, None], w_max, beta, mu_k)
            else:  # only rank g's column changes
                _price(C[g], W[g], delta_t[g], lam_delta[g], pend_s[g], w_max, beta, mu_k)
            kvf[g] -= miss[i, g]
            free[g] -= 1
            if free[g] == 0:
                okmask[g] = False
                okidx = okidx[okidx != g]
        self._remember(held, rid, now)
        return Assignments(snap.pool_ids[:n][placed], out[placed])

    def _choose(self, cost, ok, okidx, miss, kvf, est, W) -> int:
        """The rank a request goes to: the cheapest free rank (``ok``, as a mask and as ``okidx``) whose KV headroom
        (``kvf``, None: unlimited) holds its miss (all free ones if none does); with a TTFT target, one whose
        estimated first token (``est``, None without a target) meets it, else the earliest estimate; ties: the
        lowest W."""
        room = ok
        if kvf is not None:
            room = ok & (kvf >= miss)
            if not room.any():
                room = ok & (kvf >= kvf[okidx].max())
        if est is not None:
            meet = room & (est <= self.cfg.ttft_slo)
            if meet.any():
                room = meet
            else:
                cost = est
        if room is ok and len(okidx) == self.G:
            c, cand = cost, None
        else:
            cand = okidx if room is ok else np.flatnonzero(room)
            c = cost[cand]
        c_min = float(c.min())
        tie = np.flatnonzero(c <= c_min + 1e-9 * max(1.0, abs(c_min)))
        if len(tie) > 1:
            best = tie if cand is None else cand[tie]
            return int(best[np.argmin(W[best])])
        return int(tie[0]) if cand is None else int(cand[tie[0]])

    def _remember(self, held: dict[int, float], considered: list[int], now: float) -> None:
        """Keep when each held request was first held: the ones held now, and the ones held before that this
        dispatch did not consider (a smaller window) while their bound may still matter; the rest are forgotten
        (placed, gone, or no longer held)."""
        hold = self.cfg.affinity_wait_s
        if self._held:
            seen = set(considered)
            for r, t in self._held.items():
                if r not in seen and now - t < 2 * hold:
                    held.setdefault(r, t)
        self._held = held


def _waits_for_cache(cost: np.ndarray, okidx: np.ndarray, miss: np.ndarray, g: int) -> bool:
    """Whether a request waits for rank g, its cheapest over all ranks, full and not closed (the caller checks
    both): g caches more of the prompt than every free rank (``okidx``) and costs less than every free one (a rank
    only less loaded is never waited for)."""
    return bool(miss[g] < miss[okidx].min() and cost[g] < cost[okidx].min() - 1e-9)


def _leading_holds(C, rest, ok, okidx, closed, miss, may_hold) -> int:
    """How many of the requests ``rest`` (in order) are held, one after another, before the first that is not, in
    one pass over them all: ``_waits_for_cache`` on each request's cheapest rank, as the placement loop checks it
    one request at a time (nothing the check reads changes while requests are only held)."""
    if not len(rest):
        return 0
    Cr = C[:, rest]  # [G, m]
    g = Cr.argmin(axis=0)
    col = np.arange(len(rest))
    mr = miss[rest]  # [m, G]
    full = ~ok[g] & ~closed[g]
    w = may_hold[rest] & full & (mr[col, g] < mr[:, okidx].min(axis=1)) & (Cr[g, col] < Cr[okidx].min(axis=0) - 1e-9)
    return len(w) if w.all() else int(np.argmin(w))


def _price(C, W, delta, lam_delta, pend, w_max: float, beta: float, mu_k: float) -> None:
    """``C = β · (W + Δ − M)₊ + λΔ + μ·k·P`` in place: each column's request on each row's rank, for the whole matrix
    or one rank's row; the same operations in the same order either way, so both give the same numbers."""
    np.add(W, delta, out=C)
    C -= w_max
    np.maximum(C, 0.0, out=C)
    C *= beta
    C += lam_delta
    if mu_k:
        C += mu_k * pend
