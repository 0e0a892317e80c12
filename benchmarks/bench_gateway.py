"""The picker behind a real Envoy on engine-sim: balance in both load-accounting modes and with two replicas,
and the picker's decision latency, on one trace.

    python benchmarks/bench_gateway.py [--requests 1000] [--workers 8] [--slots 16] [--policy br0] [--repeat 3]

Workload (as ``bench_live_vs_sim.py``): the first N requests of mooncake-conversation, prompts × 1/8, outputs
capped at 128, Poisson arrivals at 1,500 requests/s (heavy load: the pool holds a queue). Engine-sim ranks
(``--time-scale``) and the load generator share this process (pinned to ``--core``, with Envoy); the pickers
run as ``dpbalance epp`` processes pinned to ``--epp-core``. Each configuration runs on fresh ranks:

- ``streamed``: one picker, response bodies through it (exact token counts);
- ``decision-only``: one picker, no body (progress estimated from the ranks' step time);
- ``streamed x2`` / ``decision-only x2``: two pickers behind one Envoy (each request goes to one of them), each
  with ``--replicas 2`` (half of every rank's slots) and holding what the ranks report beyond its own requests
  (``--rank-metrics-interval-s``);
- ``decision-only x2, blind``: the same without the ranks' metrics (each sees only its own half);
- ``streamed x2, leader`` / ``decision-only x2, leader``: two pickers with ``--peers`` (leader election: the
  follower reports NOT_SERVING, Envoy's health checks send everything to the leader);
- ``serve``: ``dpbalance serve``'s own relay, for reference.

Reported (medians of ``--repeat`` interleaved runs, every run's max–min beside it: live runs vary a lot from one
to the next): the engine's whole-run average max–min load over steps (``/admin/stats``), its throughput, the
ratio of each max–min to the streamed one (of medians, and paired by repeat: median and range), and the
picker's decision latency (body received → destination sent, P50/P99, which here is mostly the wait in the pool:
the load is heavy) and the policy call latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys

import aiohttp
import numpy as np

from dpbalance import loadgen
from dpbalance.core import Workload
from dpbalance.emulator import start_group
from dpbalance.gateway import EppConfig, bootstrap
from dpbalance.gateway.envoy import EnvoyProcess
from dpbalance.router.server import RouterConfig, start_router
from dpbalance.traces import load_trace

SCALE, CAP, QPS = 1 / 8, 128, 1500.0


def _free_port() -> int:
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def _pct(x, p):
    return round(float(np.percentile(np.asarray(x), p)), 1) if len(x) else None


def _pin(core) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


def _epp_cmd(a, urls, mode, interval, replicas, port, mport, core, peers=()) -> list[str]:
    cmd = _pin(core) + [sys.executable, "-m", "dpbalance", "epp", "--port", str(port), "--prometheus-port", str(mport)]
    cmd += ["--slots", str(a.slots), "--policy", a.policy, "--tokenize", "estimate", "--mode", mode]
    cmd += ["--rank-metrics-interval-s", str(interval), "--replicas", str(replicas), "--worker-urls", *urls]
    for p in peers:
        cmd += ["--peers", p]
    return cmd


async def _ready(url: str, timeout: float = 30.0) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(int(timeout / 0.1)):
            try:
                async with s.get(url) as r:
                    if r.status == 200 and (await r.json()).get("ready"):
                        return
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


async def _gateway(w, a, mode: str, replicas: int, interval: float, leader: bool = False) -> dict:
    group, urls, runners = await start_group(a.workers, slots=a.slots, time_scale=a.time_scale)
    ports = [(_free_port(), _free_port()) for _ in range(replicas)]
    peers = [f"127.0.0.1:{p}" for p, _ in ports] if leader else []
    share = 1 if leader else replicas  # a leader and its standbys each may use every slot
    procs = [
        subprocess.Popen(_epp_cmd(a, urls, mode, interval, share, p, m, a.epp_core, peers), stdout=subprocess.DEVNULL)
        for p, m in ports
    ]
    kw = dict(decode=tuple(urls), slots=a.slots, mode=mode)
    conf = bootstrap(
        EppConfig(**kw, port=ports[0][0], envoy_port=_free_port()),
        pickers=[f"127.0.0.1:{p}" for p, _ in ports],
        listen="127.0.0.1",
        admin_port=_free_port(),
    )
    envoy = EnvoyProcess(conf, prefix=_pin(a.envoy_core))
    try:
        if leader:  # only the leader (the lowest address) is ready
            lowest = min(ports, key=lambda pm: pm[0])
            await _ready(f"http://127.0.0.1:{lowest[1]}/debug/epp")
        else:
            for _, m in ports:
                await _ready(f"http://127.0.0.1:{m}/debug/epp")
        await asyncio.sleep(4.5 if leader else 0)  # Envoy's first health checks of the standbys
        await envoy.start()
        outs = await loadgen.run(w, loadgen.LoadgenConfig(target=envoy.url, mode="qps", qps=QPS))
        bad = sum(o.status != "ok" for o in outs)
        st = group.stats()
        async with aiohttp.ClientSession() as s:
            stats = []
            for _, m in ports:
                async with s.get(f"http://127.0.0.1:{m}/debug/epp?samples=1") as r:
                    stats.append(await r.json())
        picks = [x for d in stats for x in d["pick_us"]]
        calls = [x for d in stats for x in d["policy_us"]]
        return {
            **_row(st, bad),
            "pick_p50_us": _pct(picks, 50),
            "pick_p99_us": _pct(picks, 99),
            "policy_p50_us": _pct(calls, 50),
            "policy_p99_us": _pct(calls, 99),
        }
    finally:
        await envoy.stop()
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        await group.server.close()
        await group.stop()


async def _serve(w, a) -> dict:
    group, urls, runners = await start_group(a.workers, slots=a.slots, time_scale=a.time_scale)
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
    "decision-only x2, blind": ("decision-only", 2, 0.0),
    "streamed x2, leader": ("streamed", 2, 0.25, True),
    "decision-only x2, leader": ("decision-only", 2, 0.25, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--policy", default="br0")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (the table shows medians)")
    ap.add_argument("--only", nargs="*", default=None, help=f"configurations to run (of {', '.join(CONFIGS)}, serve)")
    ap.add_argument("--time-scale", type=float, default=0.25, help="engine-sim speed (lower: nothing CPU-bound)")
    ap.add_argument("--core", type=int, default=1, help="core of this process (ranks, load generator, serve)")
    ap.add_argument("--envoy-core", type=int, default=1)
    ap.add_argument("--epp-core", type=int, default=0, help="core of the pickers")
    ap.add_argument("--no-pin", action="store_true")
    a = ap.parse_args()
    if a.no_pin:
        a.epp_core = a.envoy_core = None
    elif hasattr(os, "sched_setaffinity"):
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
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(a.repeat):
        for name in names:  # interleaved, so a slow spell of the machine hits every configuration alike
            if name == "serve":
                r = asyncio.run(_serve(w, a))
            else:
                r = asyncio.run(_gateway(w, a, *CONFIGS[name]))
            runs[name].append(r)
            print(json.dumps({"config": name, "run": rep, **r}), flush=True)
    rows = {n: {k: float(np.median([r[k] for r in rs])) for k in rs[0] if r_is_num(rs[0][k])} for n, rs in runs.items()}
    base = rows.get("streamed", {}).get("maxmin")
    print(f"\nG = {a.workers}, B = {a.slots}, policy {a.policy}, {a.requests} requests, median of {a.repeat} runs\n")
    print(
        "| configuration | max–min (runs) | × streamed | tok/s | errors | decision P50 / P99 ms | policy P50 / P99 µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        each = ", ".join(f"{x['maxmin']:,.0f}" for x in runs[name])
        ratio = f"{r['maxmin'] / base:.2f}" if base else "–"
        dec = f"{r['pick_p50_us'] / 1e3:,.0f} / {r['pick_p99_us'] / 1e3:,.0f}" if "pick_p50_us" in r else "–"
        pol = f"{r['policy_p50_us']:.0f} / {r['policy_p99_us']:.0f}" if "policy_p50_us" in r else "–"
        head = f"| {name} | {r['maxmin']:,.0f} ({each}) | {ratio} | {r['tok_s']:,.0f} | {r['errors']:.0f}"
        print(f"{head} | {dec} | {pol} |")
    if "streamed" in runs:
        print("\nPaired by repeat (each run against the streamed run of the same repeat): median ratio [min, max]\n")
        for name, rs in runs.items():
            if name == "streamed":
                continue
            q = [x["maxmin"] / s["maxmin"] for x, s in zip(rs, runs["streamed"])]
            print(f"- {name}: {np.median(q):.2f} [{min(q):.2f}, {max(q):.2f}] over {len(q)} repeats")


def r_is_num(v) -> bool:
    return isinstance(v, (int, float)) and v is not None


if __name__ == "__main__":
    main()
