"""Drive controlled loads through a live deployment and measure the step time at each.

A *phase* holds a fixed set of streams on every rank (a prompt length and a number of concurrent streams per rank)
with long outputs (``ignore_eos``). Once every stream has received ``warmup_tokens`` tokens (all prefills done,
pure decode from here on) the phase's window opens: the ranks' ``/metrics`` are read, then read again when every
stream has received ``measure_steps`` more tokens (or the phase's share of the time budget is spent), and the
streams are closed. In that window:

- the window estimate is the window's length divided by the tokens a stream received in it (median over
  streams): the mean time per output token, stalls included, which is what TPOT measures;
- the stream estimate is the median gap between consecutive tokens over all streams (a chunk carrying k tokens
  counts as k gaps of a k-th of its delay): robust to a stall of this client, blind to the engine's own stalls;
- the ``/metrics`` estimates are, per rank, Δsum/Δcount of ``vllm:inter_token_latency_seconds`` and the window
  length divided by Δcount of ``vllm:iteration_tokens_total`` (engine steps);
- each rank's load is, at the window's midpoint, the sum over its streams of prompt tokens (``/tokenize`` or the
  stream's usage) plus tokens generated so far.

A *prefill phase* (``--prefill-lens``) keeps decode streams of the lightest grid level on every rank and, once they
decode, admits ``prefill_requests`` prompts of a known length one after another on one rank (``max_tokens`` 1; the
prefill rank rotates over the phases). With a hit fraction h > 0 the prompts share a prefix of about h of their
length, sent to that rank once before the window, so the rank's prefix cache serves it (the ranks' own
``vllm:prefix_cache_hits_total`` says how much it did, and that is what counts when it is exposed). The window runs
from the first prompt's admission to the last one's answer; its step time is the window's length over the tokens a
decode stream received in it, and the prefill work per step is the prompts' computed tokens T = Σ(P − H) and
attention pairs A = Σ(P − H)(P + H + 1)/2 divided by those steps (token ids as prompts: the counts are exact).

Phases run in a seeded random order (slow drifts do not line up with load), each gets an equal share of the
remaining time budget, and between phases the driver waits for the ranks to go idle.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from .config import CalibrateConfig
from .engine_api import EngineError, RankClient, StreamRecord, Tokenizer, get_json, make_prompt

POLL_S = 0.005
#: a window with fewer token gaps than this (over all streams) is too short to measure
MIN_GAPS = 5
#: per-rank step times that differ by more than this fraction in one phase mean the ranks do not share a barrier
BARRIER_SPREAD = 0.25


#: a phase whose median token gap and mean step over the window differ by more than this was disturbed by a stall
DISTURBED = 0.25


class PhaseFailed(RuntimeError):
    pass


class PhaseDisturbed(PhaseFailed):
    """A stall (of the engine, the network or this client) distorted the window; measuring again may succeed."""


@dataclass(frozen=True)
class Phase:
    """Streams per rank: ``per_rank[g] = (prompt_len, concurrency)``."""

    index: int
    per_rank: tuple[tuple[int, int], ...]
    prefill: tuple[int, int, float] | None = None  # prefill phase: (rank, prompt length, hit fraction)

    @property
    def streams(self) -> list[int]:
        """Concurrent streams (running sequences) per rank."""
        return [c for _, c in self.per_rank]

    @property
    def label(self) -> str:
        if self.prefill is not None:
            g, p, h = self.prefill
            c, d = self.per_rank[0][1], self.per_rank[0][0]
            return f"prefill {p} tok ({h:.0%} cached) on rank {g}, {c}×{d} decoding/rank"
        levels = sorted(set(self.per_rank))
        if len(levels) == 1:
            return f"{levels[0][1]}×{levels[0][0]} tok/rank"
        return " | ".join(f"{c}×{p}" for p, c in self.per_rank)


@dataclass
class PhaseResult:
    phase: Phase
    loads: list[float]  # per rank, KV tokens at the window midpoint
    stream_s: float  # median token gap, wall seconds
    stream_rank_s: list[float | None]  # the same per rank
    itl_s: list[float | None]  # per rank, from /metrics
    steps_s: list[float | None]  # per rank, window / engine steps
    batch: list[float | None]  # per rank, sequences per engine step (from /metrics)
    gaps: int  # token gaps in the window (all streams)
    window_s: float
    preemptions: float = 0.0
    warnings: list[str] = field(default_factory=list)
    window_s_per_token: float = float("nan")  # window length / tokens per stream (median over streams)
    window_rank_s: list[float | None] = field(default_factory=list)  # the same per rank
    # prefill phases: prompt tokens computed and attention pairs per step on the prefill rank, sequences per rank
    prefill_tok: float = 0.0
    prefill_attn: float = 0.0
    seqs: list[float] | None = None
    prefill_info: dict | None = None


@dataclass
class DriveRecord:
    """Everything one run measured, for the fit and the step-time file."""

    results: list[PhaseResult]
    failed: list[tuple[Phase, str]]
    skipped: list[Phase]
    ranks: int
    model: str
    targets: list[str]
    engine_version: str | None
    metrics: bool
    tokenize: bool
    max_model_len: int | None
    started: float
    duration_s: float
    max_tokens: int
    warnings: list[str] = field(default_factory=list)


def plan(cfg: CalibrateConfig, ranks: int) -> list[Phase]:
    """Balanced phases for every (prompt length, concurrency), plus unequal ones (the heavy rank rotates)."""
    levels = list(itertools.product(cfg.prompt_lens, cfg.concurrency))
    light = (min(cfg.prompt_lens), min(cfg.concurrency))
    rows: list[tuple[tuple[int, int], ...]] = [tuple([lv] * ranks) for lv in levels]
    if cfg.unequal and ranks > 1:
        heavy = [lv for lv in levels if lv != light]
        for i, lv in enumerate(heavy):
            row = [light] * ranks
            row[i % ranks] = lv
            rows.append(tuple(row))
    random.Random(cfg.seed).shuffle(rows)
    return [Phase(i, r) for i, r in enumerate(rows)]


#: the token budget of one engine step assumed when counting the steps a prompt's chunks take (vLLM's default)
STEP_BUDGET = 2048


def plan_prefill(cfg: CalibrateConfig, ranks: int, start: int) -> list[Phase]:
    """One phase per (prefill prompt length, hit fraction, decode concurrency of the grid's extremes); the
    prefill rank rotates."""
    rows = []
    conc = sorted({min(cfg.concurrency), max(cfg.concurrency)})
    for i, (p, h, c) in enumerate(itertools.product(cfg.prefill_lens, cfg.prefill_hits, conc)):
        rows.append((tuple([(min(cfg.prompt_lens), c)] * ranks), (i % ranks, p, h)))
    random.Random(cfg.seed + 1).shuffle(rows)
    return [Phase(start + i, r, pf) for i, (r, pf) in enumerate(rows)]


def max_tokens_for(cfg: CalibrateConfig) -> int:
    """Long enough that no stream finishes before the window closes, even if its prefill ran many steps earlier."""
    return 2 * (cfg.warmup_tokens + cfg.measure_steps) + 64


class Deployment:
    """The ranks of one deployment, probed once."""

    def __init__(self, cfg: CalibrateConfig, session: aiohttp.ClientSession):
        self.cfg, self.session = cfg, session
        self.headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.bases = list(cfg.worker_urls) if cfg.worker_urls else [cfg.dp_endpoint.rstrip("/")] * cfg.ranks
        self.clients: list[RankClient] = []
        self.tokenizer: Tokenizer | None = None
        self.version: str | None = None
        self.has_metrics = False

    async def connect(self, rng: random.Random) -> None:
        cfg = self.cfg
        model = cfg.model
        for base in dict.fromkeys(self.bases):
            status, data = await get_json(self.session, "GET", base + "/v1/models", self.headers)
            if status != 200 or not isinstance(data, dict) or not data.get("data"):
                raise EngineError(
                    f"{base}/v1/models answered HTTP {status}: is this an OpenAI-compatible server (vLLM, engine-sim)?"
                )
            if model is None:
                model = str(data["data"][0].get("id"))
        status, data = await get_json(self.session, "GET", self.bases[0] + "/version", self.headers)
        self.version = str(data.get("version")) if status == 200 and isinstance(data, dict) else None
        for g, base in enumerate(self.bases):
            hdr = dict(self.headers)
            if cfg.dp_endpoint:
                hdr[cfg.rank_header] = str(g)
            self.clients.append(RankClient(g, base, hdr, str(g) if cfg.dp_endpoint else None, model))
        self.tokenizer = Tokenizer(self.bases[0] + "/tokenize", self.headers, model)
        await self.tokenizer.probe(self.session, rng)
        self.has_metrics = all(m is not None and "running" in m for m in await self.scrape())

    @property
    def model(self) -> str:
        return self.clients[0].model

    async def scrape(self) -> list[dict[str, float] | None]:
        return list(await asyncio.gather(*(c.metrics(self.session) for c in self.clients)))

    async def scrape_at(self) -> tuple[float, list[dict[str, float] | None]]:
        t0 = time.perf_counter()
        m = await self.scrape()
        return (t0 + time.perf_counter()) / 2, m

    async def drain(self) -> bool:
        """Wait until no rank runs or queues a request (True), or ``settle_s`` passes (False)."""
        deadline = time.perf_counter() + self.cfg.settle_s
        while time.perf_counter() < deadline:
            if not self.has_metrics:
                await asyncio.sleep(min(0.2, self.cfg.settle_s))
                return True
            ms = await self.scrape()
            if all(m is not None and m.get("running", 0) == 0 and m.get("waiting", 0) == 0 for m in ms):
                return True
            await asyncio.sleep(0.02)
        return False


async def run_phase(dep: Deployment, phase: Phase, budget_s: float, rng: random.Random) -> PhaseResult:
    cfg = dep.cfg
    tok = dep.tokenizer
    mt = max_tokens_for(cfg)
    specs = [(g, p) for g, (p, c) in enumerate(phase.per_rank) for _ in range(c)]
    prompts = [make_prompt(rng, tok.words_for(p)) for _, p in specs]
    counts = await asyncio.gather(*(tok.count(dep.session, pr) for pr in prompts))
    recs = [
        StreamRecord(g, n if n is not None else len(pr.split()), mt) for (g, _), pr, n in zip(specs, prompts, counts)
    ]
    t_start = time.perf_counter()
    tasks = [asyncio.create_task(dep.clients[r.rank].stream(dep.session, pr, r)) for r, pr in zip(recs, prompts)]
    try:
        await _wait(
            recs,
            lambda: all(r.generated >= cfg.warmup_tokens for r in recs),
            t_start + 0.7 * budget_s,
            lambda: (
                f"only {sum(r.generated >= cfg.warmup_tokens for r in recs)} of {len(recs)} streams "
                f"reached {cfg.warmup_tokens} tokens within {0.7 * budget_s:.0f} s (prefill too slow for "
                "the time budget, or more streams than the engine runs at once)"
            ),
        )
        tA, mA = await dep.scrape_at()
        base = [r.generated for r in recs]
        await _wait(
            recs,
            lambda: (
                min(r.generated - b for r, b in zip(recs, base)) >= cfg.measure_steps
                or max(r.generated for r in recs) >= mt - 2
            ),
            t_start + budget_s,
            None,
        )
        tB, mB = await dep.scrape_at()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return _measure(phase, recs, tA, tB, mA, mB, check_disturbed=cfg.source == "stream")


def _ids(rng: random.Random, n: int) -> list[int]:
    """A prompt of n random token ids (16..999: valid for any vocabulary of 1,000 or more, never a special)."""
    return [rng.randrange(16, 1000) for _ in range(n)]


def cached_prefix(cfg: CalibrateConfig, prompt: int, frac: float) -> int:
    """Tokens of a prompt the prefix cache can serve for a shared prefix of ``frac`` of it: whole blocks, never
    the last prompt token."""
    bs = cfg.block_size
    return min(int(frac * prompt) // bs, (prompt - 1) // bs) * bs


async def run_prefill_phase(dep: Deployment, phase: Phase, budget_s: float, rng: random.Random) -> PhaseResult:
    cfg = dep.cfg
    g_pf, P, frac = phase.prefill
    H = cached_prefix(cfg, P, frac)
    mml = dep.tokenizer.max_model_len
    # the decode streams must outlast the window (every prompt's prefill steps and the requests between them)
    mt = min(4000, (mml or 10**9) - max(p for p, _ in phase.per_rank) - 8)
    t_start = time.perf_counter()
    prefix = _ids(rng, H)
    if H:  # the shared prefix enters rank g_pf's cache before the window
        primer = StreamRecord(g_pf, H + cfg.block_size, 1)
        await dep.clients[g_pf].stream(dep.session, prefix + _ids(rng, cfg.block_size), primer)
        if primer.error:
            raise PhaseFailed(primer.error)
    specs = [(g, p) for g, (p, c) in enumerate(phase.per_rank) for _ in range(c)]
    prompts = [_ids(rng, p) for _, p in specs]
    recs = [StreamRecord(g, p, mt) for g, p in specs]
    tasks = [asyncio.create_task(dep.clients[r.rank].stream(dep.session, pr, r)) for r, pr in zip(recs, prompts)]
    sent = 0
    try:
        await _wait(
            recs,
            lambda: all(r.generated >= cfg.warmup_tokens for r in recs),
            t_start + 0.5 * budget_s,
            lambda: f"the decode streams did not reach {cfg.warmup_tokens} tokens within {0.5 * budget_s:.0f} s",
        )
        tA, mA = await dep.scrape_at()
        for _ in range(cfg.prefill_requests):
            if sent and time.perf_counter() > t_start + budget_s:
                break
            one = StreamRecord(g_pf, P, 1)
            job = asyncio.create_task(dep.clients[g_pf].stream(dep.session, prefix + _ids(rng, P - H), one))
            while not job.done():
                if any(r.error for r in recs) or any(r.finished for r in recs):
                    break
                await asyncio.sleep(POLL_S)
            await job
            if one.error:
                raise PhaseFailed(one.error)
            sent += 1
            err = next((r.error for r in recs if r.error), None)
            if err or any(r.finished for r in recs):
                raise PhaseFailed(err or "a decode stream ended inside the window: raise --measure-steps")
        t_done = time.perf_counter()
        ref = recs[0]
        while not ref.times or ref.times[-1] < t_done:  # the step in which the last answer came has ended
            if ref.error or ref.finished or time.perf_counter() > t_done + 10:
                raise PhaseFailed(ref.error or "the decode streams stopped after the last prompt")
            await asyncio.sleep(POLL_S)
        tB, mB = await dep.scrape_at()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    G = len(phase.per_rank)
    # the window in whole steps: from the end of the step running when the first prompt was sent to the end of the
    # one in which the last prompt was answered, timed by one decode stream's tokens (every rank steps together)
    i0 = next(i for i, t in enumerate(ref.times) if t >= tA)
    i1 = next(i for i, t in enumerate(ref.times) if t >= t_done)
    steps = float(ref.counts[i1] - ref.counts[i0])
    wA, wB = ref.times[i0], ref.times[i1]
    if steps < 3:
        raise PhaseFailed(f"only {steps:.0f} decode steps in the prefill window")
    a, b = (mA[g_pf] if mA else None), (mB[g_pf] if mB else None)
    d_hits, d_q = _delta(a, b, "prefix_hits"), _delta(a, b, "prefix_queries")
    warnings = []
    hit = float(H)
    if d_hits is not None and d_q:
        hit = d_hits / sent
        if abs(hit - H) > cfg.block_size:
            warnings.append(
                f"rank {g_pf}'s prefix cache served {hit:.0f} tokens per prompt, {H} were expected: "
                "the measured hits are used"
            )
    new = P - hit
    T = sent * new
    A = sent * new * (P + hit + 1) / 2
    dec = phase.per_rank[g_pf][1]
    chunks = sent * -(-int(round(new)) // max(STEP_BUDGET - dec, 1))
    tm = (wA + wB) / 2
    loads = [0.0] * G
    for r in recs:
        loads[r.rank] += r.prompt + r.generated_at(tm)
    seqs = [float(c) for _, c in phase.per_rank]
    seqs[g_pf] += chunks / steps
    tau = (wB - wA) / steps
    return PhaseResult(
        phase=phase,
        loads=loads,
        stream_s=tau,
        window_s_per_token=tau,
        window_rank_s=[None] * G,
        stream_rank_s=[None] * G,
        itl_s=[None] * G,
        steps_s=[
            (tB - tA) / d if (d := _delta(mA[g] if mA else None, mB[g] if mB else None, "iter_count")) else None
            for g in range(G)
        ],
        batch=[None] * G,
        gaps=int(steps),
        window_s=wB - wA,
        warnings=warnings,
        prefill_tok=T / steps,
        prefill_attn=A / steps,
        seqs=seqs,
        prefill_info={
            "rank": g_pf,
            "prompt": P,
            "cached_expected": H,
            "cached_measured": None if d_hits is None or not d_q else _r3(hit),
            "prompts": sent,
            "steps": steps,
        },
    )


def _r3(x: float) -> float:
    return float(f"{x:.6g}")


async def _wait(recs, done: Callable[[], bool], deadline: float, fail_msg: Callable[[], str] | None) -> None:
    while not done():
        err = next((r.error for r in recs if r.error), None)
        if err:
            raise PhaseFailed(err)
        if any(r.finished and r.generated < r.max_tokens for r in recs):
            raise PhaseFailed("a stream ended before its max_tokens: does the engine honour ignore_eos?")
        if time.perf_counter() > deadline:
            if fail_msg is None:
                return
            raise PhaseFailed(fail_msg())
        await asyncio.sleep(POLL_S)


def _gaps(recs: list[StreamRecord], tA: float, tB: float, rank: int | None = None) -> np.ndarray:
    out = []
    for r in recs:
        if rank is not None and r.rank != rank:
            continue
        for (t0, n0), (t1, n1) in zip(zip(r.times, r.counts), zip(r.times[1:], r.counts[1:])):
            if t0 >= tA and t1 <= tB and n1 > n0:
                out += [(t1 - t0) / (n1 - n0)] * (n1 - n0)
    return np.asarray(out, dtype=np.float64)


def _delta(mA, mB, key: str) -> float | None:
    if mA is None or mB is None or key not in mA or key not in mB:
        return None
    return mB[key] - mA[key]


def _per_token(recs, tA: float, tB: float) -> float | None:
    n = [r.generated_at(tB) - r.generated_at(tA) for r in recs]
    return (tB - tA) / float(np.median(n)) if n and np.median(n) > 0 else None


def _measure(phase: Phase, recs, tA, tB, mA, mB, check_disturbed: bool = True) -> PhaseResult:
    G = len(phase.per_rank)
    gaps = _gaps(recs, tA, tB)
    if len(gaps) < MIN_GAPS:
        raise PhaseFailed(
            f"only {len(gaps)} token gaps inside the measuring window ({tB - tA:.2f} s): the phase's "
            "share of the time budget is too short for this load"
        )
    median = float(np.median(gaps))
    steps_in_window = float(np.median([r.generated_at(tB) - r.generated_at(tA) for r in recs]))
    mean_step = (tB - tA) / max(steps_in_window, 1.0)
    if check_disturbed and abs(median / mean_step - 1) > DISTURBED:
        raise PhaseDisturbed(
            f"disturbed: median token gap {median * 1e3:.3g} ms but {steps_in_window:.0f} tokens "
            f"in {tB - tA:.2f} s ({mean_step * 1e3:.3g} ms each): a stall of the engine, the "
            "network or this client"
        )
    tm = (tA + tB) / 2
    loads = [0.0] * G
    for r in recs:
        loads[r.rank] += r.prompt + r.generated_at(tm)
    per_rank, window_rank = [], []
    for g in range(G):
        gg = _gaps(recs, tA, tB, g)
        per_rank.append(float(np.median(gg)) if len(gg) else None)
        window_rank.append(_per_token([r for r in recs if r.rank == g], tA, tB))
    itl, steps, batch, warnings = [], [], [], []
    preempt = 0.0
    for g in range(G):
        a, b = (mA[g] if mA else None), (mB[g] if mB else None)
        d_sum, d_cnt = _delta(a, b, "itl_sum"), _delta(a, b, "itl_count")
        itl.append(d_sum / d_cnt if d_sum is not None and d_cnt else None)
        d_it, d_its = _delta(a, b, "iter_count"), _delta(a, b, "iter_sum")
        steps.append((tB - tA) / d_it if d_it else None)
        batch.append(d_its / d_it if d_it and d_its is not None else None)
        preempt += _delta(a, b, "preemptions") or 0.0
        sent = phase.per_rank[g][1]
        if batch[-1] is not None and abs(batch[-1] - sent) > 0.5:
            warnings.append(
                f"rank {g} ran {batch[-1]:.1f} tokens per step but calibrate keeps {sent} streams "
                "there: other traffic on the deployment, or prefills inside the window"
            )
    known = [x for x in window_rank if x]
    if len(known) > 1 and max(known) > (1 + BARRIER_SPREAD) * min(known):
        warnings.append(
            "ranks do not keep one pace (per-rank time per token "
            + ", ".join(f"{x * 1e3:.1f}" for x in known)
            + " ms): no step barrier between them? "
            "The linear_max model assumes one"
        )
    if preempt > 0:
        warnings.append(
            f"{preempt:.0f} preemptions in the window: the KV cache is too small for this load, so "
            "the loads are not what was sent"
        )
    return PhaseResult(
        phase=phase,
        loads=loads,
        stream_s=median,
        window_s_per_token=mean_step,
        window_rank_s=window_rank,
        stream_rank_s=per_rank,
        itl_s=itl,
        steps_s=steps,
        batch=batch,
        gaps=int(len(gaps)),
        window_s=tB - tA,
        preemptions=preempt,
        warnings=warnings,
    )


ProgressFn = Callable[[int, int, str], None]


async def drive(cfg: CalibrateConfig, progress: ProgressFn | None = None) -> DriveRecord:
    """Run every phase of the plan within the time budget (cancelling closes every open stream)."""
    rng = random.Random(cfg.seed)
    started = time.time()
    t0 = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s, sock_connect=10)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
        dep = Deployment(cfg, session)
        await dep.connect(rng)
        mt = max_tokens_for(cfg)
        mml = dep.tokenizer.max_model_len
        if mml is not None and cfg.prefill_lens and max(cfg.prefill_lens) >= mml:
            raise EngineError(f"the engine's context is {mml} tokens: lower --prefill-lens below it")
        if mml is not None and max(cfg.prompt_lens) + mt > mml:
            raise EngineError(
                f"the engine's context is {mml} tokens: prompts of {max(cfg.prompt_lens)} plus "
                f"{mt} output tokens do not fit; lower --prompt-lens (at most {mml - mt}) or "
                "--measure-steps"
            )
        phases = plan(cfg, cfg.ranks)
        if cfg.prefill_lens:  # the prefill phases interleave with the decode ones (slow drifts hit both alike)
            phases = phases + plan_prefill(cfg, cfg.ranks, len(phases))
            random.Random(cfg.seed + 2).shuffle(phases)
        deadline = t0 + cfg.time_budget_s
        results, failed, skipped, warnings = [], [], [], []
        if not dep.has_metrics and cfg.source in ("itl", "steps"):
            warnings.append(f"the engine exposes no usable /metrics: --source {cfg.source} falls back to stream")
        if dep.tokenizer.url is None:
            warnings.append(
                "the engine has no /tokenize: prompt lengths are the streams' reported usage, else one token per word"
            )
        for i, ph in enumerate(phases):
            left = deadline - time.perf_counter()
            if progress:
                progress(i, len(phases), ph.label)
            if left <= 0.5:
                skipped = phases[i:]
                break
            for attempt in range(1 + cfg.retries):
                try:
                    run = run_prefill_phase if ph.prefill is not None else run_phase
                    results.append(await run(dep, ph, left / (len(phases) - i), rng))
                    err = None
                except PhaseFailed as exc:
                    err = exc
                if not await dep.drain():
                    warnings.append(f"after phase '{ph.label}' the ranks still ran requests {cfg.settle_s:g} s later")
                left = deadline - time.perf_counter()
                if not isinstance(err, PhaseDisturbed) or left <= 0.5:
                    break
                warnings.append(f"phase '{ph.label}' measured again (attempt {attempt + 2}): {err}")
            if err is not None:
                failed.append((ph, str(err)))
        if progress:
            progress(len(phases) - len(skipped), len(phases), "done")
    return DriveRecord(
        results=results,
        failed=failed,
        skipped=skipped,
        ranks=cfg.ranks,
        model=dep.model,
        targets=list(dict.fromkeys(dep.bases)),
        engine_version=dep.version,
        metrics=dep.has_metrics,
        tokenize=dep.tokenizer.url is not None,
        max_model_len=mml,
        started=started,
        duration_s=time.perf_counter() - t0,
        max_tokens=mt,
        warnings=warnings,
    )
