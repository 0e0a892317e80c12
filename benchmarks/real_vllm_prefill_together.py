"""Does a rank's prefill slow down when the other ranks prefill at the same time? On a running testbed
(``dpbalance testbed up``), every rank decodes ``--decode`` streams while prompts of a fixed length are admitted
one after another (six per window, ``max_tokens`` 1) on one rank, or on every rank at once; prints the mean step
(time per token of one decode stream) over each window, and a decode-only window after it.

    python benchmarks/real_vllm_prefill_together.py                      # ranks at 127.0.0.1:18600 and :18601

Each rank does the same prefill work in both cases; if the ranks were independent the step would not change.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from testbed_streams import ids, stream  # noqa: E402


async def one(s, url: str, model: str, prompt: list[int]) -> None:
    async with s.post(url + "/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 1}) as r:
        await r.read()


async def window(s, a, rng, prefill_on: list[int], P: int) -> tuple[float, float, int]:
    """(mean step while the prompts run, mean step of a decode-only stretch after, steps in the first)."""
    n = a.decode * len(a.ranks)
    times: list[list[float]] = [[] for _ in range(n)]
    body = {"model": a.model, "max_tokens": 3000}
    tasks = [
        asyncio.create_task(stream(s, a.ranks[i // a.decode], {**body, "prompt": ids(rng, 128)}, times[i]))
        for i in range(n)
    ]
    try:
        for _ in range(600):  # every stream past its prefill (at most 30 s)
            if min(len(t) for t in times) >= 8:
                break
            await asyncio.sleep(0.05)
        ref = times[0]
        t0, k0 = time.perf_counter(), len(ref)
        for _ in range(a.prompts):
            await asyncio.gather(*(one(s, a.ranks[g], a.model, ids(rng, P)) for g in prefill_on))
        t1, k1 = time.perf_counter(), len(ref)
        await asyncio.sleep(0.5)
        t2, k2 = time.perf_counter(), len(ref)
        await asyncio.sleep(2.0)
        t3, k3 = time.perf_counter(), len(ref)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return (t1 - t0) / max(1, k1 - k0), (t3 - t2) / max(1, k3 - k2), k1 - k0


async def main(a) -> None:
    rng = random.Random(a.seed)
    every = list(range(len(a.ranks)))
    cases = [[0], every, [len(a.ranks) - 1], every]
    async with aiohttp.ClientSession() as s:
        for P in a.prompt:
            for on in cases:
                busy, idle, k = await window(s, a, rng, on, P)
                where = "every rank" if on == every else f"rank {on[0]}"
                print(
                    f"{P:5d}-token prompts on {where:10s}: step {busy * 1e3:6.1f} ms over {k} steps "
                    f"(decode only after: {idle * 1e3:5.1f} ms)",
                    flush=True,
                )
                await asyncio.sleep(2.0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", nargs="+", default=["http://127.0.0.1:18600", "http://127.0.0.1:18601"])
    ap.add_argument("--model", default="tiny-moe")
    ap.add_argument("--decode", type=int, default=31, help="decode streams per rank (below the ranks' max-num-seqs)")
    ap.add_argument("--prompt", type=int, nargs="+", default=[1024, 2048], help="prompt lengths to prefill")
    ap.add_argument("--prompts", type=int, default=6, help="prompts per rank in each window")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    asyncio.run(main(ap.parse_args()))
