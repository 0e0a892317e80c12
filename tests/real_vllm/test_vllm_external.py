"""The router in front of real vLLM data-parallel ranks (external mode: one OpenAI server per rank), and evidence
that the ranks share a step barrier. Opt-in: ``pytest -m vllm`` (``make test-vllm``)."""

from __future__ import annotations

import asyncio
import re
import statistics
import time

import aiohttp
import pytest

from .streams import MODEL, Stream, counters, routed, stream, wait_until, words

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
TIMEOUT = aiohttp.ClientTimeout(total=300)
GEN = "vllm:generation_tokens_total"


def test_streaming_through_router_counts_exactly_what_the_ranks_generated(external):
    urls = external.rank_urls

    async def main():
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, routed(urls) as (router, rurl):
            before = [await counters(s, u, GEN) for u in urls]
            want = [8 + 5 * (i % 7) for i in range(24)]
            bodies = [{"prompt": words(5 + 9 * i), "max_tokens": m, "ignore_eos": True} for i, m in enumerate(want)]
            got = await asyncio.gather(*[stream(s, rurl, b) for b in bodies])
            after = [await counters(s, u, GEN) for u in urls]
            routed_tokens = await counters(s, rurl, "dpbalance_generated_tokens_total")
            return router, got, want, before, after, routed_tokens

    router, got, want, before, after, routed_tokens = asyncio.run(main())
    assert [g.status for g in got] == [200] * 24, [g.error for g in got if g.status != 200]
    assert [g.tokens for g in got] == want  # exact counts (ignore_eos), from the usage the router relays
    assert router.outcomes == {"completed": 24, "failed": 0, "rejected": 0}
    assert int(router.state.loads.sum()) == 0 and int(router.state.counts.sum()) == 0
    engine = [after[r][str(r)] - before[r][str(r)] for r in range(2)]
    print(f"\ntokens per rank: router counted {routed_tokens}, ranks generated {engine}")
    assert all(n > 0 for n in engine)  # both ranks got work
    for r in range(2):  # the router's accounting per rank equals the rank's own counter
        assert routed_tokens[str(r)] == engine[r]
    assert sum(engine) == sum(want)


def test_barrier_rank1_slows_with_rank0_load(external):
    """Rank 1 decodes one stream alone, then while rank 0 decodes 16 streams with 1,700-token prompts. Dense ranks
    would be independent (each pinned to its own core); MoE ranks step together, so rank 1's time per output token
    rises to rank 0's.

    The machine may be shared with other work, which only ever slows a run down: rank 1's own pace is the fastest of
    six runs alone (three before the load, three after it), and the lock-step check compares rank 1 with rank 0 in
    the same time window, which other work affects alike."""
    r0, r1 = external.rank_urls
    n_load, prompt_len, n_out = 16, 1700, 100

    async def alone_runs(s, n):
        return [await stream(s, r1, {"prompt": words(20), "max_tokens": 60, "ignore_eos": True}) for _ in range(n)]

    async def main():
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            alone = await alone_runs(s, 3)
            loads = [Stream() for _ in range(n_load)]
            tasks = [
                asyncio.create_task(
                    stream(s, r0, {"prompt": words(prompt_len), "max_tokens": 400, "ignore_eos": True}, into=x)
                )
                for x in loads
            ]
            t0 = time.monotonic()
            try:
                while not all(x.marks for x in loads):  # every rank-0 stream past its prefill: pure decode now
                    assert not any(t.done() for t in tasks), [t.result().error for t in tasks if t.done()]
                    assert time.monotonic() - t0 < 300, "rank 0's prefills did not finish in 300 s"
                    await asyncio.sleep(0.1)
                prefill_s = time.monotonic() - t0
                loaded = await stream(s, r1, {"prompt": words(20), "max_tokens": n_out, "ignore_eos": True})
            finally:
                for t in tasks:
                    t.cancel()  # closing the streams aborts them in vLLM
                await asyncio.gather(*tasks, return_exceptions=True)

            async def rank0_idle():
                return (await counters(s, r0, "vllm:num_requests_running")).get("0", 1.0) == 0

            await wait_until(rank0_idle, timeout=60)
            alone += await alone_runs(s, 3)
            return alone, loaded, loads, prefill_s

    alone, loaded, loads, prefill_s = asyncio.run(main())
    assert all(a.tokens == 60 for a in alone) and loaded.tokens == n_out
    a, b = loaded.t_first, loaded.t_last
    rank0_tokens = statistics.mean(x.tokens_between(a, b) for x in loads)
    done_early = [x.tokens for x in loads if x.t_last < b]
    assert rank0_tokens >= 0.9 * (n_out - 1), (rank0_tokens, done_early, prefill_s)  # rank 0 decoded all along
    runs = [x.tpot() * 1e3 for x in alone]
    alone_ms = min(runs)
    loaded_ms = loaded.tpot() * 1e3
    rank0_ms = (b - a) / rank0_tokens * 1e3
    print(
        f"\nrank 1 alone: {alone_ms:.1f} ms/token (fastest of {', '.join(f'{r:.1f}' for r in runs)}; "
        f"median {statistics.median(runs):.1f}); with rank 0 decoding {n_load}×{prompt_len}-token prompts "
        f"(prefills took {prefill_s:.1f} s): {loaded_ms:.1f} ms/token; rank 0 meanwhile: {rank0_ms:.1f} ms/token "
        f"({rank0_tokens:.0f} tokens per stream). loaded/alone = {loaded_ms / alone_ms:.2f} "
        f"(vs median {loaded_ms / statistics.median(runs):.2f}), rank1/rank0 = {loaded_ms / rank0_ms:.2f}"
    )
    assert loaded_ms >= 1.5 * alone_ms  # rank 0's load slows rank 1 although it runs on another core …
    assert 0.8 <= loaded_ms / rank0_ms <= 1.25  # … to rank 0's pace: the ranks step in lock-step


