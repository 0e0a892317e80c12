"""BalanceRoute (arXiv 2605.06113): BR-0 and BR-H, SPEC §3.1–§3.2.

Both share one two-stage driver and differ only in the score of admitting Δ tokens to worker g:

- BR-0: F_g(Δ) = Δ − β·(Δ − m_g)₊ with m_g = M − L_g (the exact one-step reduction of G·M − ΣL for β = G).
- BR-H: F_g(Δ) = α·Δ·Σ_h d_h − β·Σ_h d_h·(Δ − m_{g,h})₊ over projected margins m_{g,h} = M_h − L[h, g],
  h = 0..H, d_h = γ^h. Evaluated in O(log H) per query from sorted margins and prefix sums.

F depends on a subset only through Δ = Σ s_i and is concave, so its maximiser Δ* is a breakpoint (m_g for
BR-0) and subset search reduces to reachable subset sums.

Driver, per dispatch:
1. Stage 1, while total free slots > ``s_greedy``: the worker with most free slots (ties: lowest load)
   takes the single request of the first ``window`` pool entries with the highest F.
2. Stage 2: a heap of workers with free slots (key: lowest load, or (free desc, margin desc)); the popped
   worker takes the best subset of the first ``r_max`` waiting requests with |Q| ≤ its free slots —
   ``max_count`` (the BF-IO authors' rule: most requests whose sum stays ≤ Δ*, then the largest such sum)
   or ``max_f`` (the subset with the highest F). If nothing scores F > 0 it still takes the single best
   request (anti-starvation), so no free slot is left idle while requests wait and none waits forever.

An aging guard (``max_wait_s``, off by default) admits requests that have waited longer first, so waits are
bounded even when a large prompt never scores well. It costs balance: on mooncake-conversation (saturated,
G = 8) ``max_wait_s=60`` caps the worst wait at 60 s (185 s without) but raises max–min from 13.9k to 25.5k.

Two published configurations (``preset``): ``bfio-code`` (the BF-IO authors' H0 strategy: r_max = the
visible pool (32), exact-cardinality subset-sum DP, lowest-load worker heap, max_count) and ``paper``
(BalanceRoute as published: r_max = 4 enumerated, (free, margin) worker key, max_f).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..core.snapshot import Assignment, Snapshot
from ..predictors import make_predictor
from .base import POLICIES, PolicyContext

PRESETS = {
    "bfio-code": {"r_max": 32, "worker_key": "load", "subset_rule": "max_count"},
    "paper": {"r_max": 4, "worker_key": "free_margin", "subset_rule": "max_f"},
}


@dataclass(frozen=True)
class BR0Config:
    preset: Literal["bfio-code", "paper"] = field(
        default="bfio-code", metadata={"doc": "published configuration the unset knobs below come from"})
    s_greedy: int = field(default=7, metadata={"doc": "Stage 1 runs while total free slots exceed this"})
    window: int = field(default=1024, metadata={"doc": "Stage 1 scans the first `window` pool requests"})
    r_max: int | None = field(default=None, metadata={"doc": "Stage 2 candidates: the first r_max pool requests (preset: 32 / 4)"})
    worker_key: Literal["load", "free_margin"] | None = field(
        default=None, metadata={"doc": "Stage 2 worker order: lowest load, or most free slots then largest margin"})
    subset_rule: Literal["max_count", "max_f"] | None = field(
        default=None, metadata={"doc": "Stage 2 subset choice (preset: max_count / max_f)"})
    beta: float | None = field(default=None, metadata={"doc": "overflow penalty β (default G, the exact one-step slope)"})
    dp_buckets: int = field(default=4096, metadata={"doc": "subset-sum DP resolution in buckets of Δ* (0 = exact tokens)"})
    max_wait_s: float | None = field(
        default=None, metadata={"doc": "requests waiting longer are admitted first, where F is highest (none = off)"})

    def __post_init__(self):
        if self.s_greedy < 0 or self.window < 1 or (self.r_max is not None and self.r_max < 1):
            raise ValueError("need s_greedy >= 0, window >= 1, r_max >= 1")
        if self.beta is not None and self.beta < 0:
            raise ValueError("beta must be >= 0")
        if self.dp_buckets < 0:
            raise ValueError("dp_buckets must be >= 0")

    def resolved(self):
        preset = PRESETS[self.preset]
        return (self.r_max or preset["r_max"], self.worker_key or preset["worker_key"],
                self.subset_rule or preset["subset_rule"])


@dataclass(frozen=True)
class BRHConfig(BR0Config):
    predictor: Literal["oracle", "survival", "exact_match"] = field(
        default="oracle", metadata={"doc": "output-length predictor giving ĉ = E[min(r, H)]"})
    noise: float = field(default=0.0, metadata={"doc": "oracle only: multiplicative error δ"})
    # defaults = the best oracle setting of the search in docs/algorithms.md (the paper's is H=80, γ=0.9)
    H: int = field(default=8, metadata={"doc": "lookahead horizon in decode steps"})
    alpha: float = field(default=1.0, metadata={"doc": "reward weight α"})
    gamma: float = field(default=0.8, metadata={"doc": "discount d_h = γ^h"})
    growth: bool = field(default=False, metadata={"doc": "projected loads grow +1 per step (w_i + h)"})

    def __post_init__(self):
        super().__post_init__()
        if self.H < 0 or not 0 < self.gamma <= 1 or self.alpha <= 0:
            raise ValueError("need H >= 0, 0 < gamma <= 1, alpha > 0")


# ----------------------------------------------------------------------------------------- scorers
class _Br0Scorer:
    """F_g(Δ) = Δ − β(Δ − m_g)₊ on the current loads."""

    def __init__(self, beta: float):
        self.beta = beta

    def begin(self, snap: Snapshot) -> None:
        self.L = snap.loads.astype(np.float64)
        self.M = float(self.L.max())

    def prepare(self, g: int) -> None:
        self.m = self.M - self.L[g]

    def f(self, delta):
        return delta - self.beta * np.maximum(delta - self.m, 0.0)

    def target(self) -> float:
        return self.m if self.beta > 1.0 else math.inf

    def assign(self, g: int, s: float) -> None:
        self.L[g] += s
        if self.L[g] > self.M:
            self.M = self.L[g]

    def load(self) -> np.ndarray:
        return self.L


class _BrhScorer:
    """Horizon-discounted F over projected loads L[h, g] (h = 0..H)."""

    def __init__(self, cfg: BRHConfig, beta: float, predictor, G: int):
        self.cfg = cfg
        self.beta = beta
        self.alpha = cfg.alpha
        self.H = cfg.H
        self.G = G
        self.d = cfg.gamma ** np.arange(cfg.H + 1)
        self.D = float(self.d.sum())
        self.predictor = predictor
        self.hh = np.arange(cfg.H + 1, dtype=np.float64)

    def project(self, snap: Snapshot) -> np.ndarray:
        """L[h, g]: request i counts at horizon h while h < ĉ_i, with load w_i (+h if growth)."""
        H, G = self.H, self.G
        av = snap.active
        if len(av) == 0:
            return np.zeros((H + 1, G))
        c_hat, _, _ = self.predictor.predict(av.age, av.key, av.limit, H, rid=av.request_id)
        # horizon steps h = 0..c−1 it still counts; ĉ = E[min(r, H)] reaching H means "outlives the horizon"
        c = np.where(c_hat >= H, H + 1, np.clip(np.ceil(c_hat), 1, H)).astype(np.int64)
        idx = c * G + av.worker
        size = (H + 2) * G
        cnt = np.bincount(idx, minlength=size).reshape(H + 2, G)
        lsum = np.bincount(idx, weights=av.load.astype(np.float64), minlength=size).reshape(H + 2, G)
        rc = np.cumsum(cnt[::-1], axis=0)[::-1]  # rc[h] = #requests with c >= h
        rl = np.cumsum(lsum[::-1], axis=0)[::-1]
        L = rl[1:]  # alive at h  <=>  c >= h + 1
        if self.cfg.growth:
            L = L + self.hh[:, None] * rc[1:]
        return L

    def begin(self, snap: Snapshot) -> None:
        self.Lh = self.project(snap)
        self.Mh = self.Lh.max(axis=1)
        self.L = self.Lh[0]  # view: current loads

    def prepare(self, g: int) -> None:
        m = np.maximum(self.Mh - self.Lh[:, g], 0.0)
        order = np.argsort(m, kind="stable")
        self.ms = m[order]
        ds = self.d[order]
        self.Pd = np.concatenate(([0.0], np.cumsum(ds)))
        self.Pdm = np.concatenate(([0.0], np.cumsum(ds * self.ms)))
        # Δ*: F grows on (ms[j-1], ms[j]] while α·D − β·Pd[j] > 0
        slope = self.alpha * self.D - self.beta * self.Pd[1:]
        j = int(np.argmax(slope <= 0)) if np.any(slope <= 0) else -1
        self._target = math.inf if j < 0 else float(self.ms[j])

    def f(self, delta):
        delta = np.asarray(delta, dtype=np.float64)
        idx = np.searchsorted(self.ms, delta, side="left")  # margins strictly below Δ
        return self.alpha * self.D * delta - self.beta * (delta * self.Pd[idx] - self.Pdm[idx])

    def target(self) -> float:
        return self._target

    def assign(self, g: int, s: float) -> None:
        col = self.Lh[:, g]
        col += s
        np.maximum(self.Mh, col, out=self.Mh)

    def load(self) -> np.ndarray:
        return self.L


# ----------------------------------------------------------------------------------------- subsets
_MASKS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _subset_masks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All non-empty subsets of n items as a 0/1 matrix [2^n − 1, n] and their sizes."""
    if n not in _MASKS:
        codes = np.arange(1, 1 << n)
        m = ((codes[:, None] >> np.arange(n)) & 1).astype(np.float64)
        _MASKS[n] = (m, m.sum(1))
    return _MASKS[n]


