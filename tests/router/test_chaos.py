"""Chaos: a few hundred mixed clients against engine-sim ranks and a strict fake vLLM rank while one rank is
killed and revived and another is paused. Afterwards the router's outcome counters must match what the
clients saw, no slot may be held anywhere, and the revived rank must serve again."""

import asyncio
import json
import random
import time

import aiohttp
import pytest

from dpbalance.emulator import start_group
from dpbalance.router.server import RouterConfig, start_router
from tests.router.fake_vllm import FakeRank
from tests.router.stacks import Stack

pytestmark = pytest.mark.timeout(120)

N = 300
MALFORMED = [
    b"{oops",
    b"[1]",
    b'{"prompt": 5}',
    b'{"prompt": "a", "max_tokens": -1}',
    b'{"prompt": "a", "stream": "y"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"prompt": "a", "max_tokens": ' + b"9" * 5000 + b"}",
    b'{"prompt": "a", "stream": true, "stream_options": "x"}',
]
KINDS = (
    ["stream"] * 30
    + ["nonstream"] * 15
    + ["slow"] * 8
    + ["disconnect"] * 10
    + ["nonstream_gone"] * 7
    + ["malformed"] * 12
    + ["unknown_model"] * 9
    + ["bad_param"] * 9
)


async def _client(s: aiohttp.ClientSession, url: str, kind: str, rng: random.Random, placed=None) -> str:
    """One client; returns what it saw: completed, rejected or failed. ``placed`` holds the prompts the router
    has taken in (a client that gives up does so only once the router has its request)."""
    u = url + "/v1/completions"
    n = rng.randint(50, 200) if kind in ("stream", "slow") else rng.randint(10, 60)
    try:
        if kind == "malformed":
            async with s.post(u, data=rng.choice(MALFORMED), headers={"Content-Type": "application/json"}) as r:
                await r.read()
                return "rejected" if 400 <= r.status < 500 else "failed"
        if kind in ("unknown_model", "bad_param"):
            body = (
                {"prompt": "a b", "model": "nope"}
                if kind == "unknown_model"
                else {"prompt": "a b", "stream_options": {"include_usage": True}}
            )  # vLLM: options need stream=True
            async with s.post(u, json=body) as r:
                await r.read()
                return "rejected" if 400 <= r.status < 500 else "failed"
        if kind in ("nonstream", "nonstream_gone"):
            tag = f"a b c {rng.random()}"
            body = {"prompt": tag, "max_tokens": n if kind == "nonstream" else 100_000}

            async def call():
                async with s.post(u, json=body) as r:
                    d = await r.json(content_type=None)
                    return (
                        "completed"
                        if r.status == 200 and "choices" in d
                        else "rejected"
                        if 400 <= r.status < 500
                        else "failed"
                    )

            if kind == "nonstream":
                return await call()
            task = asyncio.create_task(call())
            for _ in range(500):  # until the router has it (waiting in its pool or running)
                if task.done() or tag in placed:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            if task.done():
                return task.result()
            task.cancel()
            return "failed"
        body = {"prompt": "x y", "max_tokens": 100_000 if kind == "disconnect" else n, "stream": True}
        async with s.post(u, json=body) as r:
            if r.status != 200:
                await r.read()
                return "rejected" if 400 <= r.status < 500 else "failed"
            if kind == "disconnect":
                await r.content.readuntil(b"\n\n")
                r.close()
                return "failed"  # it left (an error event first would be a failure too)
            text = b""
            while True:
                chunk = await r.content.readany()
                if not chunk:
                    break
                text += chunk
                if kind == "slow":
                    await asyncio.sleep(0.02)
            ok = text.endswith(b"data: [DONE]\n\n") and b'data: {"error"' not in text
            return "completed" if ok else "failed"
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
        return "failed"


def test_chaos_outcomes_match_clients_and_nothing_leaks():
    async def main():
        t_start = time.monotonic()
        group, urls, _ = await start_group(3, slots=8, time_scale=0.5)
        fake = FakeRank(tokens_per_s=100)
        furl = await fake.start()
        router, url, runner = await start_router(
            RouterConfig(
                decode=tuple(urls) + (furl,),
                slots=8,
                tokenize="estimate",
                health_interval_s=0.2,
                upstream_read_timeout_s=2.0,
                request_timeout_s=4.0,
                queue_timeout_s=2.0,
                cb_failure_threshold=2,
                cb_timeout_s=0.5,
                client_timeout_s=2.0,
                backoff_s=0.02,
            )
        )
        st = Stack(router, url, [fake], group, urls)
        placed = set()
        submit = router.dispatcher.submit
        router.dispatcher.submit = lambda t: (placed.add(t.body.get("prompt")), submit(t))[1]
        rng = random.Random(7)
        conn = aiohttp.TCPConnector(limit=0)
        try:
            async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:

                async def fire(i: int):
                    await asyncio.sleep(i * 0.03)  # ≈ 33 requests/s over ≈ 9 s
                    return await _client(s, url, rng.choice(KINDS), random.Random(i), placed)

                async def faults():
                    await asyncio.sleep(2.0)
                    await group.server.kill(1)  # connection refused, its streams cut
                    await asyncio.sleep(1.5)
                    async with s.post(urls[2] + "/admin/pause") as r:  # its streams stall
                        assert r.status == 200
                    await asyncio.sleep(3.0)
                    async with s.post(urls[2] + "/admin/resume") as r:
                        assert r.status == 200
                    await asyncio.sleep(1.0)
                    await group.server.revive(1)

                seen, _ = await asyncio.gather(asyncio.gather(*[fire(i) for i in range(N)]), faults())
                await st.settle(timeout=15)
                async with s.get(url + "/metrics") as r:
                    text = await r.text()
                # the revived rank serves again (its breaker closed after a health check)
                for _ in range(40):
                    if router.breaker.state[1] == 0:
                        break
                    await asyncio.sleep(0.1)
                before = group.ranks[1].generation_tokens
                more = await asyncio.gather(*[_client(s, url, "stream", random.Random(1000 + i)) for i in range(40)])
                assert more.count("completed") >= 36  # (a loaded machine may stall a stream past the timeout)
                assert group.ranks[1].generation_tokens > before
                seen = list(seen) + more
                await st.settle(timeout=15)
                async with s.get(url + "/metrics") as r:
                    text = await r.text()
            got = {o: sum(1 for x in seen if x == o) for o in ("completed", "failed", "rejected")}
            counted = {
                o: sum(
                    float(ln.rsplit(" ", 1)[1])
                    for ln in text.splitlines()
                    if ln.startswith("dpbalance_requests_total{") and f'outcome="{o}"' in ln
                )
                for o in got
            }
            assert sum(counted.values()) == N + 40, (counted, got)
            assert counted == got, (counted, got)
            assert got["completed"] > N / 3 and got["failed"] > 10 and got["rejected"] > 40
            await st.settle(timeout=10)
            assert router.dispatcher.active == 0 and len(router.dispatcher.pool) == 0 and not router.inflight
            assert group.running() == 0 and fake.running == 0
            assert time.monotonic() - t_start < 60
        finally:
            await runner.cleanup()
            await group.server.close()
            await group.stop()
            await fake.stop()

    asyncio.run(main())
