"""The fast forms of the baseline rules make exactly the choices of their plain definitions: the heap-driven FIFO
rules equal a scan of every worker with a free slot for the lowest key, once per request (scratch loads/counts
updated after each placement); vLLM's rotating pick equals an argmin over the workers in rotated order."""

import numpy as np
import pytest

from dpbalance.policies import PolicyContext, make_policy
from dpbalance.policies.engine_rules import VllmConfig, VllmPolicy
from tests.helpers import random_snapshot


def scan_reference(snap, key):
    """The O(G)-per-request definition: ``key(g, loads, counts)``; the lowest key among free workers wins."""
    loads, counts, free = snap.loads.copy(), snap.counts.copy(), snap.free.copy()
    out = []
    for rid, s in zip(snap.pool_ids.tolist(), snap.pool_prompt.tolist()):
        cand = [g for g in range(snap.workers) if free[g] > 0]
        if not cand:
            break
        g = min(cand, key=lambda g: key(g, loads, counts))
        out.append((rid, g))
        loads[g] += s
        counts[g] += 1
        free[g] -= 1
    return out


RULES = {
    "jsq_tokens": lambda g, L, c: (L[g], g),
    "jsq_count": lambda g, L, c: (c[g], L[g], g),
    "fcfs": lambda g, L, c: g,
}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("seed", range(12))
def test_heap_rule_equals_scan(name, seed):
    rng = np.random.default_rng(seed)
    G = int(rng.integers(1, 12))
    # small prompts make load ties (the tie-break matters); full=False leaves some workers with free slots
    snap = random_snapshot(
        rng, G, int(rng.integers(1, 6)), int(rng.integers(0, 40)), max_s=int(rng.choice([3, 5000])), full=bool(seed % 2)
    )
    got = [tuple(a) for a in make_policy(name, PolicyContext(G, 5)).dispatch(snap)]
    assert got == scan_reference(snap, RULES[name])


@pytest.mark.parametrize("seed", range(6))
def test_sglang_bumps_carry_over_between_stale_refreshes(seed):
    """Stats refresh every 3rd call; in between, each placement adds its prompt to its worker's held tokens and
    the lowest held count among free workers wins (ties: lowest index)."""
    rng = np.random.default_rng(100 + seed)
    G = int(rng.integers(2, 8))
    pol = make_policy("sglang_total_tokens:stats_interval=3", PolicyContext(G, 5))
    for call in range(7):
        snap = random_snapshot(rng, G, 5, int(rng.integers(1, 10)), max_s=50, full=False)
        if call % 3 == 0:
            held = snap.loads.copy()
        expect, free = [], snap.free.copy()
        for rid, s in zip(snap.pool_ids.tolist(), snap.pool_prompt.tolist()):
            cand = [g for g in range(G) if free[g] > 0]
            if not cand:
                break
            g = min(cand, key=lambda g: (held[g], g))
            expect.append((rid, g))
            held[g] += s
            free[g] -= 1
        assert [tuple(a) for a in pol.dispatch(snap)] == expect


@pytest.mark.parametrize("seed", range(8))
def test_vllm_rotating_pick_equals_rotated_argmin(seed):
    rng = np.random.default_rng(seed)
    G = int(rng.integers(1, 10))
    pol = VllmPolicy(VllmConfig(), PolicyContext(G, 4))
    for _ in range(30):
        score = rng.integers(0, 3, G).astype(float)  # few distinct values: ties are the rule
        free = rng.integers(0, 2, G)
        order = [(pol.start + i) % G for i in range(G)]  # the scan starts at the rotating index
        cand = [g for g in order if free[g] > 0]
        expect = min(cand, key=lambda g: score[g]) if cand else -1  # min() keeps the first of equal keys
        assert pol._pick_rotating(score, free) == expect