def _dp_max_count(sizes: np.ndarray, cap: float, K: int, buckets: int) -> list[int] | None:
    """Most items (≤ K) whose sum is ≤ cap, then the largest such sum; exact-cardinality bitset DP.

    Sizes are rounded *up* to a grid of cap/buckets so a found subset never exceeds cap."""
    ok = np.flatnonzero(sizes <= cap)
    if len(ok) == 0:
        return None
    q = 1.0 if buckets == 0 or cap <= buckets else cap / buckets
    sz = np.ceil(sizes[ok] / q).astype(np.int64).tolist()
    T = int(math.floor(cap / q + 1e-9))
    mask = (1 << (T + 1)) - 1
    K = min(K, len(sz))
    reach = [1] + [0] * K
    hist = []
    for s in sz:
        for k in range(K, 0, -1):
            prev = reach[k - 1]
            if prev:
                reach[k] |= (prev << s) & mask
        hist.append(reach[:])
    for k in range(K, 0, -1):
        if reach[k]:
            t = reach[k].bit_length() - 1
            chosen, kk = [], k
            for i in range(len(sz) - 1, -1, -1):
                before = hist[i - 1] if i > 0 else [1] + [0] * K
                if (before[kk] >> t) & 1:
                    continue
                chosen.append(int(ok[i]))
                t -= sz[i]
                kk -= 1
                if kk == 0:
                    break
            return chosen
    return None


