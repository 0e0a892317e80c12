"""CPU per relayed token of Envoy + the picker (both modes) beside ``dpbalance serve`` (and, when given,
vllm-router and sglang-router), with many concurrent streams through each.

    python benchmarks/bench_gateway_cpu.py [--streams 1000] [--tokens 64] [--G 8]
        [--vllm-router PATH] [--sglang-router PATH]

Processes: ``dpbalance engine-sim`` (G ranks, slots = streams / G so every stream runs at once, time scale
1000 so steps take no time) and this script's clients share ``--load-core``; the front door under test gets
``--front-core`` to itself: Envoy (``--concurrency 1``) and ``dpbalance epp`` together, or ``dpbalance serve``,
or a Rust router. Before each measured phase the same number of one-token streams warms the connections up.

Reported per front door: CPU (user + system, from /proc, every process of the front door) over the measured
phase divided by the tokens the clients received; tokens/s; streams that did not get every token
(``short_streams``: 0 means all ``--streams`` concurrent streams completed); the picker's decision P50/P99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from bench_router import _get, _proc_cpu_rss, _session, _streams, _taskset, _wait_up  # noqa: E402

from dpbalance.gateway import EppConfig, bootstrap  # noqa: E402
from dpbalance.gateway.envoy import envoy_binary  # noqa: E402

PY = sys.executable
TMP = os.environ.get("TMPDIR", "/tmp")


def _epp_cmds(mode: str, urls: list[str], slots: int, core, gport: int, mport: int, lport: int, aport: int):
    cfg = EppConfig(decode=tuple(urls), slots=slots, port=gport, envoy_port=lport, mode=mode)
    conf = bootstrap(cfg, listen="127.0.0.1", admin_port=aport)
    path = os.path.join(TMP, f"bench-envoy-{mode}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(conf, f)
    epp = _taskset(core) + [PY, "-m", "dpbalance", "epp", "--port", str(gport), "--prometheus-port", str(mport)]
    epp += ["--slots", str(slots), "--policy", "br0", "--tokenize", "estimate", "--mode", mode, "--worker-urls", *urls]
    envoy = _taskset(core) + [envoy_binary(), "-c", path, "--concurrency", "1", "-l", "error", "--use-dynamic-base-id"]
    return [epp, envoy], f"http://127.0.0.1:{lport}", f"http://127.0.0.1:{aport}/ready"


def _front(kind: str, urls: list[str], slots: int, core, port0: int):
    """(commands, URL clients use, URL that answers 200 once it is up)."""
    if kind in ("streamed", "decision-only"):
        return _epp_cmds(kind, urls, slots, core, port0, port0 + 1, port0 + 2, port0 + 3)
    if kind == "serve":
        cmd = _taskset(core) + [PY, "-m", "dpbalance", "serve", "--port", str(port0), "--slots", str(slots)]
        cmd += ["--policy", "br0", "--tokenize", "estimate", "--worker-urls", *urls]
        return [cmd], f"http://127.0.0.1:{port0}", f"http://127.0.0.1:{port0}/health"
    name, exe = kind.split("=", 1)
    cmd = _taskset(core) + [exe] + (["launch"] if name == "sglang-router" else [])
    cmd += ["--host", "127.0.0.1", "--port", str(port0), "--worker-urls", *urls]
    cmd += ["--policy", "round_robin", "--prometheus-port", str(port0 + 1)]  # each its own metrics port
    return [cmd], f"http://127.0.0.1:{port0}", f"http://127.0.0.1:{port0}/health"


async def _until_up(url: str, timeout: float = 60.0) -> None:
    async with _session() as s:
        for _ in range(int(timeout / 0.1)):
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _measure(url: str, pids: list[int], streams: int, tokens: int, ramp: float):
    async with _session() as s:
        await _streams(url, streams, 1, ramp, session=s)  # warm-up: connections open, as in a long run
        cpu0 = sum(_proc_cpu_rss(p)[0] for p in pids)
        t0 = time.time()
        got, short = await _streams(url, streams, tokens, ramp, session=s)
        wall = time.time() - t0
        cpu1 = sum(_proc_cpu_rss(p)[0] for p in pids)
    return got, short, cpu1 - cpu0, wall


def run(kind: str, a, port0: int) -> dict:
    slots = max(1, a.streams // a.G)
    base = port0 + 10
    eng = subprocess.Popen(
        _taskset(a.load_core)
        + [PY, "-m", "dpbalance", "engine-sim", "--ranks", str(a.G), "--base-port", str(base)]
        + ["--slots", str(slots), "--time-scale", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    urls = [f"http://127.0.0.1:{base + g}" for g in range(a.G)]
    procs = []
    try:
        for u in urls:
            asyncio.run(_wait_up(u))
        cmds, url, up = _front(kind, urls, slots, a.front_core, port0)
        log = open(os.path.join(TMP, f"bench-gateway-cpu-{kind.split('=')[0]}.log"), "w")
        procs = [subprocess.Popen(c, stdout=log, stderr=log) for c in cmds]
        asyncio.run(_until_up(up))
        asyncio.run(_until_up(url + "/v1/models"))
        time.sleep(1.5)  # the picker's first health round and rank scrape
        got, short, cpu, wall = asyncio.run(_measure(url, [p.pid for p in procs], a.streams, a.tokens, a.ramp))
        row = {
            "front": kind.split("=")[0],
            "streams": a.streams,
            "tokens": got,
            "short_streams": short,
            "cpu_us_per_token": round(cpu / max(1, got) * 1e6, 2),
            "tok_s": round(got / wall),
            "front_core_busy": round(cpu / wall, 2),
        }
        if kind in ("streamed", "decision-only"):
            d = _get(f"http://127.0.0.1:{port0 + 1}/debug/epp?last={a.streams}")
            row.update(decision_p50_us=round(d["p50_us"]), decision_p99_us=round(d["p99_us"]), outcomes=d["outcomes"])
        return row
    finally:
        for p in procs + [eng]:
            p.send_signal(signal.SIGINT)
        for p in procs + [eng]:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--ramp", type=float, default=0.5)
    ap.add_argument("--fronts", nargs="+", default=["streamed", "decision-only", "serve"])
    ap.add_argument("--vllm-router", default=None, help="vllm-router binary (pip install vllm-router)")
    ap.add_argument("--sglang-router", default=None, help="sglang-router binary (pip install sglang-router)")
    ap.add_argument("--front-core", type=int, default=0)
    ap.add_argument("--load-core", type=int, default=1)
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.load_core})
    fronts = list(a.fronts)
    if a.vllm_router:
        fronts.append(f"vllm-router={a.vllm_router}")
    if a.sglang_router:
        fronts.append(f"sglang-router={a.sglang_router}")
    for i, kind in enumerate(fronts):
        print(json.dumps(run(kind, a, 19100 + 100 * i)), flush=True)


if __name__ == "__main__":
    main()
