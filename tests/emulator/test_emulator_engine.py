"""engine-sim runs the simulator's engine model: prefix-cache hits appear under vLLM's metric names, prefill
costs wall time, and the decode-only default is unchanged."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from dpbalance.emulator import start_group
from dpbalance.engine.config import EngineConfig

PROMPT = " ".join(f"w{i}" for i in range(40))  # 40 tokens: two full 16-token blocks, and 8 more


def _metric(text: str, name: str, engine: int) -> float:
    m = re.search(rf'^{re.escape(name)}{{engine="{engine}"[^}}]*}} (\S+)$', text, re.M)
    assert m, f"{name} for engine {engine} missing"
    return float(m.group(1))


async def _complete(s, url, prompt, n=3):
    async with s.post(url + "/v1/completions", json={"model": "dpbalance-sim", "prompt": prompt, "max_tokens": n}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def test_prefix_cache_hits_are_counted_per_engine_with_vllm_metric_names():
    async def main():
        cfg = EngineConfig(prefill=True, prefix_cache=True)
        group, urls, _ = await start_group(2, slots=4, time_scale=50.0, engine=cfg)
        try:
            async with aiohttp.ClientSession() as s:
                await _complete(s, urls[0], PROMPT)
                await _complete(s, urls[0], PROMPT)  # the same prompt on the same rank: two blocks served
                await _complete(s, urls[1], PROMPT)  # another rank's cache never saw it
                text = ""
                for u in urls:  # each rank's port shows its own engine
                    async with s.get(u + "/metrics") as r:
                        text += await r.text()
        finally:
            await group.server.close()
            await group.stop()
        return text

    text = asyncio.run(main())
    # queries: every prompt token looked up (40 + 40); hits: 2 blocks of 16 on the second request (the last
    # prompt token is always recomputed, but it is not in a full block here)
    assert _metric(text, "vllm:prefix_cache_queries_total", 0) == 80
    assert _metric(text, "vllm:prefix_cache_hits_total", 0) == 32
    assert _metric(text, "vllm:prefix_cache_queries_total", 1) == 40
    assert _metric(text, "vllm:prefix_cache_hits_total", 1) == 0


def test_prefill_takes_steps_and_decode_only_does_not():
    async def steps_for(cfg):
        group, urls, _ = await start_group(1, slots=4, time_scale=50.0, engine=cfg, step_time="linear_max")
        try:
            async with aiohttp.ClientSession() as s:
                out = await _complete(s, urls[0], " ".join(["x"] * 3000), n=2)
                assert out["usage"]["completion_tokens"] == 2
            return group.steps
        finally:
            await group.server.close()
            await group.stop()

    # decode-only: one step per token; prefill on (budget 2048): the 3,000-token prompt takes two chunks, the
    # first token comes with the second, the next one step later
    assert asyncio.run(steps_for(EngineConfig())) == 2
    assert asyncio.run(steps_for(EngineConfig(prefill=True))) == 3
