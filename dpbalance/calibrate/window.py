"""One measurement window of a calibration phase: what a phase is, what it measured, and the arithmetic that
turns the streams' token times and the ranks' ``/metrics`` into step-time estimates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .engine_api import StreamRecord

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


#: the prefill rank of a phase in which every rank prefills at once
EVERY_RANK = -1


@dataclass(frozen=True)
class Phase:
    """Streams per rank: ``per_rank[g] = (prompt_len, concurrency)``."""

    index: int
    per_rank: tuple[tuple[int, int], ...]
    #: prefill phase: (rank, prompt length, hit fraction); rank ``EVERY_RANK``: every rank prefills at once
    prefill: tuple[int, int, float] | None = None

    @property
    def streams(self) -> list[int]:
        """Concurrent streams (running sequences) per rank."""
        return [c for _, c in self.per_rank]

    @property
    def label(self) -> str:
        if self.prefill is not None:
            g, p, h = self.prefill
            c, d = self.per_rank[0][1], self.per_rank[0][0]
            where = "every rank" if g == EVERY_RANK else f"rank {g}"
            return f"prefill {p} tok ({h:.0%} cached) on {where}, {c}×{d} decoding/rank"
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
    prefill_mean: float = 0.0  # prompt tokens computed per step, averaged over the ranks
    prefill_reqs: float = 0.0  # requests (prompts) the prefill rank admitted per step
    seqs: list[float] | None = None
    prefill_info: dict | None = None


def r3(x: float) -> float:
    return float(f"{x:.6g}")


async def wait_streams(recs, done: Callable[[], bool], deadline: float, fail_msg: Callable[[], str] | None) -> None:
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


def delta(mA, mB, key: str) -> float | None:
    if mA is None or mB is None or key not in mA or key not in mB:
        return None
    return mB[key] - mA[key]


def _per_token(recs, tA: float, tB: float) -> float | None:
    n = [r.generated_at(tB) - r.generated_at(tA) for r in recs]
    return (tB - tA) / float(np.median(n)) if n and np.median(n) > 0 else None


def measure_window(phase: Phase, recs, tA, tB, mA, mB, check_disturbed: bool = True) -> PhaseResult:
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
        d_sum, d_cnt = delta(a, b, "itl_sum"), delta(a, b, "itl_count")
        itl.append(d_sum / d_cnt if d_sum is not None and d_cnt else None)
        d_it, d_its = delta(a, b, "iter_count"), delta(a, b, "iter_sum")
        steps.append((tB - tA) / d_it if d_it else None)
        batch.append(d_its / d_it if d_it and d_its is not None else None)
        preempt += delta(a, b, "preemptions") or 0.0
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
