"""The live router against the in-process engine emulator: end to end, faults, bad input. All on 127.0.0.1."""

import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest

from dpbalance import loadgen
from dpbalance.emulator import start_group
from dpbalance.router.server import RouterConfig, start_router
from dpbalance.traces import load_trace

pytestmark = pytest.mark.timeout(180)


async def stack(policy="br0", ranks=4, slots=16, time_scale=4.0, **rcfg):
    group, urls, eruns = await start_group(ranks, slots=slots, time_scale=time_scale)
    router, rurl, rrun = await start_router(
        RouterConfig(decode=tuple(urls), policy=policy, slots=slots, health_interval_s=0.2, **rcfg)
    )

    async def close():
        await rrun.cleanup()
        for r in eruns:
            await r.cleanup()
        await group.stop()

    return group, urls, router, rurl, close


def live_run(policy):
    async def main():
        group, urls, router, rurl, close = await stack(policy)
        try:
            w = load_trace("sample")
            outs = await loadgen.run(
                w,
                loadgen.LoadgenConfig(
                    target=rurl, mode="qps", qps=2000, max_requests=500, prompt_scale=1 / 16, max_output=48
                ),
            )
            return outs, group.stats(), dict(router.outcomes), router
        finally:
            await close()

    return asyncio.run(main())


def test_end_to_end_br0_balances_better_than_jsq_count_and_counters_agree():
    # two live runs of each policy, interleaved, compared by their means: one run's figures follow the wall clock
    # (a stall in the router shifts when requests reach the ranks), and a single disturbed run has reversed the
    # imbalance order on an otherwise quiet machine (br0 6,545 against jsq_count's 6,208; undisturbed runs give
    # br0 3,500-4,200 against 6,800-8,700)
    res: dict[str, list[dict]] = {"jsq_count": [], "br0": []}
    for _ in range(2):
        for policy in res:
            outs, st, outcomes, router = live_run(policy)
            assert all(o.status == "ok" for o in outs), {o.status for o in outs}
            assert len(outs) == 500
            assert outcomes == {"completed": 500, "failed": 0, "rejected": 0}
            assert st["requests_completed"] == 500
            # the router's token accounting equals what the engines generated, rank by rank
            for g, n in enumerate(st["generation_tokens"]):
                assert int(router.metrics.tokens[g]) == n
            assert sum(o.tokens for o in outs) == sum(st["generation_tokens"])
            assert int(router.state.counts.sum()) == 0 and int(router.state.loads.sum()) == 0
            res[policy].append(st)

    def mean(policy: str, key: str) -> float:
        return float(np.mean([st[key] for st in res[policy]]))

    assert mean("br0", "avg_imbalance_maxmin") < mean("jsq_count", "avg_imbalance_maxmin")
    # throughput is in the emulator's clock, but when requests reach it follows the wall clock: with both cores
    # busy one run of each gave br0 3.7 % below jsq_count (on a quiet machine it is above); what this checks is
    # that balancing costs no throughput beyond that noise
    assert mean("br0", "throughput_tok_s") > 0.9 * mean("jsq_count", "throughput_tok_s")


MALFORMED = [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"model": "m"}).encode(), "prompt"),
    (json.dumps({"prompt": 5}).encode(), "prompt"),
    (json.dumps({"prompt": []}).encode(), "prompt"),
    (json.dumps({"prompt": "hi", "max_tokens": -3}).encode(), "max_tokens"),
    (json.dumps({"prompt": "hi", "max_tokens": 10**9}).encode(), "max_tokens"),
    (json.dumps({"prompt": "hi", "max_tokens": "ten"}).encode(), "max_tokens"),
    (json.dumps({"prompt": "hi", "stream": "yes"}).encode(), "stream"),
    (json.dumps({"prompt": "hi", "model": 7}).encode(), "model"),
    (json.dumps({"prompt": "hi", "temperature": "hot"}).encode(), "temperature"),
    (json.dumps({"prompt": ["a", 1]}).encode(), "prompt"),
]


def test_malformed_inputs_get_openai_style_400s():
    async def main():
        group, urls, router, rurl, close = await stack(ranks=2, slots=4)
        try:
            async with aiohttp.ClientSession() as s:
                for body, needle in MALFORMED:
                    async with s.post(
                        rurl + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
                    ) as r:
                        assert r.status == 400, body
                        err = (await r.json())["error"]
                        assert needle in err["message"] and err["type"] == "invalid_request_error"
                async with s.post(rurl + "/v1/chat/completions", json={"messages": "hi"}) as r:
                    assert r.status == 400 and "messages" in (await r.json())["error"]["message"]
                async with s.post(rurl + "/v1/completions", data=b"x" * (9 * 1024**2)) as r:
                    assert r.status == 413
            assert router.outcomes["rejected"] == len(MALFORMED) + 2
        finally:
            await close()

    asyncio.run(main())


