"""Small HTTP helpers for the real-vLLM tests: timed streaming requests and Prometheus counters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field

import aiohttp

MODEL = "tiny-moe"


_rng = random.Random()


def words(n: int, seed: int | None = None) -> str:
    """A prompt of exactly n tokens for the testbed's word-level tokenizer (words w0 … w999). Random unless seeded,
    so vLLM's prefix cache cannot skip the prefill of a prompt an earlier run sent."""
    rng = _rng if seed is None else random.Random(seed)
    return " ".join(f"w{rng.randrange(1000)}" for _ in range(n))


@dataclass
class Stream:
    status: int = 0
    tokens: int = 0
    t_start: float = 0.0
    marks: list[tuple[float, int]] = field(default_factory=list)  # (arrival time, completion tokens so far)
    error: str = ""

    @property
    def t_first(self) -> float:
        return self.marks[0][0]

    @property
    def t_last(self) -> float:
        return self.marks[-1][0]

    def tpot(self) -> float:
        """Seconds per output token after the first one."""
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (t1 - t0) / max(1, n1 - n0)

    def tokens_between(self, a: float, b: float) -> int:
        """Tokens that arrived in the time window [a, b]."""
        before = [n for t, n in self.marks if t < a]
        upto = [n for t, n in self.marks if t <= b]
        return (upto[-1] if upto else 0) - (before[-1] if before else 0)


async def stream(
    session: aiohttp.ClientSession, url: str, body: dict, headers: dict | None = None, into: Stream | None = None
) -> Stream:
    """POST a streaming completion; record when each chunk came and the exact token count (continuous usage).
    Progress is recorded in ``into`` (if given) as it happens, so a cancelled stream keeps what it got."""
    body = dict(body, stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    body.setdefault("model", MODEL)
    s = into if into is not None else Stream()
    s.t_start = time.perf_counter()
    async with session.post(url + "/v1/completions", json=body, headers=headers or {}) as r:
        s.status = r.status
        if r.status != 200:
            s.error = await r.text()
            return s
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            u = chunk.get("usage")
            if u and u.get("completion_tokens", 0) > s.tokens:
                s.tokens = u["completion_tokens"]
                s.marks.append((time.perf_counter(), s.tokens))
    return s


async def counters(session: aiohttp.ClientSession, url: str, name: str) -> dict[str, float]:
    """Values of a Prometheus counter by its 'engine' label (vLLM: engine = DP rank)."""
    out: dict[str, float] = {}
    async with session.get(url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + "{"):
                labels = dict(kv.split("=", 1) for kv in line[len(name) + 1 : line.index("}")].split(","))
                key = labels.get("engine", labels.get("rank", "")).strip('"')
                out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def wait_until(pred, timeout: float = 120.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def routed(urls, **cfg):
    """``dpbalance serve`` (in-process) in front of ``urls``; yields (router, router URL)."""
    from dpbalance.router.server import RouterConfig, start_router

    opts = dict(policy="br0", slots=32, model=MODEL, request_timeout_s=120.0)
    opts.update(cfg)
    router, url, runner = await start_router(RouterConfig(decode=tuple(urls), **opts))
    try:
        yield router, url
    finally:
        await runner.cleanup()
