"""Router overhead under 2,000 concurrent streams on loopback.

    python benchmarks/bench_router.py [--streams 2000] [--tokens 64]

engine-sim (G ranks, slots = streams/G so every stream runs at once) and the router run as separate processes.
Each engine chunk carries its emission time; the client measures emission → receipt per token, once with the
same 2,000 streams sent straight to the ranks and once through the router (arrivals ramped over 2 s): the
difference is the latency the router adds per token. All three processes share the machine's 2 cores.
Also reported: the router's dispatch P50/P99 (its /debug/dispatch) at G = 8 and G = 64, its CPU seconds and
peak RSS (from /proc).
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

import aiohttp
import numpy as np

PY = sys.executable


def _proc_cpu_rss(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().split(")")[-1].split()
    cpu = (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    return cpu, rss


async def _wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _streams(urls: list[str], n: int, tokens: int, ramp_s: float = 2.0) -> np.ndarray:
    """n streams spread over ``urls`` round-robin, started evenly over ``ramp_s``; per-token latencies."""
    lat = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as s:
        async def one(i):
            await asyncio.sleep(ramp_s * i / n)
            url = urls[i % len(urls)]
            async with s.post(url + "/v1/completions", json={"prompt": "a b c d", "max_tokens": tokens, "stream": True,
                                                             "ignore_eos": True}) as r:
                buf = b""
                async for chunk in r.content.iter_any():
                    now = time.time()
                    buf += chunk
                    while b"\n\n" in buf:
                        raw, buf = buf.split(b"\n\n", 1)
                        data = raw[5:].strip()
                        if data and data != b"[DONE]":
                            ev = json.loads(data)
                            if "ts" in ev:
                                lat.append(now - ev["ts"])
        await asyncio.gather(*[one(i) for i in range(n)])
    return np.array(lat)


def run(G: int, streams: int, tokens: int, base: int) -> dict:
    slots = max(1, streams // G)
    eng = subprocess.Popen([PY, "-m", "dpbalance", "engine-sim", "--ranks", str(G), "--base-port", str(base),
                            "--slots", str(slots), "--time-scale", "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rport = base - 1
    cmd = [PY, "-m", "dpbalance", "serve", "--port", str(rport), "--slots", str(slots), "--policy", "br0",
           "--tokenize", "estimate"]
    for g in range(G):
        cmd += ["--decode", f"http://127.0.0.1:{base + g}"]
    rtr = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(_wait_up(f"http://127.0.0.1:{base}"))
        asyncio.run(_wait_up(f"http://127.0.0.1:{rport}"))
        ranks = [f"http://127.0.0.1:{base + g}" for g in range(G)]
        direct = asyncio.run(_streams(ranks, streams, tokens))  # same load straight to the ranks
        cpu0, _ = _proc_cpu_rss(rtr.pid)
        t0 = time.time()
        routed = asyncio.run(_streams([f"http://127.0.0.1:{rport}"], streams, tokens))
        wall = time.time() - t0
        cpu1, rss = _proc_cpu_rss(rtr.pid)

        async def disp():
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{rport}/debug/dispatch") as r:
                    return await r.json()

        d = asyncio.run(disp())
    finally:
        for p in (rtr, eng):
            p.send_signal(signal.SIGINT)
        for p in (rtr, eng):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    q = lambda x, p: float(np.percentile(x, p)) * 1e3  # noqa: E731
    return {"G": G, "streams": streams, "tokens_routed": len(routed),
            "direct_p50_ms": q(direct, 50), "direct_p99_ms": q(direct, 99),
            "routed_p50_ms": q(routed, 50), "routed_p99_ms": q(routed, 99),
            "added_p50_ms": q(routed, 50) - q(direct, 50), "added_p99_ms": q(routed, 99) - q(direct, 99),
            "dispatch_p50_us": d["p50_us"], "dispatch_p99_us": d["p99_us"], "dispatch_calls": d["calls"],
            "dispatch_cpu_p50_us": d["cpu_p50_us"], "dispatch_cpu_p99_us": d["cpu_p99_us"],
            "router_cpu_s": cpu1 - cpu0, "wall_s": wall, "router_peak_rss_mb": rss, "outcomes": d["outcomes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    for G, base in ((8, 18201), (64, 18301)):
        r = run(G, args.streams, args.tokens, base)
        print(json.dumps(r))


if __name__ == "__main__":
    main()