# ----------------------------------------------------------------------------------------- policy
class BalanceRoute:
    """The two-stage driver (see the module docstring)."""

    def __init__(self, cfg: BR0Config, ctx: PolicyContext, scorer):
        self.cfg = cfg
        self.G = ctx.workers
        self.r_max, self.worker_key, self.subset_rule = cfg.resolved()
        self.scorer = scorer

    def dispatch(self, snap: Snapshot) -> list[Assignment]:
        free = snap.free.copy()
        total_free = int(free.sum())
        n_pool = snap.pool_size
        if total_free == 0 or n_pool == 0:
            return []
        cfg = self.cfg
        ids = snap.pool_ids
        sizes = snap.pool_prompt.astype(np.float64)
        sc = self.scorer
        sc.begin(snap)
        L = sc.load()
        taken = np.zeros(n_pool, dtype=bool)
        left = n_pool
        out: list[Assignment] = []
        win = min(cfg.window, n_pool)

        # Aging guard: overdue requests (a FIFO prefix of the pool) go first, each where F is highest,
        # so no request waits much longer than max_wait_s however the scores fall.
        if cfg.max_wait_s is not None:
            overdue = int(np.searchsorted(snap.pool_arrival, snap.now - cfg.max_wait_s, side="right"))
            for i in range(min(overdue, total_free)):
                ws = np.flatnonzero(free > 0)
                best, g = -np.inf, -1
                for w in ws.tolist():
                    sc.prepare(w)
                    f = float(sc.f(sizes[i]))
                    if f > best:
                        best, g = f, w
                self._take(out, ids, sizes, taken, i, g, free, sc)
                left -= 1
                total_free -= 1
            if total_free == 0 or left == 0:
                return out

        # Stage 1: greedy while capacity is abundant
        if total_free > cfg.s_greedy:
            cand = sizes[:win].copy()
            while left and total_free > cfg.s_greedy:
                best_free = free.max()
                ws = np.flatnonzero(free == best_free)
                g = int(ws[np.argmin(L[ws])]) if len(ws) > 1 else int(ws[0])
                sc.prepare(g)
                score = sc.f(cand)
                score[taken[:win]] = -np.inf
                i = int(np.argmax(score))
                if not np.isfinite(score[i]):  # window exhausted; slide it
                    rest = np.flatnonzero(~taken)
                    if len(rest) == 0:
                        break
                    win = min(n_pool, int(rest[0]) + cfg.window)
                    cand = sizes[:win].copy()
                    continue
                self._take(out, ids, sizes, taken, i, g, free, sc)
                left -= 1
                total_free -= 1

        # Stage 2: priority queue of workers + best subset of the first r_max waiting requests
        if left and total_free:
            heap = [(self._key(g, free, L), g) for g in np.flatnonzero(free > 0).tolist()]
            heapq.heapify(heap)
            while heap and left:
                _, g = heapq.heappop(heap)
                pos = np.flatnonzero(~taken)[: self.r_max]
                sc.prepare(g)
                chosen = self._choose(sizes[pos], int(free[g]), sc)
                for j in chosen:
                    self._take(out, ids, sizes, taken, int(pos[j]), g, free, sc)
                left -= len(chosen)
                if free[g] > 0 and left:
                    heapq.heappush(heap, (self._key(g, free, L), g))
        return out

    def _key(self, g: int, free: np.ndarray, L: np.ndarray):
        if self.worker_key == "load":
            return (L[g], g)
        return (-int(free[g]), L[g], g)  # most free slots, then largest margin (= lowest load)

    @staticmethod
    def _take(out, ids, sizes, taken, i, g, free, sc) -> None:
        taken[i] = True
        out.append(Assignment(int(ids[i]), g))
        free[g] -= 1
        sc.assign(g, sizes[i])

    def _choose(self, s: np.ndarray, K: int, sc) -> list[int]:
        """Indices into ``s`` of the subset to admit (never empty when s is non-empty)."""
        n = len(s)
        if n == 0 or K <= 0:
            return []
        K = min(K, n)
        target = sc.target()
        chosen: list[int] | None = None
        if K == 1:
            if self.subset_rule == "max_count":
                fit = np.flatnonzero(s <= target)
                chosen = [int(fit[np.argmax(s[fit])])] if len(fit) else None
            else:
                f = sc.f(s)
                i = int(np.argmax(f))
                chosen = [i] if f[i] > 0 else None
        elif n <= 12:
            masks, counts = _subset_masks(n)
            ok = counts <= K
            sums = masks[ok] @ s
            cnt = counts[ok]
            if self.subset_rule == "max_count":
                fit = np.flatnonzero(sums <= target)
                if len(fit):
                    j = fit[np.lexsort((sums[fit], cnt[fit]))[-1]]
                    chosen = np.flatnonzero(masks[ok][j]).tolist()
            else:
                f = sc.f(sums)
                j = int(np.lexsort((cnt, f))[-1])  # highest F, then most requests
                if f[j] > 0:
                    chosen = np.flatnonzero(masks[ok][j]).tolist()
        else:
            if math.isinf(target):  # F only grows: the K largest
                chosen = np.argsort(-s, kind="stable")[:K].tolist()
            elif self.subset_rule == "max_count":
                chosen = _dp_max_count(s, target, K, self.cfg.dp_buckets)
            else:
                best = _dp_max_count(s, target, K, self.cfg.dp_buckets)
                # compare with the best single above the target (the smallest overflow)
                above = np.flatnonzero(s > target)
                alt = [int(above[np.argmin(s[above])])] if len(above) else None
                cands = [c for c in (best, alt) if c]
                if cands:
                    fs = [float(sc.f(s[c].sum())) for c in cands]
                    j = int(np.argmax(fs))
                    chosen = cands[j] if fs[j] > 0 else None
        if not chosen:  # anti-starvation: the single best request by F
            chosen = [int(np.argmax(sc.f(s)))]
        return chosen


