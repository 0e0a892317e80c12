"""Dispatch latency of the router with its prefix index on: the policy call (which reads the index's cached
tokens for every waiting request it sees), the assignment guard and the index's bookkeeping for what was placed,
timed per call, in the router's steady state.

    python benchmarks/bench_prefix_dispatch.py                   # brp and the cache-aware rules at G = 8 and 64
    python benchmarks/bench_prefix_dispatch.py --policies brp --workers 8 --calls 2000

The state is the router's: G ranks of B slots all busy, a pool of waiting requests of which one call sees the first
``--batch`` (serve's ``--dispatch-batch``, 64), and a prefix index in vLLM's 16-token blocks bounded at
``--kv-capacity`` tokens per rank (the LRU path, the slower one). Requests are multi-turn conversations from the
synthetic generator (a shared 1,024-token system prompt per group, turns that grow the context; prompts of about
2,000 tokens, so a lookup walks about 130 blocks per rank). Each step, ``--finish`` random running requests end
(their slots and index entries released) and as many arrive; then one dispatch call places what fits. Wall time
(``time.perf_counter``) of the decision (snapshot, policy and guard: what the router's dispatch histogram times),
its CPU time (``time.thread_time``: what to compare on a shared machine, where another process's burst lands in
the wall clock), and the wall time of the whole call (with the index's bookkeeping for what was placed, which the router
does right after). The inputs made up front (every prompt of the run) are frozen out of the garbage collector's
scans, as ``serve`` freezes its start-up objects.

The policy's clock is simulated, so every run makes the same decisions on any machine: it advances ``--tick-ms``
per timed call (the router calls the policy every few milliseconds), and one second per call while the slots
first fill (not timed; requests held for a full rank that caches their prefix are released after their bounded
wait instead of the benchmark spinning through it in real time).
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from dpbalance.core import ClusterState, Pool, Snapshot
from dpbalance.core.apply import apply_assignments
from dpbalance.policies import PolicyContext, PolicySpec
from dpbalance.router.dispatcher import PoolPrefix
from dpbalance.router.prefix_index import PrefixIndex
from dpbalance.traces import load_trace

WORKLOAD = (
    "synthetic:sessions={s},turns=6,block=16,system_prompt=1024,system_prompts=8,prompt=lognormal,"
    "prompt_mean=200,prompt_sigma=0.8,output=geometric,output_mean=200,seed=3"
)


def token_ids(w, i: int, memo: dict) -> list[int]:
    """Token ids whose 16-token blocks hash as the workload's do (each block hash picks 16 fixed ids)."""
    b = w.blocks
    ids: list[int] = []
    for h in b.hashes[b.offsets[i] : b.offsets[i + 1]].tolist():
        if h not in memo:
            memo[h] = np.random.default_rng(h & 0x7FFFFFFFFFFFFFFF).integers(0, 50_000, b.size).tolist()
        ids += memo[h]
    tail = int(w.prompt[i]) - len(ids)
    return ids + np.random.default_rng([9, i]).integers(0, 50_000, max(tail, 0)).tolist()


def run(policy: str, G: int, slots: int, batch: int, finish: int, calls: int, kv: int, tick_s: float = 0.002) -> dict:
    n_needed = G * slots + batch * 2 + finish * calls
    w = load_trace(WORKLOAD.format(s=n_needed // 6 + 1))
    memo: dict = {}
    ids = [token_ids(w, i, memo) for i in range(n_needed)]
    pol = PolicySpec.parse(policy).build(PolicyContext(workers=G, slots=slots))
    state, pool = ClusterState(G, slots), Pool()
    idx = PrefixIndex(G, block_size=16, kv_capacity=kv)
    arrive_us: list[float] = []
    nxt = 0
    clock = 0.0  # the policy's clock (simulated: see the module docstring)

    def arrive(k: int) -> None:
        nonlocal nxt
        for _ in range(k):
            t0 = time.perf_counter()
            idx.arrive(nxt, ids[nxt], int(w.prompt[nxt]))
            arrive_us.append((time.perf_counter() - t0) * 1e6)
            pool.push(nxt, int(w.prompt[nxt]), clock, -1)
            nxt += 1

    def dispatch() -> tuple[float, float, float]:
        """(µs of the decision: policy and guard, as the router's dispatch histogram times it; its CPU µs; µs of
        the whole call: with the index's bookkeeping for what was placed)."""
        c0 = time.thread_time_ns()
        t0 = time.perf_counter()
        snap = Snapshot(state, PoolPrefix(pool, batch), clock, prefix=idx)
        adm = apply_assignments(state, pool, pol.dispatch(snap))
        t1 = time.perf_counter()
        c1 = time.thread_time_ns()
        for rid, g in zip(adm.request_id.tolist(), adm.worker.tolist()):
            idx.sent(rid, g)
            idx.first_token(rid)
        t2 = time.perf_counter()
        return (t1 - t0) * 1e6, (c1 - c0) / 1e3, (t2 - t0) * 1e6

    # the bench's inputs (every prompt of the run, made up front) are not the router's live objects: frozen out of
    # the collector's scans, as serve freezes its start-up objects
    gc.collect()
    gc.freeze()
    arrive(G * slots + batch * 2)
    while state.free.sum() > 0:  # fill every slot (not timed)
        dispatch()
        clock += 1.0
    rng = np.random.default_rng(1)
    lat, cpu, whole = [], [], []
    for _ in range(calls):
        busy = np.flatnonzero(state.slot_rid >= 0)
        for s in rng.choice(busy, size=min(finish, len(busy)), replace=False).tolist():
            idx.done(int(state.slot_rid[s]))
            state.release(s)
        arrive(finish)
        us, us_cpu, us_all = dispatch()
        clock += tick_s
        lat.append(us)
        cpu.append(us_cpu)
        whole.append(us_all)
    gc.unfreeze()
    return {
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "cpu_p50": float(np.percentile(cpu, 50)),
        "cpu_p99": float(np.percentile(cpu, 99)),
        "all_p50": float(np.percentile(whole, 50)),
        "all_p99": float(np.percentile(whole, 99)),
        "arrive_p50": float(np.percentile(arrive_us, 50)),
        "blocks": float(np.mean(np.diff(w.blocks.offsets)[:n_needed])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default="brp,sglang_cache_aware,llmd_prefix,dynamo_kv")
    ap.add_argument("--workers", default="8,64", help="comma-separated G values")
    ap.add_argument("--slots", type=int, default=72)
    ap.add_argument("--batch", type=int, default=64, help="waiting requests one call sees (--dispatch-batch)")
    ap.add_argument("--finish", type=int, default=8, help="requests that end (and arrive) between two calls")
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--kv-capacity", type=int, default=1_000_000, help="KV tokens per rank the index assumes")
    ap.add_argument("--tick-ms", type=float, default=2.0, help="simulated time between two timed calls")
    a = ap.parse_args()
    print(
        "| policy | G | slots | waiting seen | blocks/prompt | decision P50 µs | decision P99 µs | its CPU P50 µs "
        "| CPU P99 µs | with bookkeeping P50 µs | P99 µs | arrive P50 µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for G in (int(x) for x in a.workers.split(",")):
        for p in a.policies.split(","):
            r = run(p, G, a.slots, a.batch, a.finish, a.calls, a.kv_capacity, a.tick_ms / 1e3)
            print(
                f"| `{p}` | {G} | {a.slots} | {a.batch} | {r['blocks']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} "
                f"| {r['cpu_p50']:.0f} | {r['cpu_p99']:.0f} | {r['all_p50']:.0f} | {r['all_p99']:.0f} "
                f"| {r['arrive_p50']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
