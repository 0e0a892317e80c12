"""Simple baseline routers a user compares against: random, round-robin, power-of-two choices,
join-shortest-queue by count and by tokens, and the BF-IO paper's FCFS (the engines' own rules are in
``engine_rules``).

Every rule only places requests on workers with a free slot (the simulator rejects anything else)
and walks the pool in FIFO order unless its rule says otherwise.
"""

from __future__ import annotations

import numpy as np

from .base import FifoPolicy, PolicyContext

_BIG = np.iinfo(np.int64).max


class RandomPolicy(FifoPolicy):
    def __init__(self, ctx: PolicyContext):
        self.rng = np.random.default_rng(ctx.seed)

    def choose(self, loads, counts, free, prompt):
        cand = np.flatnonzero(free > 0)
        return int(cand[self.rng.integers(len(cand))]) if len(cand) else -1


class RoundRobinPolicy(FifoPolicy):
    def __init__(self, ctx: PolicyContext):
        self.G = ctx.workers
        self.next = 0

    def choose(self, loads, counts, free, prompt):
        G = len(free)
        for k in range(G):
            g = (self.next + k) % G
            if free[g] > 0:
                self.next = (g + 1) % G
                return g
        return -1


class PowerOfTwoPolicy(FifoPolicy):
    def __init__(self, ctx: PolicyContext):
        self.rng = np.random.default_rng(ctx.seed)

    def choose(self, loads, counts, free, prompt):
        cand = np.flatnonzero(free > 0)
        if len(cand) <= 1:
            return int(cand[0]) if len(cand) else -1
        a, b = self.rng.choice(len(cand), size=2, replace=False)
        ga, gb = int(cand[a]), int(cand[b])
        return gb if loads[gb] < loads[ga] else ga  # ties: first sample (vllm-router)


class JsqCountPolicy(FifoPolicy):
    def __init__(self, ctx: PolicyContext):
        pass

    def choose(self, loads, counts, free, prompt):
        c = np.where(free > 0, counts, _BIG)
        best = c.min()
        if best == _BIG:
            return -1
        cand = np.flatnonzero(c == best)
        return int(cand[0]) if len(cand) == 1 else int(cand[np.argmin(loads[cand])])


class JsqTokensPolicy(FifoPolicy):
    def __init__(self, ctx: PolicyContext):
        pass

    def choose(self, loads, counts, free, prompt):
        masked = np.where(free > 0, loads, _BIG)
        g = int(masked.argmin())
        return g if masked[g] != _BIG else -1


class FcfsPolicy(FifoPolicy):
    def __init__(self, ctx: PolicyContext):
        pass

    def choose(self, loads, counts, free, prompt):
        nz = np.flatnonzero(free > 0)
        return int(nz[0]) if len(nz) else -1
