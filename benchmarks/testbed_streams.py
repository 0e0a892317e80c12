"""What the testbed probes (``real_vllm_prefill_together``, ``real_vllm_churn``, ``real_vllm_lone_prompts``) send
the ranks: prompts of random token ids, and streamed completions whose token chunks are timed as they arrive."""

from __future__ import annotations

import random
import time


def ids(rng: random.Random, n: int) -> list[int]:
    """``n`` random token ids (within the testbed model's vocabulary; new ids each time: nothing cached)."""
    return [rng.randrange(16, 1000) for _ in range(n)]


async def stream(s, url: str, body: dict, times: list[float] | None = None) -> None:
    """One streamed completion of ``body`` (``ignore_eos``, so it runs to ``max_tokens``); the arrival time of
    each token chunk goes into ``times``. A rank that refuses the request is an error naming it."""
    async with s.post(url + "/v1/completions", json={**body, "stream": True, "ignore_eos": True}) as r:
        if r.status != 200:
            raise RuntimeError(f"{url} answered {r.status}: {(await r.text())[:200]}")
        async for line in r.content:
            if times is not None and line.startswith(b"data: {"):
                times.append(time.perf_counter())