def _direct_and_routed(urls: list[str], body: dict, path: str = "/v1/completions", **router_cfg):
    """Send ``body`` straight to rank 0 and through the router over ``urls``; record every failure the router charges
    a rank with meanwhile."""
    url = urls[0]

    async def main():
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, routed(urls, **router_cfg) as (router, rurl):
            dropped = []
            orig = router.breaker.failure  # every failure a rank is charged with goes through the breaker
            router.breaker.failure = lambda g, kind: (dropped.append((g, kind)), orig(g, kind))[1]
            async with s.post(url + path, json=body) as r:
                direct = (r.status, await r.json(content_type=None))
            async with s.post(rurl + path, json=body) as r:
                via = (r.status, await r.json(content_type=None))
            async with s.get(rurl + "/health") as r:
                health = await r.json()
            return direct, via, dropped, health

    return asyncio.run(main())


@pytest.mark.parametrize("case", ["bad_parameter", "bad_parameter_stream", "unknown_model"])
def test_rank_4xx_passes_through_and_rank_stays_in_rotation(external, case):
    """A request the rank rejects (bad parameter: 400; unknown model: 404) gets the rank's own status and body, and
    is not taken as the rank failing: it stays in rotation."""
    body = {"model": MODEL, "prompt": words(8, seed=1), "max_tokens": 5}
    if case.startswith("bad_parameter"):
        body["top_p"] = 2.0  # vLLM: "top_p must be in (0, 1]" — the router itself only checks it is a number
        body["stream"] = case.endswith("stream")
    else:
        body["model"] = "no-such-model"
    # the health checker would bring a dropped rank back; keep it out of the way so a drop stays visible
    direct, via, dropped, health = _direct_and_routed(external.rank_urls, body, health_interval_s=3600, max_retries=1)
    print(f"\nrank answered {direct}; router answered {via}; ranks dropped: {dropped}; router /health: {health}")
    assert direct[0] == (400 if case.startswith("bad") else 404)
    assert via == direct  # same status, same body
    assert dropped == [] and health["ranks_in_rotation"] == 2


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_non_stream_answer_is_the_ranks_own(external, chat):
    """A non-stream request through the router returns what the rank itself answers (greedy, fixed seed)."""
    if chat:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": words(12, seed=2)}]}
    else:
        path, body = "/v1/completions", {"prompt": words(12, seed=2)}
    body.update(model=MODEL, max_tokens=16, temperature=0, seed=0)
    t0 = time.time()
    direct, via, dropped, _ = _direct_and_routed(external.rank_urls, body, path)
    print(f"\nrank: {direct}\nrouter: {via}")
    (ds, d), (vs, v) = direct, via
    assert ds == vs == 200
    assert set(v) == set(d)  # the same fields
    assert v["object"] == d["object"] and v["model"] == d["model"]
    assert v["usage"] == d["usage"] and v["usage"]["completion_tokens"] == 16
    assert [c.get("finish_reason") for c in v["choices"]] == [c.get("finish_reason") for c in d["choices"]]
    key = "message" if chat else "text"
    assert [c[key] for c in v["choices"]] == [c[key] for c in d["choices"]]  # greedy: the same tokens
    assert isinstance(v["created"], int) and abs(v["created"] - t0) < 120
    shape = re.sub(r"[0-9a-f]", "x", d["id"])  # e.g. cmpl-xxxxxxxxxxxxxxxx
    assert re.sub(r"[0-9a-f]", "x", v["id"]) == shape
