"""Internal data-parallel mode: one vLLM OpenAI server for both ranks; the header ``X-data-parallel-rank`` pins a
request to a rank. Opt-in: ``pytest -m vllm`` (``make test-vllm``)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from .streams import counters, stream, words

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
GEN = "vllm:generation_tokens_total"


def test_header_pins_the_request_to_a_rank(internal):
    url = internal.rank_urls[0]
    assert internal.rank_urls == [url, url]  # one server for both ranks

    async def main():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
            before = await counters(s, url, GEN)
            sent = [(1, 7), (1, 9), (0, 5), (1, 4)]  # (rank header, max_tokens)
            got = [
                await stream(
                    s,
                    url,
                    {"prompt": words(10), "max_tokens": n, "ignore_eos": True},
                    headers={"X-data-parallel-rank": str(r)},
                )
                for r, n in sent
            ]
            after = await counters(s, url, GEN)
            return sent, got, before, after

    sent, got, before, after = asyncio.run(main())
    assert [g.status for g in got] == [200] * 4
    assert [g.tokens for g in got] == [n for _, n in sent]
    delta = {e: after[e] - before.get(e, 0.0) for e in after}
    print(f"\ngenerated tokens per engine label: {delta}")
    assert set(delta) == {"0", "1"}  # the per-engine label is the DP rank
    assert delta["1"] == 7 + 9 + 4 and delta["0"] == 5