@POLICIES.register("br0", config=BR0Config, summary="BalanceRoute BR-0: F = Δ − β(Δ − m_g)₊, greedy + subset stages")
def make_br0(cfg: BR0Config, ctx: PolicyContext) -> BalanceRoute:
    return BalanceRoute(cfg, ctx, _Br0Scorer(float(cfg.beta if cfg.beta is not None else ctx.workers)))


def brh_scorer(cfg: BRHConfig, ctx: PolicyContext) -> _BrhScorer:
    """The horizon scorer with its predictor (fitted on ctx.train) and β (default G); BR-H and BF-IO share it."""
    spec = cfg.predictor + (f":noise={cfg.noise},seed={ctx.seed}" if cfg.predictor == "oracle" and cfg.noise else "")
    beta = float(cfg.beta if cfg.beta is not None else ctx.workers)
    return _BrhScorer(cfg, beta, make_predictor(spec, train=ctx.train), ctx.workers)


@POLICIES.register("brh", config=BRHConfig, summary="BalanceRoute BR-H: horizon-discounted F over predicted loads")
def make_brh(cfg: BRHConfig, ctx: PolicyContext) -> BalanceRoute:
    return BalanceRoute(cfg, ctx, brh_scorer(cfg, ctx))


def f_score(delta: float, margin: float, G: int, beta: float | None = None) -> float:
    """BR-0's F for one admission (exposed for tests and docs)."""
    b = G if beta is None else beta
    return delta - b * max(delta - margin, 0.0)


__all__ = ["BR0Config", "BRHConfig", "BalanceRoute", "f_score", "make_br0", "make_brh"]


from . import bfio as _bfio  # noqa: E402,F401  (registers the BF-IO policy beside its BR-H machinery)
