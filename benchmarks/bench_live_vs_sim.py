"""Live gains (engine-sim + router + loadgen) against the simulator's prediction for the same settings.

    python benchmarks/bench_live_vs_sim.py [--requests 1500] [--workers 8] [--slots 16]

Workload: the first N requests of mooncake-conversation with prompts scaled by 1/8 and outputs capped at 128
(so the live run stays small), all sent within ~1 s (heavy load). The simulator replays exactly the same
requests (same scaled lengths, Poisson arrivals at the same rate, window = all steps, like the engine's
stats). Gains are BR vs jsq_count: throughput ratio and max–min imbalance ratio.
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np

from dpbalance import loadgen
from dpbalance.core import Workload
from dpbalance.emulator import start_group
from dpbalance.router.server import RouterConfig, start_router
from dpbalance.sim import SimConfig, run_simulation
from dpbalance.traces import load_trace

SCALE, CAP, QPS = 1 / 8, 128, 1500.0
TIME_SCALE = 0.5  # engine slower than real time so the router keeps up with every step


async def live(policy: str, w: Workload, G: int, B: int, time_scale: float) -> dict:
    group, urls, eruns = await start_group(G, slots=B, time_scale=time_scale)
    router, rurl, rrun = await start_router(RouterConfig(decode=tuple(urls), policy=policy, slots=B))
    try:
        outs = await loadgen.run(w, loadgen.LoadgenConfig(target=rurl, mode="qps", qps=QPS, prompt_scale=1.0))
        assert all(o.status == "ok" for o in outs)
        return group.stats()
    finally:
        await rrun.cleanup()
        for r in eruns:
            await r.cleanup()
        await group.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument(
        "--time-scale", type=float, default=TIME_SCALE, help="engine-sim speed-up (lower = router keeps up)"
    )
    a = ap.parse_args()
    src = load_trace("mooncake-conversation").filter(max_requests=a.requests)
    w = Workload.from_arrays(
        np.zeros(len(src)),
        np.maximum(1, np.round(src.prompt * SCALE)),
        np.minimum(src.output, CAP),
        name="mooncake-scaled",
        has_timestamps=False,
    )
    cfg = SimConfig(workers=a.workers, slots=a.slots, arrival="poisson", qps=QPS, window="all")
    rows = {}
    for p in ("jsq_count", "br0", "brh"):
        sim, _ = run_simulation(w, p, cfg)
        lv = asyncio.run(live(p, w, a.workers, a.slots, a.time_scale))
        rows[p] = (sim, lv)
    print("| policy | sim tok/s | sim max–min | live tok/s (engine time) | live max–min |")
    print("|---|---:|---:|---:|---:|")
    for p, (sim, lv) in rows.items():
        print(
            f"| `{p}` | {sim.throughput_tok_s:,.0f} | {sim.avg_imbalance_maxmin:,.0f} "
            f"| {lv['throughput_tok_s']:,.0f} | {lv['avg_imbalance_maxmin']:,.0f} |"
        )
    print("\n| gain over jsq_count | sim | live | live / sim |")
    print("|---|---:|---:|---:|")
    s0, l0 = rows["jsq_count"]
    for p in ("br0", "brh"):
        s, lv = rows[p]
        gs = s.throughput_tok_s / s0.throughput_tok_s - 1
        gl = lv["throughput_tok_s"] / l0["throughput_tok_s"] - 1
        im_s = s.avg_imbalance_maxmin / s0.avg_imbalance_maxmin
        im_l = lv["avg_imbalance_maxmin"] / l0["avg_imbalance_maxmin"]
        print(f"| `{p}` throughput | {gs:+.1%} | {gl:+.1%} | {gl / gs if gs else float('nan'):.2f} |")
        print(f"| `{p}` max–min × | {im_s:.3f} | {im_l:.3f} | {im_l / im_s:.2f} |")


if __name__ == "__main__":
    main()
