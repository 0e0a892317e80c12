"""Envoy → dpbalance epp → engine-sim ranks: completions and chat, streamed and not, in both load-accounting
modes, one endpoint per rank and one DP endpoint; every request ends with one outcome and no slot held."""

import asyncio
import json

import aiohttp
import pytest

from tests.gateway.stack import gateway

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]


async def _complete(s, url: str, chat: bool, stream: bool, n: int = 12) -> tuple[int, int, bytes]:
    """(status, completion tokens seen, raw body)."""
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = {"model": "dpbalance-sim", "max_tokens": n, "stream": stream}
    body.update({"messages": [{"role": "user", "content": "hello there"}]} if chat else {"prompt": "hello there"})
    async with s.post(url + path, json=body) as r:
        raw = await r.read()
        if r.status != 200:
            return r.status, 0, raw
        if not stream:
            return r.status, json.loads(raw)["usage"]["completion_tokens"], raw
        events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
        key = "delta" if chat else "text"
        toks = 0
        for e in events:
            c = json.loads(e[6:])["choices"][0]
            toks += bool(c[key].get("content") if chat else c[key])
        assert raw.rstrip().endswith(b"data: [DONE]")
        return r.status, toks, raw


@pytest.mark.parametrize("mode", ["streamed", "decision-only"])
def test_completions_and_chat_through_envoy(mode):
    async def main():
        async with gateway(ranks=2, mode=mode) as st, aiohttp.ClientSession() as s:
            jobs = [
                _complete(s, st.url, chat, stream, 10 + i)
                for i in range(6)
                for chat in (False, True)
                for stream in (False, True)
            ]
            res = await asyncio.gather(*jobs)
            assert all(code == 200 for code, _, _ in res), [r[2][:200] for r in res if r[0] != 200]
            assert [n for _, n, _ in res] == [10 + i for i in range(6) for _ in range(4)]
            await st.settle()
            assert st.outcomes() == {"completed": 24, "failed": 0, "rejected": 0}
            assert st.own_active() == 0 and st.group.running() == 0
            if mode == "streamed":  # counted from the bodies (decision-only credits an estimate)
                assert st.epp.router.metrics.tokens.sum() == sum(n for _, n, _ in res)
            assert all(rk.requests_ok > 0 for rk in st.group.ranks)  # both ranks served
            # other paths go to a rank in rotation, unaccounted
            async with s.get(st.url + "/v1/models") as r:
                assert r.status == 200 and (await r.json())["data"]
            assert st.outcomes()["completed"] == 24

    asyncio.run(main())


def test_dp_endpoint_rank_header_through_envoy():
    async def main():
        async with gateway(ranks=3, dp=True) as st, aiohttp.ClientSession() as s:
            res = await asyncio.gather(*[_complete(s, st.url, False, True, 8) for _ in range(12)])
            assert all(code == 200 and n == 8 for code, n, _ in res)
            await st.settle()
            assert st.outcomes()["completed"] == 12
            # the EPP's X-data-parallel-rank reached each engine of the one endpoint
            assert all(rk.requests_ok > 0 for rk in st.group.ranks)
            assert sum(rk.requests_ok for rk in st.group.ranks) == 12

    asyncio.run(main())


