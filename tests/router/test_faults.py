"""Faithful proxying and every way a request can end: each path releases its slot and counts one outcome."""

import asyncio
import json
import socket
import time

import aiohttp
import numpy as np
import pytest

from dpbalance.core.snapshot import Assignment
from dpbalance.emulator import start_group
from tests.router.stacks import free_port, post, routed

pytestmark = pytest.mark.timeout(60)


def _events(text: str) -> list[dict]:
    return [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]


def test_non_stream_answers_are_the_ranks_own():
    async def main():
        async with routed(fakes=1) as st:
            f = st.fakes[0]
            async with aiohttp.ClientSession() as s:
                for chat, body in (
                    (False, {"prompt": "a b", "n": 2, "max_tokens": 4, "logprobs": 1}),
                    (
                        True,
                        {
                            "messages": [{"role": "user", "content": "hi"}],
                            "n": 2,
                            "max_completion_tokens": 4,
                            "tools": [],
                        },
                    ),
                ):
                    path = "/v1/chat/completions" if chat else "/v1/completions"
                    code, d = await post(s, st.url + path, body)
                    assert code == 200 and d == f.body_for(body, chat)  # ids, created, both choices, logprobs...
                    assert f.seen[-1] == body  # forwarded as sent (non-stream upstream)
            assert st.router.outcomes["completed"] == 2 and int(st.router.metrics.tokens.sum()) == 8

    asyncio.run(main())


def test_streams_pass_through_with_only_unrequested_usage_stripped():
    async def main():
        async with routed(fakes=1) as st:
            async with aiohttp.ClientSession() as s:

                async def stream(so):
                    body = {"prompt": "a", "max_tokens": 5, "stream": True, **({"stream_options": so} if so else {})}
                    async with s.post(st.url + "/v1/completions", json=body) as r:
                        assert r.status == 200
                        text = await r.text()
                    assert text.endswith("data: [DONE]\n\n")
                    return _events(text)

                ev = await stream(None)
                assert len(ev) == 5 and all("usage" not in e for e in ev)
                assert [e["choices"][0]["finish_reason"] for e in ev] == [None] * 4 + ["stop"]
                ev = await stream({"include_usage": True})
                assert [("usage" in e) for e in ev] == [False] * 5 + [True] and ev[-1]["choices"] == []
                ev = await stream({"include_usage": True, "continuous_usage_stats": True})
                assert [e["usage"]["completion_tokens"] for e in ev] == [1, 2, 3, 4, 5, 5]
            # upstream always asked for exact usage; the router counted 15 tokens
            assert all(
                b["stream_options"] == {"include_usage": True, "continuous_usage_stats": True} for b in st.fakes[0].seen
            )
            assert int(st.router.metrics.tokens[0]) == 15 and st.router.outcomes["completed"] == 3

    asyncio.run(main())


def test_slow_reader_then_disconnect_and_disconnect_while_queued():
    async def main():
        async with routed(sims=1, slots=1, sim_kw={"slots": 1, "time_scale": 200.0}) as st:
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as s:
                # 1: a stream whose client reads one event, stops reading (the router blocks writing), then leaves
                r = await s.post(
                    st.url + "/v1/completions", json={"prompt": "a", "max_tokens": 200_000, "stream": True}
                )
                await r.content.readuntil(b"\n\n")
                # 2: waits in the pool behind it (one slot), then its client gives up
                queued = asyncio.create_task(s.post(st.url + "/v1/completions", json={"prompt": "b", "max_tokens": 5}))
                await asyncio.sleep(1.0)
                assert len(st.router.dispatcher.pool) == 1
                queued.cancel()
                await asyncio.sleep(0.3)
                r.close()
            await st.settle()
            assert st.router.outcomes == {"completed": 0, "failed": 2, "rejected": 0}
            assert st.router.dispatcher.active == 0 and len(st.router.dispatcher.pool) == 0
            assert st.group.running() == 0  # the engine dropped the abandoned stream too

    asyncio.run(main())


