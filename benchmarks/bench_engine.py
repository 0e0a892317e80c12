"""What the engine model costs in simulator time: the same saturated run decode-only and with ``--prefill
--prefix-cache``, side by side, and their ratio.

    python benchmarks/bench_engine.py                   # 1M requests, G = 256, B = 128, 1 run per case
    python benchmarks/bench_engine.py --n 200000 --workers 64 --repeat 3

Workload: ``synthetic:n=N,sessions=N/4,turns=4,prompt_mean=500,output_mean=300,seed=1`` (four-turn conversations
that share a 1,024-token system prompt, so the caches have prefixes to find), ``--arrival saturated`` with the
pool at 4·G. Every run is a fresh subprocess pinned to one CPU, and two figures are taken, each as CPU seconds
(what to compare on a shared machine):

- the step loop alone (``simulate()``; trace generation, imports and the summary excluded): what the engine model
  itself costs per request;
- the whole command a user types, ``dpbalance simulate --trace … -G … -B … --arrival saturated --policy P
  [--prefill --prefix-cache] --json FILE``, from start to exit: what a run costs.

Each ratio is engine / decode-only for the same policy, from runs made one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOAD = "synthetic:n={n},sessions={s},turns=4,prompt_mean=500,output_mean=300,seed=1"
SLOTS = 128


def run_case(policy: str, G: int, n: int, engine: bool) -> dict:
    from dpbalance.engine.config import EngineConfig
    from dpbalance.sim import SimConfig, simulate
    from dpbalance.sim.run import build_policy, summarize
    from dpbalance.traces import load_trace

    w = load_trace(WORKLOAD.format(n=n, s=max(1, n // 4)))
    eng = EngineConfig(prefill=True, prefix_cache=True) if engine else EngineConfig()
    cfg = SimConfig(workers=G, slots=SLOTS, arrival="saturated", visible=4 * G, engine=eng)
    pol = build_policy(policy, cfg)
    c0 = time.process_time()
    rec = simulate(w, pol, cfg)
    cpu = time.process_time() - c0
    res, _ = summarize(rec, policy, cfg, w)
    return {"cpu_s": cpu, "steps": res.steps, "hit_rate": res.prefix_hit_rate}


def command(policy: str, G: int, n: int, engine: bool, out: str) -> list[str]:
    """The ``dpbalance simulate`` command of one case, as a user would type it."""
    trace = WORKLOAD.format(n=n, s=max(1, n // 4))
    cmd = ["simulate", "--trace", trace, "-G", str(G), "-B", str(SLOTS), "--arrival", "saturated", "--policy", policy]
    return [*cmd, *(["--prefill", "--prefix-cache"] if engine else []), "--json", out]


def _whole(policy: str, G: int, n: int, engine: bool, cpu: int | None) -> float:
    """CPU seconds of the whole ``dpbalance simulate`` command of one case (its process, start to exit)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dpbalance.cli.main", *command(policy, G, n, engine, os.path.join(tmp, "r.json"))]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin(cpu))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _pin(cpu: int | None):
    """What a child process runs before it starts: pin it to ``cpu`` (None: no pinning)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _child(policy: str, G: int, n: int, engine: bool, cpu: int | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--case", policy, str(G), str(n), str(int(engine))]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin(cpu))
    if out.returncode != 0:
        raise SystemExit(f"case {policy} G={G} n={n} engine={engine} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="requests (default 1,000,000)")
    ap.add_argument("--workers", type=int, default=256, help="G (default 256)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case (medians are printed)")
    ap.add_argument("--policies", default=None, help="comma-separated specs (default: jsq_tokens, the default)")
    ap.add_argument("--cpu", type=int, default=1 if (os.cpu_count() or 1) > 1 else -1, help="pin runs (-1: no)")
    ap.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cpu = None if args.cpu < 0 else args.cpu
    if args.case:  # a child: its parent pinned it
        p, G, n, e = args.case
        print(json.dumps(run_case(p, int(G), int(n), e == "1")))
        return
    from dpbalance.policies import DEFAULT_POLICY

    policies = args.policies.split(",") if args.policies else list(dict.fromkeys(["jsq_tokens", DEFAULT_POLICY]))
    print(f"# bench_engine: G = {args.workers}, B = {SLOTS}, {args.n:,} requests, {args.repeat} run(s) per case")
    print(f"# load average at start {os.getloadavg()[0]:.1f}; CPU seconds, pinned to CPU {cpu}")
    print("# loop: simulate() alone; command: the whole `dpbalance simulate` run, start to exit")
    print()
    print("| policy | loop decode-only | loop engine | ratio | command decode-only | command engine | ratio | hit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    G, n = args.workers, args.n
    for p in policies:
        dec, eng, wd, we = [], [], [], []
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits both
            dec.append(_child(p, G, n, False, cpu))
            eng.append(_child(p, G, n, True, cpu))
            wd.append(_whole(p, G, n, False, cpu))
            we.append(_whole(p, G, n, True, cpu))
        d = statistics.median(r["cpu_s"] for r in dec)
        e = statistics.median(r["cpu_s"] for r in eng)
        cd, ce = statistics.median(wd), statistics.median(we)
        print(
            f"| `{p}` | {d:.2f} | {e:.2f} | {e / d:.2f}× | {cd:.2f} | {ce:.2f} | {ce / cd:.2f}× "
            f"| {eng[0]['hit_rate']:.3f} |"
        )


if __name__ == "__main__":
    main()
