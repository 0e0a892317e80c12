"""Prefill phases: decode streams on every rank while one rank prefills prompts of a known length (part of each
served by its prefix cache), so the fit can tell what a step's prefill work costs."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

from .config import CalibrateConfig
from .deployment import Deployment
from .engine_api import StreamRecord
from .window import EVERY_RANK, POLL_S, Phase, PhaseFailed, PhaseResult, delta, r3, wait_streams

#: why a prefill phase fails when a decode stream ends before its prompts are answered
STREAM_ENDED = (
    "a decode stream ended before the phase's prompts were answered: either the rank had no free sequence slot "
    "for them (a prefill phase runs one prompt next to the grid's largest --concurrency on a rank, so keep that "
    "below the engine's --max-num-seqs) or the streams ran out of tokens (raise --measure-steps)"
)

#: the token budget of one engine step assumed when counting the steps a prompt's chunks take (vLLM's default)
STEP_BUDGET = 2048


def plan_prefill(cfg: CalibrateConfig, ranks: int, start: int) -> list[Phase]:
    """One phase per (prefill prompt length, hit fraction, decode concurrency of the grid's extremes); the
    prefill rank rotates. With ``prefill_together`` (and more than one rank) each also runs with every rank
    prefilling at once."""
    rows = []
    conc = sorted({min(cfg.concurrency), max(cfg.concurrency)})
    for i, (p, h, c) in enumerate(itertools.product(cfg.prefill_lens, cfg.prefill_hits, conc)):
        level = tuple([(min(cfg.prompt_lens), c)] * ranks)
        rows.append((level, (i % ranks, p, h)))
        if cfg.prefill_together and ranks > 1:
            rows.append((level, (EVERY_RANK, p, h)))
    random.Random(cfg.seed + 1).shuffle(rows)
    return [Phase(start + i, r, pf) for i, (r, pf) in enumerate(rows)]


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
    pf_ranks = prefill_ranks(phase)
    H = cached_prefix(cfg, P, frac)
    mml = dep.tokenizer.max_model_len
    # the decode streams must outlast the window (every prompt's prefill steps and the requests between them)
    mt = min(4000, (mml or 10**9) - max(p for p, _ in phase.per_rank) - 8)
    t_start = time.perf_counter()
    prefix = _ids(rng, H)
    for g in pf_ranks if H else ():  # the shared prefix enters each prefill rank's cache before the window
        primer = StreamRecord(g, H + cfg.block_size, 1)
        await dep.clients[g].stream(dep.session, prefix + _ids(rng, cfg.block_size), primer)
        if primer.error:
            raise PhaseFailed(primer.error)
    specs = [(g, p) for g, (p, c) in enumerate(phase.per_rank) for _ in range(c)]
    prompts = [_ids(rng, p) for _, p in specs]
    recs = [StreamRecord(g, p, mt) for g, p in specs]
    tasks = [asyncio.create_task(dep.clients[r.rank].stream(dep.session, pr, r)) for r, pr in zip(recs, prompts)]
    try:
        await wait_streams(
            recs,
            lambda: all(r.generated >= cfg.warmup_tokens for r in recs),
            t_start + 0.5 * budget_s,
            lambda: f"the decode streams did not reach {cfg.warmup_tokens} tokens within {0.5 * budget_s:.0f} s",
        )
        tA, mA = await dep.scrape_at()
        sent = await _send_prompts(dep, recs, pf_ranks, P, prefix, rng, t_start + budget_s)
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
    return _prefill_result(dep.cfg, phase, recs, ref, H, sent, (tA, mA), (tB, mB), t_done)


def prefill_ranks(phase: Phase) -> list[int]:
    """The ranks that prefill in a prefill phase."""
    g = phase.prefill[0]
    return list(range(len(phase.per_rank))) if g == EVERY_RANK else [g]


async def _send_prompts(
    dep: Deployment,
    recs: list[StreamRecord],
    ranks: list[int],
    P: int,
    prefix: list[int],
    rng: random.Random,
    deadline: float,
) -> list[int]:
    """Send the phase's prompts to each of ``ranks``, one after another on each (each after the last one's answer;
    the ranks side by side) until ``prefill_requests`` are answered or the deadline passes; the count answered per
    rank."""
    cfg, H = dep.cfg, len(prefix)

    async def one_rank(g: int) -> int:
        sent = 0
        for _ in range(cfg.prefill_requests):
            if sent and time.perf_counter() > deadline:
                break
            one = StreamRecord(g, P, 1)
            job = asyncio.create_task(dep.clients[g].stream(dep.session, prefix + _ids(rng, P - H), one))
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
                raise PhaseFailed(err or STREAM_ENDED)
        return sent

    jobs = [asyncio.create_task(one_rank(g)) for g in ranks]
    try:
        return list(await asyncio.gather(*jobs))
    finally:
        for j in jobs:
            j.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def _prefill_result(
    cfg: CalibrateConfig,
    phase: Phase,
    recs: list[StreamRecord],
    ref: StreamRecord,
    H: int,
    sent: list[int],
    at_a,
    at_b,
    t_done: float,
) -> PhaseResult:
    """The window's step time and the prefill work per step, from one decode stream's token times and the
    prefill ranks' prefix-cache counters (``at_a``/``at_b``: scrape time and metrics at the window's ends). The
    observation's prefill work is the busiest prefill rank's; ``prefill_mean`` averages every rank's."""
    (tA, mA), (tB, mB) = at_a, at_b
    g_pf, P, _ = phase.prefill
    G = len(phase.per_rank)
    # the window in whole steps: from the end of the step running when the first prompt was sent to the end of the
    # one in which the last prompt was answered, timed by one decode stream's tokens (every rank steps together)
    i0 = next(i for i, t in enumerate(ref.times) if t >= tA)
    i1 = next(i for i, t in enumerate(ref.times) if t >= t_done)
    steps = float(ref.counts[i1] - ref.counts[i0])
    wA, wB = ref.times[i0], ref.times[i1]
    if steps < 3:
        raise PhaseFailed(f"only {steps:.0f} decode steps in the prefill window")
    warnings: list[str] = []
    seqs = [float(c) for _, c in phase.per_rank]
    work, hits = [], []  # per prefill rank: (tokens computed, attention pairs, prompts), measured hit per prompt
    for g, n in zip(prefill_ranks(phase), sent):
        a, b = (mA[g] if mA else None), (mB[g] if mB else None)
        d_hits, d_q = delta(a, b, "prefix_hits"), delta(a, b, "prefix_queries")
        hit = float(H)
        if d_hits is not None and d_q and n:
            hit = d_hits / n
            hits.append(hit)
            if abs(hit - H) > cfg.block_size:
                warnings.append(
                    f"rank {g}'s prefix cache served {hit:.0f} tokens per prompt, {H} were expected: "
                    "the measured hits are used"
                )
        new = P - hit
        work.append((n * new, n * new * (P + hit + 1) / 2, n))
        seqs[g] += n * -(-int(round(new)) // max(STEP_BUDGET - phase.per_rank[g][1], 1)) / steps
    T, A, n_req = max(work)
    tm = (wA + wB) / 2
    loads = [0.0] * G
    for r in recs:
        loads[r.rank] += r.prompt + r.generated_at(tm)
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
            (tB - tA) / d if (d := delta(mA[g] if mA else None, mB[g] if mB else None, "iter_count")) else None
            for g in range(G)
        ],
        batch=[None] * G,
        gaps=int(steps),
        window_s=wB - wA,
        warnings=warnings,
        prefill_tok=T / steps,
        prefill_attn=A / steps,
        prefill_mean=sum(w[0] for w in work) / G / steps,
        prefill_reqs=n_req / steps,
        seqs=seqs,
        prefill_info={
            "rank": "every" if g_pf == EVERY_RANK else g_pf,
            "prompt": P,
            "cached_expected": H,
            "cached_measured": r3(sum(hits) / len(hits)) if hits else None,
            "prompts": sum(sent),
            "steps": steps,
        },
    )