def test_non_stream_client_gone_aborts_the_upstream_call():
    async def main():
        async with routed(fakes=1, fake_kw={"tokens_per_s": 50}) as st:
            async with aiohttp.ClientSession() as s:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(post(s, st.url + "/v1/completions", {"prompt": "a", "max_tokens": 100}), 0.4)
            await st.settle()
            assert st.fakes[0].running == 0 and st.fakes[0].completed == 0  # the rank stopped generating
            assert st.router.outcomes == {"completed": 0, "failed": 1, "rejected": 0}
            assert st.router.dispatcher.active == 0

    asyncio.run(main())


def test_stalled_rank_times_out_and_counts_against_it():
    async def main():
        async with routed(fakes=1, upstream_read_timeout_s=0.5) as st:
            async with aiohttp.ClientSession() as s:
                t0 = time.monotonic()
                async with s.post(
                    st.url + "/v1/completions", json={"prompt": "a", "max_tokens": 9, "stream": True, "stall": True}
                ) as r:
                    ev = _events(await r.text())
                assert time.monotonic() - t0 < 3
                assert ev[0]["choices"][0]["text"] == " t1" and "sent nothing" in ev[-1]["error"]["message"]
                async with s.get(st.url + "/metrics") as r:
                    text = await r.text()
            await st.settle()
            assert st.fakes[0].running == 0 and st.router.dispatcher.active == 0
            assert st.metric(text, "dpbalance_requests_total", outcome="failed", reason="upstream_timeout") == 1
            assert st.metric(text, "dpbalance_rank_failures_total", rank="0", kind="timeout") == 1

    asyncio.run(main())


def test_all_ranks_down_fails_fast_with_503():
    async def main():
        dead = "http://127.0.0.1:9"  # discard port: connection refused
        from dpbalance.router.server import RouterConfig, start_router

        router, url, runner = await start_router(
            RouterConfig(
                decode=(dead, dead),
                slots=2,
                queue_timeout_s=0.5,
                health_interval_s=0.1,
                cb_failure_threshold=1,
                tokenize="estimate",
                backoff_s=0.01,
            )
        )
        try:
            async with aiohttp.ClientSession() as s:
                t0 = time.monotonic()
                codes = await asyncio.gather(*[post(s, url + "/v1/completions", {"prompt": "a"}) for _ in range(5)])
                assert time.monotonic() - t0 < 5
                assert all(c == 503 and d["error"]["type"] == "server_error" for c, d in codes)
                async with s.get(url + "/health") as r:
                    assert r.status == 503 and (await r.json())["status"] == "no decode rank in rotation"
            assert router.outcomes == {"completed": 0, "failed": 5, "rejected": 0}
            assert router.dispatcher.active == 0 and len(router.dispatcher.pool) == 0
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_shutdown_drains_for_the_grace_period_then_aborts_and_counts():
    async def main():
        async with routed(fakes=1, fake_kw={"tokens_per_s": 20}, shutdown_grace_s=0.6) as st:
            async with aiohttp.ClientSession() as s:
                short = asyncio.create_task(post(s, st.url + "/v1/completions", {"prompt": "a", "max_tokens": 4}))
                long = asyncio.create_task(post(s, st.url + "/v1/completions", {"prompt": "a", "max_tokens": 400}))
                await asyncio.sleep(0.1)
                t0 = time.monotonic()
                await st.router.drain()  # what SIGTERM runs (after the listener closed)
                assert time.monotonic() - t0 < 2
                assert (await short)[0] == 200
                with pytest.raises(aiohttp.ClientError):
                    await long
            assert st.router.outcomes == {"completed": 1, "failed": 1, "rejected": 0}
            assert st.router.metrics.requests.labels("failed", "shutdown")._value.get() == 1
            await st.settle()
            assert st.router.dispatcher.active == 0 and st.fakes[0].running == 0

    asyncio.run(main())


class _Broken:
    """A policy with bugs: raises, then places a request on a rank that does not exist, then twice."""

    name = spec = "broken"

    def __init__(self):
        self.calls = 0

    def dispatch(self, snap):
        self.calls += 1
        ids = snap.pool_ids
        if self.calls % 3 == 1:
            raise ZeroDivisionError("policy bug")
        if self.calls % 3 == 2:
            return [Assignment(int(ids[0]), 99)]
        return [Assignment(int(ids[0]), 0), Assignment(int(ids[0]), 0)]


