"""What does one prompt cost on an idle testbed, against what a step-time file says? On a running testbed
(``dpbalance testbed up``), sends lone prompts of each ``--lengths`` (random token ids, ``max_tokens`` 1, one at a
time, nothing else running) to one rank and prints the median time to the first token, next to the step-time
model's time for that prefill (the rank computing the whole prompt while no rank decodes, chunked by
``--max-batched-tokens`` as the engine does).

    python benchmarks/real_vllm_lone_prompts.py --step-time docs/results/real_vllm/step_time_same_day.yaml

The first token also carries the API server's handling of the request, so a model that prices the prefill right
reads a little under the measurement; a model that reads well under it is missing prefill cost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from testbed_streams import ids, stream  # noqa: E402


async def first_token(s, url: str, model: str, prompt: list[int]) -> float:
    """Seconds from sending ``prompt`` to its first streamed token."""
    times: list[float] = []
    t0 = time.perf_counter()
    await stream(s, url, {"model": model, "prompt": prompt, "max_tokens": 1}, times)
    if not times:
        raise RuntimeError(f"{url} sent no token")
    return times[0] - t0


def modelled(spec: str, ranks: int, rank: int, length: int, budget: int) -> float:
    """The step-time model's seconds for ``rank`` to prefill a ``length``-token prompt alone, chunk by chunk."""
    from dpbalance.engine.step_time import make_step_time

    model = make_step_time(spec, slots=32)
    zeros = np.zeros(ranks)
    done, total = 0, 0.0
    while done < length:
        c = min(budget, length - done)
        seqs, tok, attn = zeros.copy(), zeros.copy(), zeros.copy()
        seqs[rank], tok[rank], attn[rank] = 1, c, c * (done + (c + 1) / 2)
        total += float(model.rank_times(zeros, seqs, tok, attn).max())
        done += c
    return total


async def main(a) -> None:
    rng = random.Random(a.seed)
    rows = []
    async with aiohttp.ClientSession() as s:
        await first_token(s, a.ranks[a.rank], a.model, ids(rng, 16))  # warm up
        for length in a.lengths:
            times = []
            for _ in range(a.repeat):
                times.append(await first_token(s, a.ranks[a.rank], a.model, ids(rng, length)))  # nothing cached
                await asyncio.sleep(a.pause)
            rows.append((length, statistics.median(times), min(times), max(times)))
            print(f"# {length} tokens: {', '.join(f'{t * 1e3:.0f}' for t in times)} ms", flush=True)
    print()
    print(f"lone prompts on rank {a.rank} of {len(a.ranks)}, nothing else running; {a.repeat} per length")
    print()
    head = "| prompt tokens | first token, median ms | min–max ms |"
    print(head + (" model ms | measured / model |" if a.step_time else ""))
    print("|---:|---:|---:|" + ("---:|---:|" if a.step_time else ""))
    for length, med, lo, hi in rows:
        line = f"| {length:,} | {med * 1e3:.0f} | {lo * 1e3:.0f}–{hi * 1e3:.0f} |"
        if a.step_time:
            m = modelled(a.step_time, len(a.ranks), a.rank, length, a.max_batched_tokens)
            line += f" {m * 1e3:.0f} | {med / m:.2f} |"
        print(line)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", nargs="+", default=["http://127.0.0.1:18600", "http://127.0.0.1:18601"])
    ap.add_argument("--rank", type=int, default=0, help="the rank that gets the prompts")
    ap.add_argument("--model", default="tiny-moe")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 1536, 2048, 3072])
    ap.add_argument("--repeat", type=int, default=4, help="prompts per length")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between prompts")
    ap.add_argument("--step-time", default=None, help="a step-time file (or spec) to compare with")
    ap.add_argument("--max-batched-tokens", type=int, default=2048, help="the ranks' prefill chunk (the testbed's)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
