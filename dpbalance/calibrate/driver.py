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

from .config import CalibrateConfig
from .deployment import Deployment
from .engine_api import EngineError, StreamRecord, make_prompt
from .prefill_phase import plan_prefill, run_prefill_phase
from .window import Phase, PhaseDisturbed, PhaseFailed, PhaseResult, measure_window, wait_streams


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


def max_tokens_for(cfg: CalibrateConfig) -> int:
    """Long enough that no stream finishes before the window closes, even if its prefill ran many steps earlier."""
    return 2 * (cfg.warmup_tokens + cfg.measure_steps) + 64


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
        await wait_streams(
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
        await wait_streams(
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
    return measure_window(phase, recs, tA, tB, mA, mB, check_disturbed=cfg.source == "stream")


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
