"""Chaos through Envoy: mixed clients (streams, non-stream, slow readers, clients that leave, malformed bodies)
while a rank is killed and revived and the picker itself is restarted. Afterwards every request a picker saw
has exactly one outcome, the outcome counters match what the clients saw, and no slot is held anywhere."""

import asyncio
import random

import aiohttp
import pytest

from dpbalance.gateway import picker as picker_mod
from dpbalance.router.dispatcher import Ticket
from tests.gateway.stack import gateway

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]

N = 160
KINDS = ["stream"] * 10 + ["nonstream"] * 5 + ["slow"] * 3 + ["disconnect"] * 4 + ["malformed"] * 3


async def _client(s: aiohttp.ClientSession, url: str, kind: str, rng: random.Random, tag: str = "x y") -> str:
    """completed / rejected / failed as the client saw it; ``gateway`` for an error Envoy made up itself (no
    picker answered: the picker was restarting)."""
    u = url + "/v1/completions"
    n = rng.randint(20, 120)
    try:
        if kind == "malformed":
            async with s.post(u, data=b"{oops", headers={"Content-Type": "application/json"}) as r:
                return "rejected" if r.status == 400 else _other(r, await r.read())
        body = {"prompt": tag, "max_tokens": 100_000 if kind == "disconnect" else n, "stream": kind != "nonstream"}
        async with s.post(u, json=body) as r:
            if r.status != 200:
                return _other(r, await r.read())
            if kind == "nonstream":
                d = await r.json()
                return "completed" if d["usage"]["completion_tokens"] == n else "failed"
            if kind == "disconnect":
                await r.content.readuntil(b"\n\n")
                r.close()
                return "failed"
            text = b""
            while chunk := await r.content.readany():
                text += chunk
                if kind == "slow":
                    await asyncio.sleep(0.01)
            ok = text.endswith(b"data: [DONE]\n\n") and b'data: {"error"' not in text
            return "completed" if ok else "failed"
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return "failed"


def _other(r: aiohttp.ClientResponse, raw: bytes) -> str:
    if r.headers.get("content-type", "").startswith("application/json"):  # the picker's (or a rank's) answer
        if r.status == 503 and b"shutting down" in raw:
            return "shutting_down"  # the picker refused it while stopping: counted rejected, no ticket
        return "rejected" if 400 <= r.status < 500 else "failed"
    return "gateway"


def test_chaos_through_envoy_every_request_once_and_nothing_held(monkeypatch):
    made: list[Ticket] = []

    class Tracked(Ticket):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(picker_mod, "Ticket", Tracked)

    async def main():
        async with gateway(
            ranks=3, sim_kw={"time_scale": 2.0}, cb_failure_threshold=1, cb_timeout_s=0.3, queue_timeout_s=2.0
        ) as st:
            rng = random.Random(3)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30)
            ) as s:

                async def fire(i: int):
                    await asyncio.sleep(i * 0.025)  # 40 requests/s over 4 s
                    kind = rng.choice(KINDS)
                    return f"r{i}", kind, await _client(s, st.url, kind, random.Random(i), f"r{i}")

                async def faults():
                    await asyncio.sleep(0.8)
                    await st.group.server.kill(1)
                    await asyncio.sleep(0.8)
                    await st.restart_epp()
                    await asyncio.sleep(0.8)
                    await st.group.server.revive(1)

                seen, _ = await asyncio.gather(asyncio.gather(*[fire(i) for i in range(N)]), faults())
                await st.settle(timeout=20)
                # the revived rank serves again
                for _ in range(60):
                    if st.epp.router.breaker.state[1] == 0:
                        break
                    await asyncio.sleep(0.1)
                before = st.group.ranks[1].requests_ok
                more = await asyncio.gather(*[_client(s, st.url, "stream", random.Random(9000 + i)) for i in range(24)])
                assert more.count("completed") == 24, more
                assert st.group.ranks[1].requests_ok > before
                await st.settle(timeout=20)
            results = [r for _, _, r in seen] + more
            got = {o: results.count(o) for o in ("completed", "failed", "rejected")}
            counted = st.outcomes()
            # every ticket a picker made has its one outcome, and each client request became at most one ticket:
            # exactly one unless Envoy answered it itself (no picker listening while it restarted)
            assert made and all(t.outcome is not None for t in made)
            tickets = {}
            for t in made:
                tickets.setdefault(t.body["prompt"], []).append(t.outcome)
            for tag, kind, r in seen:
                if kind == "malformed":
                    continue
                n = len(tickets.get(tag, []))
                assert n == 1 or (n == 0 and r in ("gateway", "shutting_down")), (tag, kind, r, tickets.get(tag))
                if r in ("completed", "rejected"):
                    assert tickets[tag] == [r], (tag, kind, r, tickets[tag])
            gw = results.count("gateway")
            assert len(results) - gw <= sum(counted.values()) <= len(results), (counted, got, gw)
            refused = results.count("shutting_down")
            assert counted["completed"] == got["completed"], (counted, got)
            # a picker that answered (rejected) and was stopped before Envoy relayed the answer leaves the client
            # with Envoy's own error: that request is counted rejected, the client saw ``gateway``
            seen_rejected = got["rejected"] + refused
            assert seen_rejected <= counted["rejected"] <= seen_rejected + gw, (counted, got, refused, gw)
            assert got["completed"] > N / 3 and counted["failed"] >= 10
            # nothing held: no slot in any picker, no request left on any rank
            assert st.own_active() == 0 and st.group.running() == 0
            assert all(len(e.router.dispatcher.pool) == 0 and e.picker.streams == 0 for e in st.epps)

    asyncio.run(main())
