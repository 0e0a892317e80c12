"""Simple baseline routers a user compares against: random, round-robin, power-of-two choices,
join-shortest-queue by count and by tokens, and the BF-IO paper's FCFS (the engines' own rules are in
``engine_rules``).

Every rule only places requests on workers with a free slot (the simulator rejects anything else)
and walks the pool in FIFO order unless its rule says otherwise. The rules that pick the worker with the lowest
key (the JSQ rules, FCFS) keep the workers in a heap, so a call costs O(G + n log G) for n placements.
"""

from __future__ import annotations

import numpy as np

from .base import FifoPolicy, LowestKeyPolicy, NoOptions, PolicyContext


class RandomPolicy(FifoPolicy):
    def __init__(self, cfg: NoOptions, ctx: PolicyContext):
        self.rng = np.random.default_rng(ctx.seed)

    def choose(self, loads, counts, free, prompt):
        cand = np.flatnonzero(free > 0)
        return int(cand[self.rng.integers(len(cand))]) if len(cand) else -1


class RoundRobinPolicy(FifoPolicy):
    def __init__(self, cfg: NoOptions, ctx: PolicyContext):
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
    def __init__(self, cfg: NoOptions, ctx: PolicyContext):
        self.rng = np.random.default_rng(ctx.seed)

    def choose(self, loads, counts, free, prompt):
        cand = np.flatnonzero(free > 0)
        if len(cand) <= 1:
            return int(cand[0]) if len(cand) else -1
        a, b = self.rng.choice(len(cand), size=2, replace=False)
        ga, gb = int(cand[a]), int(cand[b])
        return gb if loads[gb] < loads[ga] else ga  # ties: first sample (vllm-router)


class JsqCountPolicy(LowestKeyPolicy):
    """Fewest active requests; ties: lowest token load, then lowest index."""

    def __init__(self, cfg: NoOptions, ctx: PolicyContext):
        pass

    def keys(self, snap, workers):
        return zip(snap.counts[workers].tolist(), snap.loads[workers].tolist(), workers.tolist())

    def next_key(self, key, prompt):
        c, load, g = key
        return (c + 1, load + prompt, g)


class JsqTokensPolicy(LowestKeyPolicy):
    """Lowest token load; ties: lowest index."""

    def __init__(self, cfg: NoOptions, ctx: PolicyContext):
        pass

    def keys(self, snap, workers):
        return zip(snap.loads[workers].tolist(), workers.tolist())

    def next_key(self, key, prompt):
        return (key[0] + prompt, key[1])


class FcfsPolicy(LowestKeyPolicy):
    """The lowest-index worker with a free slot."""

    def __init__(self, cfg: NoOptions, ctx: PolicyContext):
        pass

    def keys(self, snap, workers):
        return ((g,) for g in workers.tolist())

    def next_key(self, key, prompt):
        return key
