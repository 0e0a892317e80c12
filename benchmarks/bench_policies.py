"""Routing quality on the main comparison setting and a BR-H parameter search.

    python benchmarks/bench_policies.py                 # quality table (mooncake + azure-conv, G=8/16, B=72/128)
    python benchmarks/bench_policies.py --search        # BR-H oracle search over H, β, γ, growth
    python benchmarks/bench_policies.py --trace azure-conv-2023 --workers 16

Setting: first 10,000 requests of the trace, saturated arrivals with 32 visible (4·G for other G), steady
window; learned predictors train on the trace rows after the first 10,000.
"""

from __future__ import annotations

import argparse
import itertools
import time

from dpbalance.core.constants import DEFAULT_SLOTS
from dpbalance.sim import SimConfig, run_simulation
from dpbalance.traces import load_trace

BASELINES = [
    "random",
    "round_robin",
    "p2c",
    "jsq_count",
    "jsq_tokens",
    "vllm",
    "vllm_kv",
    "sglang_total_tokens",
    "adp_balance",
    "fcfs",
]
OURS = ["br0", "br0:preset=paper", "brh", "brh:predictor=survival", "brh:predictor=exact_match"]


def run(trace: str, policies: list[str], G: int, B: int, n: int = 10000):
    full = load_trace(trace)
    train, test = full.head_tail(min(n, len(full) - 1))
    cfg = SimConfig(workers=G, slots=B, arrival="saturated", visible=4 * G)
    rows = []
    for p in policies:
        t0 = time.time()
        res, _ = run_simulation(test, p, cfg, train=train)
        rows.append((p, res, time.time() - t0))
    return rows


def table(rows, title: str) -> None:
    base = [r for p, r, _ in rows if p in BASELINES]
    best = max(base, key=lambda r: r.throughput_tok_s) if base else None
    jsq = next((r for p, r, _ in rows if p == "jsq_tokens"), None)
    print(f"\n## {title}\n")
    print(
        "| policy | max–min | gap | idle | tok/s | × best baseline | × jsq_tokens | TPOT p95 ms "
        "| dispatch p50/p99 µs | wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p, r, wall in rows:
        xb = r.throughput_tok_s / best.throughput_tok_s if best else float("nan")
        xj = r.throughput_tok_s / jsq.throughput_tok_s if jsq else float("nan")
        print(
            f"| `{p}` | {r.avg_imbalance_maxmin:,.0f} | {r.avg_imbalance_gap:,.0f} | {r.idle_fraction:.2%} | "
            f"{r.throughput_tok_s:,.0f} | {xb:.3f} | {xj:.3f} | {r.tpot_p95_ms:.1f} | "
            f"{r.dispatch_us_p50:.0f}/{r.dispatch_us_p99:.0f} | {wall:.1f} |"
        )
    if best:
        print(f"\nbest baseline by throughput: {best.policy} ({best.throughput_tok_s:,.0f} tok/s)")


def search(trace: str, G: int, B: int) -> None:
    grid = []
    for H, gamma, beta, growth in itertools.product([8, 20, 40, 80], [0.8, 0.9, 0.97], [None, 16, 43], [True, False]):
        spec = f"brh:H={H},gamma={gamma},growth={growth}" + (f",beta={beta}" if beta else "")
        grid.append(spec)
    rows = run(trace, ["br0"] + grid, G, B)
    rows.sort(key=lambda x: x[1].avg_imbalance_maxmin)
    table(
        rows[:15] + [r for r in rows if r[0] == "br0"],
        f"BR-H oracle search on {trace}, G={G}, B={B} (best 15 by max–min)",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--search", action="store_true")
    ap.add_argument("--trace")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--slots", type=int)
    args = ap.parse_args()
    if args.search:
        search(args.trace or "mooncake-conversation", args.workers or 8, args.slots or DEFAULT_SLOTS)
        return
    settings = (
        [(args.trace, args.workers or 8, args.slots or DEFAULT_SLOTS)]
        if args.trace
        else [
            ("mooncake-conversation", 8, 72),
            ("azure-conv-2023", 8, 72),
            ("mooncake-conversation", 16, 72),
            ("mooncake-conversation", 8, 128),
        ]
    )
    for trace, G, B in settings:
        table(run(trace, BASELINES + OURS, G, B), f"{trace}, G={G}, B={B}, saturated (visible {4 * G}), steady window")


if __name__ == "__main__":
    main()
