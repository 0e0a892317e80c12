"""Builders shared by the tests: hand-made cluster states and snapshots."""

from __future__ import annotations

import numpy as np

from dpbalance.core.snapshot import Snapshot
from dpbalance.core.state import ClusterState, Pool


def snapshot_of(prompts_per_worker, pool=(), slots=3, steps=0, limit=0, first_rid=100_000) -> Snapshot:
    """A snapshot by hand: ``prompts_per_worker[g]`` lists the prompt lengths active on worker g; ``pool`` lists
    (request id, prompt) pairs waiting; every request then decodes ``steps`` tokens."""
    st = ClusterState(len(prompts_per_worker), slots)
    rid = first_rid
    for g, prompts in enumerate(prompts_per_worker):
        for s in prompts:
            st.admit(rid, g, int(s), limit=limit)
            rid += 1
    for _ in range(steps):
        st.advance()
    p = Pool()
    for r, s in pool:
        p.push(int(r), int(s), 0.0)
    return Snapshot(st, p)


def random_snapshot(
    rng: np.random.Generator,
    G: int,
    B: int,
    n_pool: int,
    max_s: int = 5000,
    *,
    full: bool = True,
    max_steps: int = 30,
    limit: int | None = None,
) -> Snapshot:
    """Random active sets (0..B requests per worker, or 0..B-1 with ``full=False``), random ages and a pool of
    ``n_pool`` requests with ids 0..n_pool-1. ``limit`` fixes every output hint (else random in 1..299)."""
    st = ClusterState(G, B)
    rid = 10_000
    for g in range(G):
        for _ in range(rng.integers(0, B + 1 if full else B)):
            s = int(rng.integers(1, max_s))
            st.admit(rid, g, s, limit=limit if limit is not None else int(rng.integers(1, 300)))
            rid += 1
    for _ in range(int(rng.integers(0, max_steps)) if max_steps else 0):
        st.advance()
    p = Pool()
    for r in range(n_pool):
        p.push(r, int(rng.integers(1, max_s)), 0.0)
    return Snapshot(st, p)


def saturated_runs(policies, *, n: int, max_prompt: int, max_output: int, G: int, B: int, seed: int, name: str = "r"):
    """``run_simulation`` results of ``policies`` on one random saturated workload (prompts 100..max_prompt,
    outputs 1..max_output): the small runs the report and plot tests draw on."""
    from dpbalance.core import Workload
    from dpbalance.sim import SimConfig, run_simulation

    rng = np.random.default_rng(seed)
    w = Workload.from_arrays(np.zeros(n), rng.integers(100, max_prompt, n), rng.integers(1, max_output, n), name=name)
    cfg = SimConfig(workers=G, slots=B, arrival="saturated")
    return [run_simulation(w, p, cfg) for p in policies]


def have_trace(name: str) -> bool:
    """True when the real trace ``name`` is in the trace directory (tests that need it skip otherwise)."""
    from dpbalance.traces import TraceError, resolve_trace

    try:
        resolve_trace(name)
    except TraceError:
        return False
    return True
