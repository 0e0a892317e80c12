"""The prefix matrix of issue 18 in the simulator: every prefix-aware policy against br0, jsq_tokens and
round_robin on traces with prefix structure, prefill on, per-rank KV capacity unlimited or finite. Prints Markdown.

    DPBALANCE_TRACE_DIR=/work/shared/traces taskset -c 1 .venv/bin/python benchmarks/prefix_matrix.py \\
        > docs/results/prefix_matrix.md

Subsets (chosen before timing; the matrix then took 35 s, so the full traces are affordable and not yet run):
the first ``N`` requests of each Mooncake trace, with their arrival times scaled by ``RATE`` (at their own rate
the modelled ranks are more than twice overloaded, so every policy's TTFT would be the queue's), and a synthetic
session trace. BRP's defaults are the step-time model's ratios, not tuned on these cells (a few variants on
mooncake-synthetic's first 1,000 requests differed by < 4 %).
"""

from __future__ import annotations

import sys
import time

from dpbalance.engine.config import EngineConfig
from dpbalance.sim.config import SimConfig
from dpbalance.sim.run import run_simulation
from dpbalance.traces.selection import TraceSelection

N = 2000
RATE = 0.25
CAPACITY = 500_000  # tokens of KV per rank: ~35 GB of MLA KV at ~70 KB per token
TRACES = {
    "mooncake-conversation": dict(trace="mooncake-conversation", max_requests=N),
    "mooncake-synthetic": dict(trace="mooncake-synthetic", max_requests=N),
    "synthetic-sessions": dict(trace="synthetic:n=2000,sessions=500,turns=4,qps=6,seed=2"),
}
RATES = {"mooncake-conversation": RATE, "mooncake-synthetic": RATE, "synthetic-sessions": 1.0}
POLICIES = [
    "brp",
    "br0",
    "jsq_tokens",
    "round_robin",
    "prefix_affinity",
    "sglang_cache_aware",
    "vllm_router_cache_aware",
    "dynamo_kv",
    "llmd_prefix",
    "preble",
    "session_hash",
    "vllm_dp",
]
CAPS = {"unlimited": "unlimited", f"{CAPACITY // 1000}k": CAPACITY}
COLS = [
    ("tok/s", "throughput_all_tok_s", True, "{:.1f}"),
    ("TTFT p50 s", "ttft_p50_s", False, "{:.1f}"),
    ("TTFT p99 s", "ttft_p99_s", False, "{:.1f}"),
    ("hit rate", "prefix_hit_rate", True, "{:.3f}"),
    ("max–min (run)", "maxmin_all", False, "{:,.0f}"),
]


def run(trace: str, cap, policy: str, workers: int = 8) -> dict:
    sel = TraceSelection(**TRACES[trace])
    test, train = sel.load(seed=0)
    eng = EngineConfig(prefill=True, prefix_cache=True, kv_capacity=cap)
    cfg = SimConfig(workers=workers, rate_scale=RATES[trace], engine=eng)
    res, _ = run_simulation(test, policy, cfg, train=train)
    return {k: getattr(res, k) for _, k, _, _ in COLS}


def main() -> None:
    t0 = time.time()
    print("# Prefix matrix (simulator, issue 18)\n")
    print(
        "Command: `DPBALANCE_TRACE_DIR=/work/shared/traces taskset -c 1 .venv/bin/python benchmarks/prefix_matrix.py`\n"
    )
    print(
        f"G = 8, B = 72, prefill and prefix cache on, step time linear_max (default prefill terms); Mooncake traces: "
        f"first {N} requests, arrivals ×{RATE} rate; synthetic sessions: `{TRACES['synthetic-sessions']['trace']}`. "
        f"KV capacity per rank: unlimited or {CAPACITY:,} tokens. Best per column in bold; brp's losses are listed "
        "below each table.\n"
    )
    losses = []
    for trace in TRACES:
        for cap_name, cap in CAPS.items():
            rows = {p: run(trace, cap, p) for p in POLICIES}
            print(f"## {trace}, KV {cap_name}\n")
            if cap_name == "unlimited":
                one = run(trace, cap, "jsq_tokens", workers=1)
                print(f"One rank with an unlimited cache (`--workers 1`): hit rate {one['prefix_hit_rate']:.3f}\n")
            print("| policy | " + " | ".join(c[0] for c in COLS) + " |")
            print("|---" * (len(COLS) + 1) + "|")
            best = {}
            for _, k, hi, _ in COLS:
                vals = [rows[p][k] for p in POLICIES]
                best[k] = max(vals) if hi else min(vals)
            for p in POLICIES:
                cells = []
                for _, k, _, fmt in COLS:
                    s = fmt.format(rows[p][k])
                    cells.append(f"**{s}**" if rows[p][k] == best[k] else s)
                print(f"| {p} | " + " | ".join(cells) + " |")
            print()
            b = rows["brp"]
            for name, k, hi, fmt in COLS:
                for p in POLICIES[1:]:
                    worse = rows[p][k] > b[k] if hi else rows[p][k] < b[k]
                    if worse:
                        losses.append(
                            f"- {trace}, KV {cap_name}, {name}: brp {fmt.format(b[k])} vs {p} {fmt.format(rows[p][k])}"
                        )
            sys.stdout.flush()
    print("## Cells where brp loses\n")
    print("\n".join(losses) if losses else "none")
    print(f"\n(wall time {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