def test_api_key_stream_nonstream_chat_models_health():
    async def main():
        group, urls, router, rurl, close = await stack(ranks=2, slots=4, api_key="s3cret")
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    rurl + "/v1/completions",
                    json={"prompt": "a b", "max_tokens": 3},
                    headers={"Authorization": "Bearer nope"},
                ) as r:
                    assert r.status == 401
                hdr = {"Authorization": "Bearer s3cret"}
                async with s.post(
                    rurl + "/v1/completions", json={"prompt": "a b c", "max_tokens": 5}, headers=hdr
                ) as r:
                    d = await r.json()
                    assert r.status == 200 and d["usage"]["prompt_tokens"] == 3 and d["usage"]["completion_tokens"] == 5
                async with s.post(
                    rurl + "/v1/chat/completions",
                    headers=hdr,
                    json={"messages": [{"role": "user", "content": "x y"}], "max_tokens": 4},
                ) as r:
                    d = await r.json()
                    assert d["object"] == "chat.completion" and d["usage"]["completion_tokens"] == 4
                async with s.post(
                    rurl + "/v1/completions", headers=hdr, json={"prompt": "a", "max_tokens": 6, "stream": True}
                ) as r:
                    events = [ln for ln in (await r.text()).split("\n\n") if ln.startswith("data:")]
                    assert events[-1] == "data: [DONE]" and len(events) == 7
                async with s.get(rurl + "/v1/models", headers=hdr) as r:
                    assert (await r.json())["data"][0]["id"] == "dpbalance-sim"  # the ranks' own answer
                async with s.get(rurl + "/health") as r:  # health probes need no key
                    assert r.status == 200
                for path in ("/metrics", "/debug/dispatch", "/v1/models"):  # the key protects them too
                    async with s.get(rurl + path) as r:
                        assert r.status == 401 and (await r.json())["error"]["type"] == "authentication_error"
                async with s.get(rurl + "/metrics", headers={"Authorization": "bearer s3cret"}) as r:
                    text = await r.text()
                    assert 'dpbalance_requests_total{outcome="completed",reason="ok"} 3.0' in text
                    assert 'dpbalance_requests_total{outcome="rejected",reason="unauthorized"} 1.0' in text
                    assert "dpbalance_dispatch_seconds_bucket" in text and "dpbalance_rank_load_tokens" in text
        finally:
            await close()

    asyncio.run(main())


def test_overload_gets_429_with_retry_after():
    async def main():
        group, urls, router, rurl, close = await stack(ranks=1, slots=1, time_scale=0.5, max_pending=2)
        try:
            async with aiohttp.ClientSession() as s:

                async def one():
                    async with s.post(rurl + "/v1/completions", json={"prompt": "a", "max_tokens": 20}) as r:
                        return r.status, r.headers.get("Retry-After")

                res = await asyncio.gather(*[one() for _ in range(8)])
            codes = [c for c, _ in res]
            assert codes.count(429) >= 1 and all(ra == "1" for c, ra in res if c == 429)
            assert codes.count(200) + codes.count(429) == 8
            assert router.outcomes["rejected"] == codes.count(429)
        finally:
            await close()

    asyncio.run(main())


def test_client_disconnect_aborts_upstream_and_frees_the_slot():
    async def main():
        group, urls, router, rurl, close = await stack(ranks=1, slots=2, time_scale=0.2)
        try:
            async with aiohttp.ClientSession() as s:
                r = await s.post(rurl + "/v1/completions", json={"prompt": "a b", "max_tokens": 500, "stream": True})
                await r.content.readuntil(b"\n\n")  # first token arrived
                r.close()  # client goes away
            for _ in range(100):
                if router.outcomes["failed"]:
                    break
                await asyncio.sleep(0.05)
            assert router.outcomes == {"completed": 0, "failed": 1, "rejected": 0}
            assert int(router.state.counts.sum()) == 0
            for _ in range(50):  # the engine drops the request too
                if not group.ranks[0].running:
                    break
                await asyncio.sleep(0.05)
            assert not group.ranks[0].running
        finally:
            await close()

    asyncio.run(main())


def test_rank_killed_mid_run_no_hang_accounting_adds_up():
    async def main():
        group, urls, router, rurl, close = await stack(ranks=4, slots=8, time_scale=2.0)
        try:
            w = load_trace("sample")
            cfg = loadgen.LoadgenConfig(
                target=rurl,
                mode="qps",
                qps=400,
                max_requests=200,
                prompt_scale=1 / 32,
                max_output=40,
                request_timeout_s=60,
            )
            task = asyncio.create_task(loadgen.run(w, cfg))
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as s:
                async with s.post(urls[1] + "/admin/fail") as r:
                    assert r.status == 200
            t0 = time.time()
            outs = await asyncio.wait_for(task, 90)
            ok = sum(o.status == "ok" for o in outs)
            failed = [o for o in outs if o.status != "ok"]
            assert ok + len(failed) == 200
            assert router.outcomes["completed"] == ok
            assert router.outcomes["completed"] + router.outcomes["failed"] + router.outcomes["rejected"] == 200
            assert ok >= 150  # survivors keep serving; only streams cut mid-way fail
            assert not router.healthy[1]
            assert int(router.state.counts.sum()) == 0
            assert time.time() - t0 < 90
        finally:
            await close()

    asyncio.run(main())


def test_pd_mode_passes_kv_handles_from_prefill_to_decode():
    async def main():
        pgroup, purls, pruns = await start_group(1, slots=4, time_scale=10.0)
        group, urls, eruns = await start_group(2, slots=4, time_scale=10.0)
        seen = []
        orig = group.submit

        def spy(rank, req):
            seen.append(req)
            orig(rank, req)

        group.submit = spy
        router, rurl, rrun = await start_router(RouterConfig(decode=tuple(urls), prefill=tuple(purls), slots=4))
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(rurl + "/v1/completions", json={"prompt": "a b c", "max_tokens": 5}) as r:
                    assert r.status == 200 and (await r.json())["usage"]["completion_tokens"] == 5
            assert pgroup.stats()["tokens"] == 1  # the probe: max_tokens = 1 on the prefill instance
            assert group.stats()["tokens"] == 5 and len(seen) == 1
            # the decode rank was admitted with the handles the prefill instance returned
            assert seen[0].kv == {"remote_engine_id": "sim", "remote_block_ids": [0], "do_remote_prefill": True}
        finally:
            await rrun.cleanup()
            for x in eruns + pruns:
                await x.cleanup()
            await group.stop()
            await pgroup.stop()

    asyncio.run(main())
