"""Hostile and malformed client input: every case gets a JSON answer, one counted outcome, and no slot is held."""

import asyncio
import json

import aiohttp
import pytest

from tests.router.fake_vllm import MODEL
from tests.router.stacks import post, routed

pytestmark = pytest.mark.timeout(60)


async def _raw(url: str, payload: bytes, read_timeout: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()


def test_hostile_bodies_get_json_errors_and_are_counted():
    async def main():
        async with routed(fakes=1, api_key="s3cret", body_timeout_s=0.5) as st:
            good = {"Authorization": "Bearer s3cret"}
            u = st.url + "/v1/completions"
            async with aiohttp.ClientSession() as s:
                cases = [
                    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
                    (b'{"prompt": "a", "max_tokens": ' + b"7" * 5000 + b"}", 400, "malformed JSON"),
                    (
                        json.dumps({"prompt": "a", "stream_options": "x", "stream": True}).encode(),
                        400,
                        "stream_options",
                    ),
                    (json.dumps({"prompt": "a", "max_tokens": 0}).encode(), 400, "max_tokens"),
                    (json.dumps({"prompt": "a", "max_completion_tokens": "9"}).encode(), 400, "max_completion_tokens"),
                    (b"\xff\xfe{}", 400, "malformed JSON"),
                ]
                for body, status, needle in cases:
                    code, d = await post(s, u, data=body, headers={**good, "Content-Type": "application/json"})
                    assert code == status and needle in d["error"]["message"], (body[:40], d)
                # non-ASCII and odd Authorization headers: 401, never a crash; the scheme is case-insensitive
                for h in ("Basic abc", "", "Bearer", "Bearer s3cre"):
                    async with s.post(u, json={"prompt": "a"}, headers={"Authorization": h}) as r:
                        assert r.status == 401 and (await r.json())["error"]["type"] == "authentication_error", h
                code, d = await post(
                    s, u, {"prompt": "a b", "max_tokens": 2}, headers={"Authorization": "bEaReR s3cret"}
                )
                assert code == 200 and d["model"] == MODEL
                # unknown paths and methods: JSON 404/405
                async with s.get(st.url + "/nope", headers=good) as r:
                    assert r.status == 404 and (await r.json())["error"]["code"] == 404
                async with s.get(u, headers=good) as r:
                    assert r.status == 405 and "POST" in r.headers["Allow"] and (await r.json())["error"]["code"] == 405
            # a body shorter than its Content-Length: 408 after --body-timeout-s, not a hang
            head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            raw = await _raw(st.url, head + b'Authorization: Bearer s3cret\r\nContent-Length: 100\r\n\r\n{"prompt":')
            assert raw.startswith(b"HTTP/1.1 408") and b"did not arrive" in raw
            # non-ASCII bytes in Authorization (UTF-8 and raw Latin-1): 401, never a crash
            for auth in (b"Bearer k\xe2\x82\xacy", b"Bearer \xff\xfe", "Bearer s3cret\u2603".encode()):
                raw = await _raw(st.url, head + b"Authorization: " + auth + b"\r\nContent-Length: 2\r\n\r\n{}")
                assert raw.startswith(b"HTTP/1.1 401") and b"authentication_error" in raw, raw[:80]
            await st.settle()
            o = st.router.outcomes
            assert o == {"completed": 1, "failed": 0, "rejected": len(cases) + 4 + 1 + 3}, o
            assert st.router.dispatcher.active == 0 and not st.fakes[0].running

    asyncio.run(main())


def test_a_rank_4xx_goes_back_unchanged_and_the_rank_stays_in_rotation():
    async def main():
        async with routed(fakes=2, allow_kv_transfer_params=True, cb_failure_threshold=2) as st:
            async with aiohttp.ClientSession() as s:
                u = st.url + "/v1/completions"
                for _ in range(10):  # would drain every rank if 4xx counted against them
                    code, d = await post(s, u, {"prompt": "a", "model": "nope"})
                    assert code == 404 and d == {
                        "error": {
                            "message": "The model `nope` does not exist.",
                            "type": "NotFoundError",
                            "param": "model",
                            "code": 404,
                        }
                    }
                    code, d = await post(s, u, {"prompt": "a", "kv_transfer_params": 5})
                    assert code == 400 and d["error"]["type"] == "BadRequestError"
                    code, d = await post(s, u, {"prompt": "a", "stream_options": {"include_usage": True}})
                    assert code == 400 and "stream=True" in d["error"]["message"]
                async with s.get(st.url + "/health") as r:
                    assert r.status == 200 and (await r.json())["ranks_in_rotation"] == 2
                code, d = await post(s, u, {"prompt": "a", "max_tokens": 3})
                assert code == 200
                async with s.get(st.url + "/metrics") as r:
                    text = await r.text()
            assert st.metric(text, "dpbalance_requests_total", outcome="rejected", reason="rank_404") == 10
            assert st.metric(text, "dpbalance_requests_total", outcome="rejected", reason="rank_400") == 20
            assert (
                st.metric(text, "dpbalance_cb_state", rank="0") == 0
                and st.metric(text, "dpbalance_cb_state", rank="1") == 0
            )
            assert not any(
                st.metric(text, "dpbalance_rank_failures_total", rank=str(g), kind="http_5xx") for g in (0, 1)
            )

    asyncio.run(main())


def test_client_kv_transfer_params_are_dropped_by_default():
    async def main():
        async with routed(fakes=1) as st:
            async with aiohttp.ClientSession() as s:
                code, _ = await post(
                    s,
                    st.url + "/v1/completions",
                    {"prompt": "a", "kv_transfer_params": {"remote_host": "10.0.0.1", "remote_port": 1}},
                )
            assert code == 200 and "kv_transfer_params" not in st.fakes[0].seen[-1]

    asyncio.run(main())


def test_http_1_0_clients_get_the_stream_without_chunked_framing():
    async def main():
        async with routed(fakes=1) as st:
            body = json.dumps({"prompt": "a", "max_tokens": 3, "stream": True}).encode()
            host, port = st.url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            raw = await asyncio.wait_for(reader.read(), 10)  # HTTP/1.0: the body ends when the connection closes
            writer.close()
            assert raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
            assert raw.startswith(b"HTTP/1.") and b"Transfer-Encoding: chunked" not in raw
            assert raw.count(b"data: {") == 3

    asyncio.run(main())
