"""Do requests that come and go cost the ranks step time beyond their own prefill and decode? On a running
testbed (``dpbalance testbed up``), every rank decodes ``--decode`` long streams while short requests (``--prompt``
token ids, ``--out`` output tokens each) arrive as a Poisson process at each of ``--rates`` per second, sent to the
ranks in turn; prints the step (time per token of the long streams) at each rate, the step added over the
no-arrival windows, and that added time per request (added step x steps per second / rate).

    python benchmarks/real_vllm_churn.py                                  # ranks at 127.0.0.1:18600 and :18601
    python benchmarks/real_vllm_churn.py --out 2 --out 40 --repeat 3

The step-time model charges a short request only its prompt's prefill and one sequence more on its rank while it
decodes (``--step-time``'s per-sequence terms, a fraction of a millisecond each); with 16-token prompts and two output
tokens whatever more the steps take is the cost of a request's arrival and end. Windows run in an order that
alternates the rates, so drift on a shared machine spreads over all of them; the printed figures are medians over
``--repeat`` windows.
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

sys.path.insert(0, str(Path(__file__).parent))
from testbed_streams import ids, stream  # noqa: E402


async def window(s, a, rng: random.Random, rate: float, out: int) -> tuple[float, float]:
    """(mean step of the long streams over the window, short requests in flight per rank on average)."""
    n = a.decode * len(a.ranks)
    times: list[list[float]] = [[] for _ in range(n)]
    longs = [
        asyncio.create_task(
            stream(s, a.ranks[i % len(a.ranks)], {"model": a.model, "prompt": ids(rng, 128), "max_tokens": a.long}, t)
        )
        for i, t in enumerate(times)
    ]
    shorts: list[asyncio.Task] = []
    in_flight = 0.0
    try:
        for _ in range(600):  # every long stream past its prefill (at most 30 s)
            if min(len(t) for t in times) >= 8:
                break
            await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        k0 = [len(t) for t in times]
        next_at, i = t0, 0
        while (now := time.perf_counter()) < t0 + a.window:
            if rate > 0 and now >= next_at:
                body = {"model": a.model, "prompt": ids(rng, a.prompt), "max_tokens": out}
                shorts.append(asyncio.create_task(stream(s, a.ranks[i % len(a.ranks)], body)))
                i += 1
                next_at += rng.expovariate(rate)
            in_flight += sum(not t.done() for t in shorts) * 0.01
            await asyncio.sleep(0.01)
        t1 = time.perf_counter()
        k1 = [len(t) for t in times]
        await asyncio.gather(*shorts)
        for t in longs:  # a long stream that failed (or ended) inside the window spoils the measurement
            if t.done():
                t.result()
                raise RuntimeError(f"a long stream ended inside the window: raise --long above {a.long}")
    finally:
        for t in longs:
            t.cancel()
        await asyncio.gather(*longs, return_exceptions=True)
    step = statistics.median((t1 - t0) / max(1, b - c) for b, c in zip(k1, k0))
    return step, in_flight / (t1 - t0) / len(a.ranks)


async def main(a) -> None:
    rng = random.Random(a.seed)
    steps: dict[tuple[int, float], list[float]] = {}
    flight: dict[tuple[int, float], list[float]] = {}
    async with aiohttp.ClientSession() as s:
        for rep in range(a.repeat):
            for out in a.out:
                order = a.rates if rep % 2 == 0 else a.rates[::-1]
                for rate in order:
                    step, fl = await window(s, a, rng, rate, out)
                    steps.setdefault((out, rate), []).append(step)
                    flight.setdefault((out, rate), []).append(fl)
                    print(f"# out {out:3d}, {rate:4.1f} req/s: step {step * 1e3:6.2f} ms", flush=True)
                    await asyncio.sleep(1.0)
    print()
    print(f"{a.decode} long stream(s) per rank on {len(a.ranks)} ranks; short requests: {a.prompt}-token prompts")
    print()
    print("| output tokens | arrivals /s | step ms (median) | added ms | in flight per rank | added ms per request |")
    print("|---:|---:|---:|---:|---:|---:|")
    for out in a.out:
        base = statistics.median(steps[(out, 0.0)]) if (out, 0.0) in steps else None
        for rate in a.rates:
            st = statistics.median(steps[(out, rate)])
            fl = statistics.median(flight[(out, rate)])
            added = st - base if base is not None else float("nan")
            per = added / st / rate * 1e3 if rate > 0 and base is not None else float("nan")
            print(f"| {out} | {rate:g} | {st * 1e3:.2f} | {added * 1e3:+.2f} | {fl:.2f} | {per:.0f} |")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", nargs="+", default=["http://127.0.0.1:18600", "http://127.0.0.1:18601"])
    ap.add_argument("--model", default="tiny-moe")
    ap.add_argument("--decode", type=int, default=1, help="long decode streams per rank")
    ap.add_argument("--long", type=int, default=2000, help="output tokens of a long stream (within the model's length)")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.0, 2.0, 4.0, 8.0], help="arrivals per second")
    ap.add_argument("--out", type=int, action="append", help="output tokens of a short request (repeatable)")
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens of a short request")
    ap.add_argument("--window", type=float, default=8.0, help="seconds measured per window")
    ap.add_argument("--repeat", type=int, default=3, help="windows per rate and output length")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args(argv)
    args.out = args.out or [2]
    if 0.0 not in args.rates:
        args.rates = [0.0, *args.rates]
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
