"""The picker's decision latency at G = 8: the time Envoy waits for the destination of a request.

    python benchmarks/bench_epp_latency.py [--G 8] [--slots 72] [--requests 3000] [--rates 50 200 400]

Processes: ``dpbalance engine-sim`` (G ranks; pinned to ``--load-core``), ``dpbalance epp`` in front of them
(``--policy``, ``--tokenize estimate``; pinned to ``--epp-core``) and this script (``--load-core``), which speaks
ext_proc to the picker itself as Envoy would: request headers, the buffered body, then — once the destination
is back — a 200 response header and a streamed body ending in ``[DONE]``, so every request ends and frees its
slot. Requests start at a fixed rate (open loop, ``--rates``); capacity (G × slots) is far above what is in
flight, so no request waits for a slot and the figure is the decision itself: gRPC transport, parsing, the
pool and one policy call.

Reported per rate: client-side latency (request body sent → destination received) P50/P99, and the
picker's own (``/debug/epp``: body received → destination sent) P50/P99.
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

import grpc
import numpy as np
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, os.path.dirname(__file__))
from bench_router import _get, _taskset, _wait_up  # noqa: E402

PY = sys.executable
_HDRS = pb.HttpHeaders(
    headers=base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=k, value=v)
            for k, v in ((":method", "POST"), (":path", "/v1/completions"), ("content-type", "application/json"))
        ]
    )
)
_STATUS = pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":status", value="200")]))
_CHUNK = b'data: {"choices":[{"text":" a"}]}\n\n' * 8 + b"data: [DONE]\n\n"


async def _one(stub, body: bytes, lat: list) -> None:
    q: asyncio.Queue = asyncio.Queue()

    async def gen():
        yield pb.ProcessingRequest(request_headers=_HDRS)
        yield await q.get()
        yield await q.get()
        yield await q.get()

    call = stub.Process(gen())
    it = call.__aiter__()
    await it.__anext__()  # headers: continue
    t0 = time.perf_counter()
    await q.put(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))
    r = await it.__anext__()
    lat.append((time.perf_counter() - t0) * 1e6)
    assert r.request_body.response.header_mutation.set_headers, r
    await q.put(pb.ProcessingRequest(response_headers=_STATUS))
    await it.__anext__()
    await q.put(pb.ProcessingRequest(response_body=pb.HttpBody(body=_CHUNK, end_of_stream=True)))
    await it.__anext__()
    call.cancel()


async def _drive(port: int, n: int, rate: float) -> list[float]:
    """``n`` requests started at ``rate`` per second (open loop: a slow answer does not slow the arrivals)."""
    lat: list[float] = []
    body = json.dumps({"prompt": "a b c d e f g h", "max_tokens": 8, "stream": True}).encode()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.ExternalProcessorStub(ch)

        async def at(i: int, r: float):
            await asyncio.sleep(i / r)
            await _one(stub, body, lat)

        await asyncio.gather(*[at(i, 200.0) for i in range(200)])  # warm-up
        lat.clear()
        await asyncio.gather(*[at(i, rate) for i in range(n)])
    return lat


async def _ready(port: int, timeout: float = 30.0) -> None:
    """Until the picker's gRPC readiness service says SERVING (its ranks are in rotation)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(int(timeout / 0.1)):
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"))
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the picker did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--slots", type=int, default=72)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rates", type=float, nargs="+", default=[50, 200, 400], help="requests per second")
    ap.add_argument("--policy", default="br0")
    ap.add_argument("--epp-core", type=int, default=0)
    ap.add_argument("--load-core", type=int, default=1)
    a = ap.parse_args()
    base, gport, mport = 18601, 18599, 18598
    eng = subprocess.Popen(
        _taskset(a.load_core)
        + [PY, "-m", "dpbalance", "engine-sim", "--ranks", str(a.G), "--base-port", str(base), "--slots", str(a.slots)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cmd = _taskset(a.epp_core) + [PY, "-m", "dpbalance", "epp", "--port", str(gport), "--prometheus-port", str(mport)]
    cmd += ["--slots", str(a.slots), "--policy", a.policy, "--tokenize", "estimate", "--worker-urls"]
    cmd += [f"http://127.0.0.1:{base + g}" for g in range(a.G)]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.load_core})
    epp = None
    try:
        for g in range(a.G):
            asyncio.run(_wait_up(f"http://127.0.0.1:{base + g}"))
        log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "bench-epp-latency.log"), "w")
        epp = subprocess.Popen(cmd, stdout=log, stderr=log)
        for _ in range(100):
            try:
                _get(f"http://127.0.0.1:{mport}/debug/epp")
                break
            except Exception:
                time.sleep(0.1)
        asyncio.run(_ready(gport))
        for rate in a.rates:
            n = int(min(a.requests, rate * 15))  # at most 15 s per rate
            lat = asyncio.run(_drive(gport, n, rate))
            d = _get(f"http://127.0.0.1:{mport}/debug/epp?last={n}")
            row = {
                "G": a.G,
                "policy": a.policy,
                "rate_per_s": rate,
                "requests": len(lat),
                "client_p50_us": round(float(np.percentile(lat, 50)), 1),
                "client_p99_us": round(float(np.percentile(lat, 99)), 1),
                "epp_p50_us": round(d["p50_us"], 1),
                "epp_p99_us": round(d["p99_us"], 1),
                "policy_p50_us": d["policy_p50_us"],
                "policy_p99_us": d["policy_p99_us"],
                "outcomes": d["outcomes"],
            }
            print(json.dumps(row), flush=True)
    finally:
        procs = [p for p in (epp, eng) if p is not None]
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