def test_bad_input_and_shedding_are_immediate_responses():
    async def main():
        async with gateway(ranks=1, slots=1, max_pending=1, api_key="k") as st, aiohttp.ClientSession() as s:
            auth = {"Authorization": "Bearer k"}
            async with s.post(st.url + "/v1/completions", json={"prompt": "a"}) as r:
                assert r.status == 401 and (await r.json())["error"]["type"] == "authentication_error"
            async with s.get(st.url + "/v1/models") as r:
                assert r.status == 401
            async with s.post(st.url + "/tokenize", json={"prompt": "a b c"}, headers=auth) as r:
                assert r.status == 200 and (await r.json())["count"] == 3  # a POST that is not a generation
            async with s.post(st.url + "/v1/completions", data=b"{oops", headers=auth) as r:
                assert r.status == 400 and "JSON" in (await r.json())["error"]["message"]
            async with s.post(st.url + "/v1/completions", json={"prompt": "a", "max_tokens": -1}, headers=auth) as r:
                assert r.status == 400 and (await r.json())["error"]["param"] == "max_tokens"
            # one running (the only slot), one waiting (max_pending): the next is shed with 429
            body = {"model": "dpbalance-sim", "prompt": "a", "max_tokens": 100_000, "stream": True}
            long1 = asyncio.create_task(s.post(st.url + "/v1/completions", json=body, headers=auth))
            await asyncio.sleep(0.3)
            long2 = asyncio.create_task(s.post(st.url + "/v1/completions", json=body, headers=auth))
            for _ in range(100):
                if len(st.epp.router.dispatcher.pool):
                    break
                await asyncio.sleep(0.02)
            async with s.post(st.url + "/v1/completions", json=body, headers=auth) as r:
                assert r.status == 429 and r.headers.get("retry-after") == "1"
            r1 = await long1
            assert r1.status == 200
            await r1.content.readuntil(b"\n\n")
            r1.close()  # the client leaves: the slot goes to the waiting one
            r2 = await long2
            assert r2.status == 200
            await r2.content.readuntil(b"\n\n")
            r2.close()
            await st.settle()
            assert st.outcomes() == {"completed": 0, "failed": 2, "rejected": 4}
            assert st.group.running() == 0 and st.own_active() == 0
            # no rank ready: 503 at once
            await st.group.server.kill(0)
            for _ in range(100):
                if not st.epp.router.dispatcher.in_rotation.any():
                    break
                await asyncio.sleep(0.05)
            async with s.post(st.url + "/v1/completions", json=body, headers=auth) as r:
                assert r.status == 503 and (await r.json())["error"]["type"] == "server_error"

    asyncio.run(main())


def test_leader_failover_through_envoy():
    async def main():
        async with gateway(ranks=2, replicas=2, leader=True) as st, aiohttp.ClientSession() as s:
            lead = min(st.epps, key=lambda e: e.port)
            follower = max(st.epps, key=lambda e: e.port)
            for _ in range(100):  # Envoy's first health checks: the follower out, the leader in
                if lead.ready() and not follower.ready() and (await _complete(s, st.url, False, False, 2))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            before = len(lead.picker.pick_us)
            res = await asyncio.gather(*[_complete(s, st.url, False, True, 6) for _ in range(10)])
            assert [code for code, _, _ in res] == [200] * 10, [r[2][:100] for r in res]
            assert len(lead.picker.pick_us) == before + 10 and len(follower.picker.pick_us) == 0  # one picture
            await lead.stop(grace=0)
            gone = f"epp::127.0.0.1:{lead.port}::health_flags::/failed_active_hc"
            up = f"epp::127.0.0.1:{follower.port}::health_flags::healthy"
            for _ in range(100):  # the follower leads; Envoy's health checks move the traffic to it (≈ 2 s)
                async with s.get(f"http://127.0.0.1:{st.envoy.admin}/clusters") as r:
                    text = await r.text()
                if gone in text and up in text:
                    break
                await asyncio.sleep(0.1)
            ok = 0
            for _ in range(100):  # and a few answers in a row come back through the new leader
                ok = ok + 1 if (await _complete(s, st.url, False, False, 2))[0] == 200 else 0
                if ok == 5:
                    break
                await asyncio.sleep(0.05)
            res = await asyncio.gather(*[_complete(s, st.url, True, True, 6) for _ in range(10)])
            assert [code for code, _, _ in res] == [200] * 10, [r[2][:100] for r in res]
            await st.settle()
            assert follower.router.outcomes["completed"] >= 15 and follower.router.dispatcher.active == 0

    asyncio.run(main())
