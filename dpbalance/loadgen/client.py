"""``dpbalance loadgen``: replay a trace as real HTTP streams against any OpenAI-compatible endpoint.

Each request sends a prompt of s tokens (distinct random token ids, or one word repeated; ``prompt_scale``
scales them), ``max_tokens = o`` (optionally capped) and ``ignore_eos``, with ``stream=true``. Arrivals
are open-loop: trace timestamps (``replay``, scaled by ``rate_scale``) or Poisson at ``qps``; the run is
bounded by ``max_requests`` and ``duration_s``. It records TTFT, TPOT and E2E per request and builds a
result record (the simulator's Result schema); per-step load statistics (imbalance, idle) come from the
engine group's ``/admin/stats`` when an engine-sim URL is given, since a client can't see per-step loads.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import numpy as np

from ..core.openai_stream import USAGE_OPTIONS, StreamError, chunks, tokens_after
from ..core.workload import Workload
from ..results.schema import SCHEMA_VERSION, Result
from .config import LoadgenConfig

#: an idle pooled connection is closed after this many seconds, before the server closes it: vLLM's API server
#: (uvicorn) drops idle connections after 5 s, and a request sent on one it is closing fails with "server
#: disconnected" before any byte comes back
IDLE_CONNECTION_S = 2.0


@dataclass
class Outcome:
    sent: float
    first: float = math.nan
    end: float = math.nan
    tokens: int = 0
    expected: int = 0
    status: str = "pending"  # ok | error:<reason>


def schedule(w: Workload, cfg: LoadgenConfig) -> np.ndarray:
    n = len(w)
    if cfg.mode == "qps":
        gaps = np.random.default_rng(cfg.seed).exponential(1.0 / cfg.qps, n)
        return np.cumsum(gaps) - gaps[0]
    if not w.has_timestamps:
        raise ValueError(f"trace {w.name!r} has no timestamps: give --qps N for Poisson arrivals")
    return w.arrival / cfg.rate_scale


def prompt_ids(n: int, seed: int) -> list[int]:
    """A prompt of ``n`` random token ids (ids 16..999, valid for any vocabulary of 1,000 or more), different for
    every request, so no two prompts share a cached prefix and every prefill is paid for as in real traffic."""
    return np.random.default_rng(seed).integers(16, 1000, max(1, n)).tolist()


async def _one(session, cfg: LoadgenConfig, prompt, o: int, out: Outcome) -> None:
    body = {"prompt": prompt, "max_tokens": o, "ignore_eos": True, "stream": True, "stream_options": USAGE_OPTIONS}
    if cfg.model:
        body["model"] = cfg.model
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    out.expected = o
    try:
        async with session.post(
            cfg.target + "/v1/completions",
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s),
        ) as r:
            if r.status != 200:
                out.status = f"error:http_{r.status}"
                return
            async for chunk in chunks(r):
                n = tokens_after(chunk, out.tokens)
                if n > out.tokens:
                    if out.tokens == 0:
                        out.first = time.perf_counter()
                    out.tokens = n
            out.end = time.perf_counter()
            out.status = "ok" if out.tokens == o else f"error:short_{out.tokens}_of_{o}"
    except StreamError as exc:
        out.status = "error:no_done" if "without [DONE]" in str(exc) else "error:stream_error"
    except (TimeoutError, aiohttp.ClientError) as exc:
        out.status = f"error:{type(exc).__name__}"


async def run(w: Workload, cfg: LoadgenConfig, progress: Callable[[int, int], None] | None = None) -> list[Outcome]:
    """Send the workload open-loop; every request ends with an outcome (ok or an error reason)."""
    n = len(w) if cfg.max_requests is None else min(len(w), cfg.max_requests)
    at = schedule(w, cfg)[:n]
    prompts = np.maximum(1, np.round(w.prompt[:n] * cfg.prompt_scale)).astype(int)
    outs_len = w.output[:n] if cfg.max_output is None else np.minimum(w.output[:n], cfg.max_output)
    prompt_seed = cfg.seed if cfg.prompt_seed is None else cfg.prompt_seed
    outcomes = [Outcome(sent=math.nan) for _ in range(n)]
    done = 0
    conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE_CONNECTION_S)
    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.perf_counter()
        tasks = []

        async def fire(i: int):
            nonlocal done
            delay = at[i] - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            outcomes[i].sent = time.perf_counter()
            prompt = (
                prompt_ids(int(prompts[i]), prompt_seed * 1_000_003 + i)
                if cfg.prompts == "random"
                else " ".join(["w"] * int(prompts[i]))
            )
            await _one(session, cfg, prompt, int(outs_len[i]), outcomes[i])
            done += 1
            if progress:
                progress(done, n)

        for i in range(n):
            if at[i] > cfg.duration_s:
                break
            tasks.append(asyncio.create_task(fire(i)))
        _, pending = (
            await asyncio.wait(tasks, timeout=cfg.duration_s + cfg.request_timeout_s) if tasks else (set(), set())
        )
        for t in pending:
            t.cancel()
        for o in outcomes:
            if o.status == "pending":
                o.status = "error:not_sent_within_duration" if math.isnan(o.sent) else "error:timeout"
    return outcomes


def summarize(
    outcomes: list[Outcome],
    *,
    policy: str,
    workers: int,
    slots: int,
    engine_stats: dict | None,
    wall_s: float,
    config: dict,
) -> Result:
    ok = [o for o in outcomes if o.status == "ok"]
    ttft = np.array([o.first - o.sent for o in ok])
    e2e = np.array([o.end - o.sent for o in ok])
    tpot = np.array([(o.end - o.first) / (o.tokens - 1) * 1e3 for o in ok if o.tokens > 1])
    pct = lambda x, q: float(np.percentile(x, q)) if len(x) else math.nan  # noqa: E731
    sent = [o.sent for o in outcomes if not math.isnan(o.sent)]
    span = (max(o.end for o in ok) - min(sent)) if ok else math.nan
    tokens = sum(o.tokens for o in outcomes)
    es = engine_stats or {}
    return Result(
        policy=policy,
        workers=workers,
        slots=slots,
        requests=len(outcomes),
        completed=len(ok),
        running=0,
        never_admitted=len(outcomes) - len(ok),  # a client sees a request end, not where it failed
        makespan_s=span,
        throughput_tok_s=tokens / span if ok and span > 0 else math.nan,
        throughput_all_tok_s=tokens / span if ok and span > 0 else math.nan,
        avg_imbalance_gap=es.get("avg_imbalance_gap", math.nan),
        avg_imbalance_maxmin=es.get("avg_imbalance_maxmin", math.nan),
        maxmin_all=es.get("avg_imbalance_maxmin", math.nan),
        wait_max_s=math.nan,
        balance_ratio=es.get("balance_ratio", math.nan),
        idle_fraction=es.get("idle_fraction", math.nan),
        energy_j=math.nan,
        energy_j_per_token=math.nan,
        ttft_p50_s=pct(ttft, 50),
        ttft_p95_s=pct(ttft, 95),
        ttft_p99_s=pct(ttft, 99),
        tpot_p50_ms=pct(tpot, 50),
        tpot_p95_ms=pct(tpot, 95),
        tpot_p99_ms=pct(tpot, 99),
        e2e_p50_s=pct(e2e, 50),
        e2e_p95_s=pct(e2e, 95),
        e2e_p99_s=pct(e2e, 99),
        dispatch_us_p50=math.nan,
        dispatch_us_p99=math.nan,
        steps=int(es.get("steps", 0)),
        sim_wall_s=wall_s,
        window="all",
        label=f"live:{policy}",
        config={**config, "engine_stats": es, "errors": _errors(outcomes), "source": "loadgen"},
        schema_version=SCHEMA_VERSION,
    )


def _errors(outcomes: list[Outcome]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        if o.status != "ok":
            out[o.status] = out.get(o.status, 0) + 1
    return out
