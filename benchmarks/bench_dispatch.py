"""Per-call dispatch latency of the policies on real simulated states (the simulator times every policy call
that has requests to place and a free slot; P50/P99 over all such calls).

    python benchmarks/bench_dispatch.py            # the issue's three targets + scaling in G, H and pool size
    python benchmarks/bench_dispatch.py --quick    # the three targets only

Workload: output/prompt lengths resampled from mooncake-conversation (sample trace if the shared folder is
missing), saturated arrivals with the pool held at the stated size, B = 72 so G·72 requests are active.
"""

from __future__ import annotations

import argparse

from dpbalance.sim import SimConfig, run_simulation
from dpbalance.traces import load_trace


def case(policy: str, G: int, pool: int, n: int) -> tuple[float, float, int, int]:
    try:
        load_trace("mooncake-conversation")
        src = "mooncake-conversation"
    except Exception:  # no shared folder: the bundled sample has the same distribution
        src = "sample"
    w = load_trace(f"synthetic:n={n},prompt=trace,output=trace,source={src},seed=1")
    train = load_trace(f"synthetic:n=4000,prompt=trace,output=trace,source={src},seed=2")
    res, _ = run_simulation(w, policy, SimConfig(workers=G, slots=72, arrival="saturated", visible=pool), train=train)
    return res.dispatch_us_p50, res.dispatch_us_p99, res.steps, res.requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cases = [
        ("br0", 8, 256, 16000, "target P99 ≤ 500 µs"),
        ("brh:H=80", 8, 256, 16000, "target P99 ≤ 1,000 µs"),
        ("brh:H=80", 64, 1024, 120000, "target P99 ≤ 5,000 µs"),
    ]
    if not args.quick:
        cases += [
            ("brh", 8, 256, 16000, "default H=8"),
            ("brh:H=160", 8, 256, 16000, "H scaling"),
            ("br0", 8, 32, 16000, "pool scaling"),
            ("br0", 8, 1024, 16000, "pool scaling"),
            ("brh:H=80", 8, 32, 16000, "pool scaling"),
            ("brh:H=80", 8, 1024, 16000, "pool scaling"),
            ("br0", 16, 256, 30000, "G scaling"),
            ("br0", 64, 1024, 120000, "G scaling"),
            ("brh:H=80", 16, 256, 30000, "G scaling"),
            ("brh:H=80", 32, 512, 60000, "G scaling"),
            ("jsq_tokens", 8, 256, 16000, "baseline"),
            ("br0:preset=paper", 8, 256, 16000, "paper preset"),
        ]
    print("| policy | G | active | waiting | dispatch P50 µs | dispatch P99 µs | calls ≈ steps | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for policy, G, pool, n, note in cases:
        p50, p99, steps, _ = case(policy, G, pool, n)
        print(f"| `{policy}` | {G} | {G * 72} | {pool} | {p50:.0f} | {p99:.0f} | {steps:,} | {note} |", flush=True)


if __name__ == "__main__":
    main()
