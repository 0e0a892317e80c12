"""Simulator speed at scale: a saturated synthetic run of up to 1,000,000 requests on G = 256 workers, B = 128.

    python benchmarks/bench_scale.py                 # headline + growth in G and N, 3 runs per case
    python benchmarks/bench_scale.py --quick         # headline only (1M requests, G = 256), 1 run per case
    python benchmarks/bench_scale.py --repeat 5 --policies jsq_tokens

Workload: ``synthetic:n=N,prompt=lognormal,output=geometric,output_mean=300,seed=1`` (lognormal prompts of mean
2,000 tokens, geometric outputs of mean 300), ``--arrival saturated`` with the pool held at 1,024 waiting requests
(``--visible 1024``, which is also the default 4·G at G = 256). Policies: ``jsq_tokens`` (a cheap rule, so its
time is mostly the simulator's own) and the project's default policy, whatever it is when this runs.

Every run is a fresh subprocess pinned to one CPU (``--cpu``, default 1), so peak RSS is per run. ``sim_wall_s``
is the step loop's wall time (trace generation and the summary excluded); ``cpu_s`` is the process CPU time of the
same loop, which is what to compare on a shared machine, where wall time also counts waiting for the CPU. Figures
are medians over ``--repeat`` runs (min–max in brackets). Dispatch P50/P99 are over every policy call that had
requests to place and a free slot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

WORKLOAD = "synthetic:n={n},prompt=lognormal,output=geometric,output_mean=300,seed=1"
SLOTS = 128
VISIBLE = 1024
HEADLINE = (256, 1_000_000)
G_SWEEP = [(g, 250_000) for g in (32, 64, 128, 256)]  # growth with G at fixed N
N_SWEEP = [(256, n) for n in (250_000, 500_000, 1_000_000)]  # growth with N at fixed G


def run_case(policy: str, G: int, n: int) -> dict:
    """One run in this process: returns its figures (called in a fresh subprocess by ``main``)."""
    from dpbalance.sim import SimConfig, simulate
    from dpbalance.sim.run import build_policy, summarize
    from dpbalance.traces import load_trace

    w = load_trace(WORKLOAD.format(n=n))
    cfg = SimConfig(workers=G, slots=SLOTS, arrival="saturated", visible=VISIBLE)
    pol = build_policy(policy, cfg)
    c0 = time.process_time()
    rec = simulate(w, pol, cfg)
    cpu = time.process_time() - c0
    res, _ = summarize(rec, policy, cfg, w)
    return {
        "policy": policy,
        "G": G,
        "n": n,
        "steps": res.steps,
        "sim_wall_s": res.sim_wall_s,
        "cpu_s": cpu,
        "dispatch_p50_us": res.dispatch_us_p50,
        "dispatch_p99_us": res.dispatch_us_p99,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "throughput_tok_s": res.throughput_tok_s,
        "max_min": res.avg_imbalance_maxmin,
        "tpot_p95_ms": res.tpot_p95_ms,
        "ttft_p99_s": res.ttft_p99_s,
    }


def _child(policy: str, G: int, n: int, cpu: int | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--case", policy, str(G), str(n)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"case {policy} G={G} n={n} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _med(runs: list[dict], key: str) -> str:
    xs = [r[key] for r in runs]
    m = statistics.median(xs)
    return f"{m:.2f}" if len(xs) == 1 else f"{m:.2f} [{min(xs):.2f}–{max(xs):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="headline case only, one run each")
    ap.add_argument("--repeat", type=int, default=None, help="runs per case (default 3; 1 with --quick)")
    ap.add_argument(
        "--policies", default=None, help="comma-separated policy specs (default: jsq_tokens and the default policy)"
    )
    ap.add_argument(
        "--cpu",
        type=int,
        default=1 if (os.cpu_count() or 1) > 1 else None,
        help="pin every run to this CPU (default 1; -1 = no pinning)",
    )
    ap.add_argument("--json", help="also write every run's figures to this file")
    ap.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cpu = None if args.cpu is None or args.cpu < 0 else args.cpu
    if args.case:
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})
        policy, G, n = args.case[0], int(args.case[1]), int(args.case[2])
        print(json.dumps(run_case(policy, G, n)))
        return

    from dpbalance.policies import DEFAULT_POLICY

    policies = args.policies.split(",") if args.policies else list(dict.fromkeys(["jsq_tokens", DEFAULT_POLICY]))
    repeat = args.repeat or (1 if args.quick else 3)
    cases = [HEADLINE] if args.quick else list(dict.fromkeys(G_SWEEP + N_SWEEP))
    print(
        f"# bench_scale: B = {SLOTS}, saturated, pool {VISIBLE}, {repeat} run(s) per case, "
        f"pinned to CPU {cpu if cpu is not None else '(none)'}"
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.1f} (a shared machine inflates wall time, not CPU time)"
    )
    print(f"# default policy: {DEFAULT_POLICY}")
    print()
    print(
        "| policy | G | requests | steps | sim_wall_s | cpu_s | µs/step (cpu) | dispatch P50 µs | dispatch P99 µs "
        "| peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    everything = []
    for policy in policies:
        for G, n in cases:
            runs = [_child(policy, G, n, cpu) for _ in range(repeat)]
            everything += runs
            r0 = runs[0]
            cpu_med = statistics.median(r["cpu_s"] for r in runs)
            print(
                f"| `{policy}` | {G} | {n:,} | {r0['steps']:,} | {_med(runs, 'sim_wall_s')} | {_med(runs, 'cpu_s')} "
                f"| {cpu_med / r0['steps'] * 1e6:.0f} | {statistics.median(r['dispatch_p50_us'] for r in runs):.0f} "
                f"| {statistics.median(r['dispatch_p99_us'] for r in runs):.0f} "
                f"| {max(r['peak_rss_mb'] for r in runs):.0f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
