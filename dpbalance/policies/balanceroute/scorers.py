"""How good it is to add Δ prompt tokens to worker g: the F-scores of BR-0 and BR-H.

A scorer is configured once (β, horizon, predictor); ``prepare(snapshot)`` gives the ``Round`` of one dispatch,
which answers questions about every worker and is told each admission (``add``), so later answers see the new
loads and envelope.

- BR-0: F_g(Δ) = Δ − β·(Δ − m_g)₊, m_g = M − L_g. With β = G this is exactly how much the admission reduces the
  imbalance gap G·M − Σ L at the coming step. Its best Δ (the target) is m_g.
- BR-H: the same over the next H steps with discount d_h = γ^h, on projected loads L[h, g]:
  F_g(Δ) = α·D·Δ − Σ_h β_h·d_h·(Δ − m_{g,h})₊, D = Σ_h d_h, m_{g,h} = M_h − L[h, g].
  β_0 = β (the coming step, as in BR-0); the later, predicted steps use β_f = min(β, θ·α·D / (D − 1)), so a
  predicted overflow can lower a worker's target but never drive it to zero while the coming step has room
  (the collapse that made BR-H admit only the smallest prompts at large G). With H = 0 it is BR-0 exactly.
  Projection: L[h, g] = Σ_i P(i alive at h)·(w_i + h·growth) from the predictor's survival probabilities (no hard
  finish steps), plus, when more requests wait than slots are free, the expected load of the requests that will
  refill the slots freed by then (so a margin that a finish opens is not counted twice).
F is evaluated in O(log H) per query from the worker's sorted margins and prefix sums of β_h·d_h and β_h·d_h·m.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from ...core.snapshot import Snapshot


class Round(Protocol):
    """One dispatch's view of the scores, made by ``Scorer.prepare`` from the snapshot: the driver asks any mix of
    the queries below and tells it every admission (``add`` / ``add_many``), so later answers see the new loads."""

    #: [G] loads at the coming step, including this dispatch's admissions
    load: np.ndarray
    #: for one request the best worker is always the lightest with room (the driver may place with a heap of loads)
    lightest_is_best: bool
    #: a worker's best single request is the largest within its margin (the driver may bisect sorted candidates)
    margin_target: bool

    def scores(self, delta: float) -> np.ndarray:
        """F_g(Δ) for every worker g, [G]."""

    def score(self, g: int, delta: np.ndarray) -> np.ndarray:
        """F_g(Δ) for one worker over many Δ."""

    def target(self, g: int) -> float:
        """Δ*_g = argmax_Δ F_g(Δ) (inf when F never stops growing)."""

    def add(self, g: int, delta: float) -> None:
        """Worker g was given Δ more tokens."""

    def add_many(self, workers: np.ndarray, deltas: np.ndarray) -> None:
        """``add`` for a batch of admissions (in this order)."""


class Scorer(Protocol):
    """A BalanceRoute score, configured once (β, horizon, predictor) and prepared once per dispatch."""

    def prepare(self, snap: Snapshot) -> Round:
        """The round of one dispatch, from the snapshot's loads (and active requests, for the horizon)."""


class Br0Scorer:
    """F_g(Δ) = Δ − β·(Δ − m_g)₊ on the coming step's loads."""

    def __init__(self, beta: float):
        self.beta = float(beta)

    def prepare(self, snap: Snapshot) -> Br0Round:
        return Br0Round(snap.loads.astype(np.float64), self.beta)


class Br0Round:
    lightest_is_best = True

    def __init__(self, load: np.ndarray, beta: float):
        self.load = load
        self.M = float(load.max())
        self.beta = beta
        self.margin_target = beta >= 1.0

    def scores(self, delta: float) -> np.ndarray:
        return delta - self.beta * np.maximum(delta - (self.M - self.load), 0.0)

    def score(self, g: int, delta) -> np.ndarray:
        delta = np.asarray(delta, dtype=np.float64)
        return delta - self.beta * np.maximum(delta - (self.M - self.load[g]), 0.0)

    def target(self, g: int) -> float:
        return self.M - self.load[g] if self.beta >= 1.0 else math.inf

    def add(self, g: int, delta: float) -> None:
        v = self.load[g] + delta
        self.load[g] = v
        if v > self.M:
            self.M = v

    def add_many(self, workers: np.ndarray, deltas: np.ndarray) -> None:
        self.load += np.bincount(workers, weights=deltas, minlength=len(self.load))
        self.M = max(self.M, float(self.load.max()))


