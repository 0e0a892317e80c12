"""Simulator speed: wall time, steps/s and peak memory on the issue's reference workloads.

    python benchmarks/bench_sim.py            # all cases
    python benchmarks/bench_sim.py --quick    # the mooncake case only

Prints a table; wall time is ``sim_wall_s`` (the step loop, excluding trace loading and summarising).
Each case runs in a fresh subprocess so peak RSS is per case.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {
    # name: (trace spec, G, B, policy, extra)
    "mooncake-10k G8 B72 jsq_tokens": ("mooncake-conversation", 8, 72, "jsq_tokens", {"max_requests": 10000}),
    "synthetic-100k G64 B128 jsq_tokens": (
        "synthetic:n=100000,prompt=lognormal,prompt_mean=2000,output=geometric,output_mean=300,seed=1",
        64,
        128,
        "jsq_tokens",
        {},
    ),
    # scaling with G (same 20k synthetic requests)
    "synthetic-20k G8 B128": ("synthetic:n=20000,output_mean=300,seed=1", 8, 128, "jsq_tokens", {}),
    "synthetic-20k G32 B128": ("synthetic:n=20000,output_mean=300,seed=1", 32, 128, "jsq_tokens", {}),
    "synthetic-20k G128 B128": ("synthetic:n=20000,output_mean=300,seed=1", 128, 128, "jsq_tokens", {}),
    # scaling with request count (G = 16)
    "synthetic-25k G16 B128": ("synthetic:n=25000,output_mean=300,seed=2", 16, 128, "jsq_tokens", {}),
    "synthetic-50k G16 B128": ("synthetic:n=50000,output_mean=300,seed=2", 16, 128, "jsq_tokens", {}),
    "synthetic-100k G16 B128": ("synthetic:n=100000,output_mean=300,seed=2", 16, 128, "jsq_tokens", {}),
}


def run_case(name: str) -> dict:
    from dpbalance.sim import SimConfig, run_simulation
    from dpbalance.traces import load_trace

    trace, G, B, policy, extra = CASES[name]
    w = load_trace(trace)
    if "max_requests" in extra:
        w = w.filter(max_requests=extra["max_requests"])
    cfg = SimConfig(workers=G, slots=B, arrival="saturated", visible=32 if G == 8 else None)
    best = None
    for _ in range(3 if len(w) <= 20000 else 1):
        res, _ = run_simulation(w, policy, cfg)
        best = res if best is None or res.sim_wall_s < best.sim_wall_s else best
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "case": name,
        "requests": len(w),
        "steps": best.steps,
        "wall_s": best.sim_wall_s,
        "steps_per_s": best.steps / best.sim_wall_s,
        "peak_rss_mb": peak_mb,
        "max_min": best.avg_imbalance_maxmin,
        "tok_s": best.throughput_tok_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    names = list(CASES)[:1] if args.quick else list(CASES)
    print(f"{'case':38s} {'requests':>9s} {'steps':>8s} {'wall s':>8s} {'steps/s':>9s} {'peak MB':>8s}")
    for name in names:
        t0 = time.time()
        out = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{name:38s} {r['requests']:9d} {r['steps']:8d} {r['wall_s']:8.3f} {r['steps_per_s']:9.0f} "
            f"{r['peak_rss_mb']:8.0f}   ({time.time() - t0:.1f}s incl. load)"
        )


if __name__ == "__main__":
    main()
