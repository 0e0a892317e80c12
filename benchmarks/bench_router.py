"""Relay cost of the router at its ceiling: router CPU per relayed token, relayed tokens/s on one core,
dispatch latency at G = 8 and G = 64, and memory at 2,000 concurrent streams.

    python benchmarks/bench_router.py [--streams 2000] [--tokens 64] [--G 8 64] [--profile DIR]

Three processes: ``dpbalance engine-sim`` (G ranks, slots = streams/G so every stream runs at once, a large
time-scale so engine steps take no simulated time), ``dpbalance serve`` in front of it, and this script's
clients (streams started evenly over ``--ramp`` seconds). With ``taskset`` the router gets one core to itself
(``--router-core``, default 0) and the engine and
the clients share the other (``--load-core``, default 1), so the router's CPU time is not inflated by
contention and its one core is the limit being measured.

Before the measured phase, the same number of one-token streams warms the router up (a long-running router
keeps its connections to the ranks open, so the measured phase does not pay for opening them).

Reported per G:
- ``router_cpu_us_per_token``: router process CPU time (user + system, from /proc) over the routed phase
  divided by the tokens relayed — request handling, dispatch, relay and accounting all included;
- ``relayed_tok_s``: tokens the clients received per wall second, with ``router_core_busy`` the fraction of
  its core the router used; ``ceiling_tok_s_one_core`` = 1e6 / router_cpu_us_per_token is what one fully busy
  core would relay (equal to the measured rate when the router's core is saturated);
- dispatch wall P50/P99 and CPU P50/P99 per policy call (the router's ``/debug/dispatch``);
- ``router_peak_rss_mb``: the router's peak resident memory (VmHWM);
- ``outcomes``: the router's outcome counters, and ``short_streams`` (streams that did not get every token).

``--non-stream`` sends non-stream requests instead (router CPU per request is then the figure to read).

``--profile DIR`` also samples the router with py-spy during the routed phase (``pip install py-spy``; py-spy
runs on the load core) and writes DIR/router-G<g>.txt (collapsed stacks) and the top functions by own time to
stdout. Take the figures from a run without ``--profile``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import aiohttp

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


async def _wait_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    async with aiohttp.ClientSession() as s:
        while time.time() < deadline:
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=600))


async def _streams(
    url: str, n: int, tokens: int, ramp_s: float, stream: bool = True, session: aiohttp.ClientSession | None = None
) -> tuple[int, int]:
    """n concurrent requests started evenly over ``ramp_s``; returns (tokens received, short answers).

    The client only counts SSE events (no JSON parsing) so it costs the shared core as little as possible;
    non-stream answers give their usage. With ``session`` the clients reuse its open connections."""
    got = 0
    short = 0
    body = {"prompt": "a b c d", "max_tokens": tokens, "stream": stream, "ignore_eos": True}
    async with contextlib.AsyncExitStack() as stack:
        s = session or await stack.enter_async_context(_session())

        async def one(i):
            nonlocal got, short
            await asyncio.sleep(ramp_s * i / n)
            k = 0
            async with s.post(url + "/v1/completions", json=body) as r:
                if not stream:
                    k = (await r.json())["usage"]["completion_tokens"]
                else:
                    async for chunk in r.content.iter_any():
                        k += chunk.count(b"data: ")
                    k -= 1  # [DONE]
            got += k
            if k != tokens:
                short += 1

        await asyncio.gather(*[one(i) for i in range(n)])
    return got, short


def _get(url: str) -> dict:
    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                return await r.json()

    return asyncio.run(main())


def _taskset(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


def run(
    G: int,
    streams: int,
    tokens: int,
    base: int,
    router_core,
    load_core,
    profile: str | None,
    ramp_s: float = 0.5,
    stream: bool = True,
    reuse: bool = True,
) -> dict:
    slots = max(1, streams // G)
    eng = subprocess.Popen(
        _taskset(load_core)
        + [
            PY,
            "-m",
            "dpbalance",
            "engine-sim",
            "--ranks",
            str(G),
            "--base-port",
            str(base),
            "--slots",
            str(slots),
            "--time-scale",
            "1000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rport = base - 1
    cmd = _taskset(router_core) + [
        PY,
        "-m",
        "dpbalance",
        "serve",
        "--port",
        str(rport),
        "--slots",
        str(slots),
        "--policy",
        "br0",
        "--tokenize",
        "estimate",
    ]
    for g in range(G):
        cmd += ["--decode", f"http://127.0.0.1:{base + g}"]
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-router-G{G}.log"), "w")
    rtr = subprocess.Popen(cmd, stdout=log, stderr=log)
    if load_core is not None and shutil.which("taskset"):
        os.sched_setaffinity(0, {load_core})
    try:
        for g in range(G):
            asyncio.run(_wait_up(f"http://127.0.0.1:{base + g}"))
        asyncio.run(_wait_up(f"http://127.0.0.1:{rport}"))
        rurl = f"http://127.0.0.1:{rport}"
        got, short, cpu, wall, rss = asyncio.run(
            _measure(rurl, rtr.pid, streams, tokens, ramp_s, stream, reuse, profile, G, load_core)
        )
        d = _get(rurl + "/debug/dispatch")
    finally:
        for p in (rtr, eng):
            p.send_signal(signal.SIGINT)
        for p in (rtr, eng):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    return _report(G, stream, streams, tokens, got, short, cpu, wall, rss, d, profile)


async def _measure(rurl, pid, streams, tokens, ramp_s, stream, reuse, profile, G, load_core):
    spy = None
    async with _session() as s:
        # warm up at full concurrency: the router's connection pool to the ranks then holds as many connections
        # as a long-running router in front of this load would (its keep-alive lasts 30 s); with ``reuse`` the
        # clients keep theirs too, as SDK clients with a connection pool do
        await _streams(rurl, streams, 1, ramp_s, session=s)
        if profile:
            os.makedirs(profile, exist_ok=True)
            spy_out = os.path.join(profile, f"router-G{G}.txt")
            exe = shutil.which("py-spy") or os.path.join(os.path.dirname(PY), "py-spy")
            spy = subprocess.Popen(
                _taskset(load_core)
                + [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--output",
                    spy_out,
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)
        cpu0, _ = _proc_cpu_rss(pid)
        t0 = time.time()
        got, short = await _streams(rurl, streams, tokens, ramp_s, stream, session=s if reuse else None)
        wall = time.time() - t0
        cpu1, rss = _proc_cpu_rss(pid)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    return got, short, cpu1 - cpu0, wall, rss


def _report(G, stream, streams, tokens, got, short, cpu, wall, rss, d, profile) -> dict:
    us_tok = cpu / max(1, got) * 1e6
    out = {
        "G": G,
        "stream": stream,
        "streams": streams,
        "tokens_per_stream": tokens,
        "tokens_relayed": got,
        "short_streams": short,
        "wall_s": round(wall, 2),
        "router_cpu_s": round(cpu, 2),
        "router_cpu_us_per_token": round(us_tok, 2),
        "router_cpu_us_per_request": round(cpu / streams * 1e6),
        "relayed_tok_s": round(got / wall),
        "router_core_busy": round(cpu / wall, 2),
        "ceiling_tok_s_one_core": round(1e6 / us_tok),
        "dispatch_calls": d["calls"],
        "dispatch_p50_us": d["p50_us"],
        "dispatch_p99_us": d["p99_us"],
        "dispatch_cpu_p50_us": d["cpu_p50_us"],
        "dispatch_cpu_p99_us": d["cpu_p99_us"],
        "router_peak_rss_mb": round(rss, 1),
        "outcomes": d["outcomes"],
    }
    if profile:
        out["profile"] = _top_functions(os.path.join(profile, f"router-G{G}.txt"))
    return out


def _top_functions(path: str, k: int = 15) -> list[tuple[str, float]]:
    """Own-time share of the k hottest functions in a py-spy raw (collapsed) profile."""
    own: collections.Counter = collections.Counter()
    total = 0
    try:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip().rpartition(" ")
                if not stack:
                    continue
                frames = stack.split(";")
                own[frames[-1]] += int(n)
                total += int(n)
    except OSError:
        return []
    return [(fn, round(100 * c / total, 1)) for fn, c in own.most_common(k)] if total else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--G", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--ramp", type=float, default=0.5, help="seconds over which the streams start")
    ap.add_argument("--non-stream", action="store_true", help="non-stream requests instead of streams")
    ap.add_argument(
        "--new-connections",
        action="store_true",
        help="every measured request opens a new client connection (default: clients keep theirs)",
    )
    ap.add_argument("--router-core", type=int, default=0)
    ap.add_argument("--load-core", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--profile", default=None, help="directory for py-spy profiles of the router")
    args = ap.parse_args()
    rc, lc = (None, None) if args.no_pin else (args.router_core, args.load_core)
    for i, G in enumerate(args.G):
        r = run(
            G,
            args.streams,
            args.tokens,
            18201 + 200 * i,
            rc,
            lc,
            args.profile,
            args.ramp,
            not args.non_stream,
            not args.new_connections,
        )
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