def future_beta(beta: float, alpha: float, d: np.ndarray, theta: float = 0.9) -> float:
    """β_f: the penalty weight of predicted steps h ≥ 1, capped so predicted overflows at every later step together
    stay below the reward (θ < 1): α·D·Δ − β_f·(D − 1)·Δ > 0, so a worker with room now keeps a positive target."""
    D = float(d.sum())
    rest = D - float(d[0])
    return beta if rest <= 0 else min(beta, theta * alpha * D / rest)


class BrhScorer:
    """Horizon-discounted F over projected loads (see the module docstring)."""

    def __init__(
        self, *, H: int, alpha: float, beta: float, gamma: float, growth: bool, refill: bool, predictor, workers: int
    ):
        self.H, self.alpha, self.growth, self.refill = H, float(alpha), growth, refill
        self.G = workers
        self.predictor = predictor
        self.d = gamma ** np.arange(H + 1, dtype=np.float64)
        self.D = float(self.d.sum())
        self.bd = self.d * future_beta(beta, alpha, self.d)  # β_h·d_h
        self.bd[0] = beta * self.d[0]
        self.hh = np.arange(H + 1, dtype=np.float64)

    # ------------------------------------------------------------------ projection
    def project(self, snap: Snapshot) -> np.ndarray:
        """L[h, g] for h = 0..H (row 0 is the coming step: today's loads)."""
        H, G = self.H, self.G
        L = np.zeros((H + 1, G))
        L[0] = snap.loads
        av = snap.active
        if H == 0 or len(av) == 0:
            return L
        alive = self.predictor.alive(av.age, av.key, av.limit, H, rid=av.request_id)[:, 1:]  # [n, H]
        w = av.load.astype(np.float64)
        contrib = alive * w[:, None]
        if self.growth:
            contrib += alive * self.hh[None, 1:]
        if self.refill and snap.pool_size > snap.total_free:
            contrib += (1.0 - alive) * float(np.mean(snap.pool_prompt))
        for h in range(H):
            L[h + 1] = np.bincount(av.worker, weights=contrib[:, h], minlength=G)
        return L

    def prepare(self, snap: Snapshot) -> BrhRound:
        return BrhRound(self, self.project(snap))


class BrhRound:
    """One dispatch of the horizon score: projected loads and the envelope at every step of the horizon."""

    lightest_is_best = False
    margin_target = False

    def __init__(self, sc: BrhScorer, Lh: np.ndarray):
        self.alpha, self.D, self.bd = sc.alpha, sc.D, sc.bd
        self.Lh = Lh
        self.Mh = Lh.max(axis=1)
        self.load = Lh[0]
        self._cache: dict[int, tuple] = {}

    def _sorted(self, g: int):
        c = self._cache.get(g)
        if c is None:
            m = np.maximum(self.Mh - self.Lh[:, g], 0.0)
            order = np.argsort(m, kind="stable")
            ms = m[order]
            bd = self.bd[order]
            c = (ms, np.concatenate(([0.0], np.cumsum(bd))), np.concatenate(([0.0], np.cumsum(bd * ms))))
            self._cache[g] = c
        return c

    def score(self, g: int, delta) -> np.ndarray:
        delta = np.asarray(delta, dtype=np.float64)
        ms, Pb, Pbm = self._sorted(g)
        k = np.searchsorted(ms, delta, side="left")  # margins strictly below Δ overflow
        return self.alpha * self.D * delta - (delta * Pb[k] - Pbm[k])

    def scores(self, delta: float) -> np.ndarray:
        m = np.maximum(self.Mh[:, None] - self.Lh, 0.0)  # [H+1, G]
        return self.alpha * self.D * delta - (self.bd[:, None] * np.maximum(delta - m, 0.0)).sum(axis=0)

    def target(self, g: int) -> float:
        ms, Pb, _ = self._sorted(g)
        # F grows on (ms[j-1], ms[j]] while α·D − Σ_{first j margins} β_h·d_h > 0
        stop = np.flatnonzero(self.alpha * self.D - Pb[1:] <= 0)
        return float(ms[stop[0]]) if len(stop) else math.inf

    def add(self, g: int, delta: float) -> None:
        col = self.Lh[:, g]
        col += delta
        before = self.Mh.copy()
        np.maximum(self.Mh, col, out=self.Mh)
        if np.array_equal(before, self.Mh):
            self._cache.pop(g, None)
        else:
            self._cache.clear()

    def add_many(self, workers: np.ndarray, deltas: np.ndarray) -> None:
        for g, d in zip(workers.tolist(), deltas.tolist()):
            self.add(g, d)