def test_policy_bugs_never_stop_the_dispatcher():
    async def main():
        async with routed(sims=2) as st:
            st.router.dispatcher.policy = _Broken()
            async with aiohttp.ClientSession() as s:
                for _ in range(6):  # one at a time: each is one policy call
                    assert (await post(s, st.url + "/v1/completions", {"prompt": "a", "max_tokens": 3}))[0] == 200
                async with s.get(st.url + "/health") as r:
                    assert r.status == 200
            m = st.router.metrics.policy_errors
            assert m.labels("ZeroDivisionError")._value.get() >= 1 and m.labels("InvalidAssignment")._value.get() >= 2
            assert st.router.dispatcher_running()

    asyncio.run(main())


def test_health_says_when_the_dispatcher_died():
    async def main():
        async with routed(fakes=1) as st:
            st.router._tasks[0].cancel()
            await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as s:
                async with s.get(st.url + "/health") as r:
                    assert r.status == 503 and (await r.json())["dispatcher"] == "stopped"

    asyncio.run(main())


def test_load_of_a_non_stream_request_is_estimated_while_it_runs():
    async def main():
        async with routed(fakes=1, fake_kw={"tokens_per_s": 20}) as st:
            async with aiohttp.ClientSession() as s:
                task = asyncio.create_task(post(s, st.url + "/v1/completions", {"prompt": "a", "max_tokens": 30}))
                await asyncio.sleep(1.0)
                grown = int(st.router.state.loads[0]) - 1  # prompt of 1 token (estimate)
                assert 10 <= grown <= 29  # ≈ 20 tok/s × 1 s, capped below max_tokens
                assert (await task)[0] == 200
            assert int(np.asarray(st.router.state.loads).sum()) == 0

    asyncio.run(main())


def test_a_client_that_accepts_nothing_is_dropped_after_client_timeout():
    async def main():
        async with routed(sims=1, slots=1, client_timeout_s=0.5, sim_kw={"slots": 1, "time_scale": 1000.0}) as st:
            host, port = st.url.removeprefix("http://").split(":")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            body = json.dumps({"prompt": "a", "max_tokens": 900_000, "stream": True}).encode()
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            try:  # never read: the router's send buffer fills, then it gives up on this client
                for _ in range(200):
                    if st.router.outcomes["failed"]:
                        break
                    await asyncio.sleep(0.05)
            finally:
                sock.close()
            await st.settle()
            assert st.router.metrics.requests.labels("failed", "client_timeout")._value.get() == 1
            assert st.router.dispatcher.active == 0 and st.group.running() == 0

    asyncio.run(main())


def test_metrics_on_their_own_port_without_the_key(tmp_path):
    async def main():
        import subprocess
        import sys

        group, urls, _ = await start_group(1, slots=2)
        port, mport = free_port(), free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dpbalance",
                "serve",
                "--decode",
                urls[0],
                "--port",
                str(port),
                "--api-key",
                "k",
                "--prometheus-port",
                str(mport),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as s:
                for _ in range(100):
                    try:
                        async with s.get(f"http://127.0.0.1:{port}/health") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                async with s.get(f"http://127.0.0.1:{mport}/metrics") as r:
                    assert r.status == 200 and "dpbalance_requests_total" in await r.text()
                async with s.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer k"}) as r:
                    assert r.status == 404  # only on the metrics port
        finally:
            proc.terminate()
            proc.wait(10)
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def test_a_rank_that_streams_garbage_is_cut_off():
    async def main():
        from aiohttp import web

        async def garbage(request):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for _ in range(100):  # 5 MB without an event boundary
                await resp.write(b"x" * 50_000)
            await asyncio.sleep(30)
            return resp

        async def ok(_):
            return web.Response()

        app = web.Application()
        app.router.add_post("/v1/completions", garbage)
        app.router.add_get("/health", ok)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        from dpbalance.router.server import RouterConfig, start_router

        router, rurl, rrun = await start_router(
            RouterConfig(decode=(url,), slots=2, tokenize="estimate", max_retries=0)
        )
        try:
            async with aiohttp.ClientSession() as s:
                code, d = await post(s, rurl + "/v1/completions", {"prompt": "a", "stream": True})
            assert code == 503 and "no event boundary" in d["error"]["message"]
            assert router.outcomes == {"completed": 0, "failed": 1, "rejected": 0} and router.dispatcher.active == 0
        finally:
            await rrun.cleanup()
            await runner.cleanup()

    asyncio.run(main())
