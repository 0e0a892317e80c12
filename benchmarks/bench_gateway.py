"""The picker behind a real Envoy on engine-sim: balance in both load-accounting modes and with two replicas,
and the picker's decision latency, on one trace.

    python benchmarks/bench_gateway.py [--requests 1000] [--workers 8] [--slots 16] [--policy br0]

Workload (as ``bench_live_vs_sim.py``): the first N requests of mooncake-conversation, prompts × 1/8, outputs
capped at 128, Poisson arrivals at 1,500 requests/s (heavy load: the pool holds a queue). Engine-sim ranks
(time scale 0.5), the pickers and the load generator share this process (pinned to ``--core``); Envoy runs
pinned to ``--envoy-core``. Each configuration runs on fresh ranks:

- ``streamed``: one picker, response bodies through it (exact token counts);
- ``decision-only``: one picker, no body (progress estimated from the ranks' step time);
- ``streamed x2`` / ``decision-only x2``: two pickers behind one Envoy (each request goes to one of them), each
  holding what the ranks report beyond its own requests (``--rank-metrics-interval-s``);
- ``streamed x2, blind``: two pickers that do not read the ranks' metrics (each sees only its half);
- ``serve``: ``dpbalance serve``'s own relay, for reference.

Reported: the engine's whole-run average max–min load over steps (``/admin/stats``), its throughput, the ratio
of each max–min to the streamed one, and the picker's decision latency (body received → destination sent,
P50/P99, including the wait in the pool) and the policy call latency (P50/P99).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil

import numpy as np

from dpbalance import loadgen
from dpbalance.core import Workload
from dpbalance.emulator import start_group
from dpbalance.gateway import EppConfig, bootstrap, start_epp
from dpbalance.gateway.envoy import EnvoyProcess
from dpbalance.router.server import RouterConfig, start_router
from dpbalance.traces import load_trace

SCALE, CAP, QPS, TIME_SCALE = 1 / 8, 128, 1500.0, 0.5


def _free_port() -> int:
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def _pct(x, p):
    return round(float(np.percentile(np.asarray(x), p)), 1) if len(x) else None


async def _gateway(w, a, mode: str, replicas: int, interval: float, envoy_core) -> dict:
    group, urls, runners = await start_group(a.workers, slots=a.slots, time_scale=TIME_SCALE)
    kw = dict(decode=tuple(urls), slots=a.slots, policy=a.policy, tokenize="estimate", mode=mode)
    kw.update(prometheus_port=None, rank_metrics_interval_s=interval)
    epps = [await start_epp(EppConfig(**kw, port=_free_port())) for _ in range(replicas)]
    conf = bootstrap(
        EppConfig(**kw, port=epps[0].port, envoy_port=_free_port()),
        pickers=[f"127.0.0.1:{e.port}" for e in epps],
        listen="127.0.0.1",
        admin_port=_free_port(),
    )
    prefix = ["taskset", "-c", str(envoy_core)] if envoy_core is not None and shutil.which("taskset") else []
    envoy = EnvoyProcess(conf, prefix=prefix)
    await envoy.start()
    try:
        outs = await loadgen.run(w, loadgen.LoadgenConfig(target=envoy.url, mode="qps", qps=QPS))
        bad = sum(o.status != "ok" for o in outs)
        st = group.stats()
        picks = [x for e in epps for x in e.picker.pick_us]
        calls = [x for e in epps for x in e.router.dispatcher.dispatch_us]
        return {
            **_row(st, bad),
            "pick_p50_us": _pct(picks, 50),
            "pick_p99_us": _pct(picks, 99),
            "policy_p50_us": _pct(calls, 50),
            "policy_p99_us": _pct(calls, 99),
        }
    finally:
        await envoy.stop()
        for e in epps:
            await e.stop(grace=0)
        await group.server.close()
        await group.stop()


async def _serve(w, a) -> dict:
    group, urls, runners = await start_group(a.workers, slots=a.slots, time_scale=TIME_SCALE)
    router, rurl, rrun = await start_router(
        RouterConfig(decode=tuple(urls), policy=a.policy, slots=a.slots, tokenize="estimate")
    )
    try:
        outs = await loadgen.run(w, loadgen.LoadgenConfig(target=rurl, mode="qps", qps=QPS))
        return _row(group.stats(), sum(o.status != "ok" for o in outs))
    finally:
        await rrun.cleanup()
        await group.server.close()
        await group.stop()


def _row(st: dict, bad: int) -> dict:
    return {
        "maxmin": round(st["avg_imbalance_maxmin"], 1),
        "tok_s": round(st["throughput_tok_s"]),
        "completed": st["requests_completed"],
        "errors": bad,
    }


CONFIGS = {
    "streamed": ("streamed", 1, 0.25),
    "decision-only": ("decision-only", 1, 0.25),
    "streamed x2": ("streamed", 2, 0.25),
    "decision-only x2": ("decision-only", 2, 0.25),
    "streamed x2, blind": ("streamed", 2, 0.0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--policy", default="br0")
    ap.add_argument("--only", nargs="*", default=None, help=f"configurations to run (of {', '.join(CONFIGS)}, serve)")
    ap.add_argument("--core", type=int, default=0, help="core of this process (ranks, pickers, load generator)")
    ap.add_argument("--envoy-core", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true")
    a = ap.parse_args()
    if not a.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.core})
    src = load_trace("mooncake-conversation").filter(max_requests=a.requests)
    w = Workload.from_arrays(
        np.zeros(len(src)),
        np.maximum(1, np.round(src.prompt * SCALE)),
        np.minimum(src.output, CAP),
        name="mooncake-scaled",
        has_timestamps=False,
    )
    names = a.only or [*CONFIGS, "serve"]
    rows = {}
    for name in names:
        if name == "serve":
            rows[name] = asyncio.run(_serve(w, a))
        else:
            mode, n, every = CONFIGS[name]
            rows[name] = asyncio.run(_gateway(w, a, mode, n, every, None if a.no_pin else a.envoy_core))
        print(json.dumps({"config": name, **rows[name]}), flush=True)
    base = rows.get("streamed", {}).get("maxmin")
    print(f"\nG = {a.workers}, B = {a.slots}, policy {a.policy}, {a.requests} requests\n")
    print("| configuration | max–min | × streamed | tok/s | completed | errors | decision P50 / P99 µs", end="")
    print(" | policy P50 / P99 µs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        ratio = f"{r['maxmin'] / base:.2f}" if base else "–"
        dec = f"{r['pick_p50_us']} / {r['pick_p99_us']}" if "pick_p50_us" in r else "–"
        pol = f"{r['policy_p50_us']} / {r['policy_p99_us']}" if "policy_p50_us" in r else "–"
        head = f"| {name} | {r['maxmin']:,} | {ratio} | {r['tok_s']:,} | {r['completed']} | {r['errors']}"
        print(f"{head} | {dec} | {pol} |")


if __name__ == "__main__":
    main()
