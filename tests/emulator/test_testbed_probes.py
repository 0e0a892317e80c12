"""The testbed probes in benchmarks/ (lone prompts, churn) against engine-sim, whose steps follow a known
step-time model in real time: what they measure is what that model says."""

from __future__ import annotations

import asyncio
import re

import pytest

from benchmarks import real_vllm_churn as churn
from benchmarks import real_vllm_lone_prompts as lone
from dpbalance.emulator import start_group
from dpbalance.engine.config import EngineConfig

# engine-sim's steps: 10 ms plus 50 µs per prompt token (2,048-token chunks; attention not priced, so the
# figures are worked by hand), large next to an event loop's jitter
SPEC = "linear_max:C=0.01,t_tok=1e-7,prefill_tok=5e-5,prefill_attn=0"


async def _with_sim(run, ranks: int = 2):
    group, urls, runners = await start_group(
        ranks, slots=16, time_scale=1.0, step_time=SPEC, engine=EngineConfig(prefill=True), model="tiny-moe"
    )
    try:
        return await run(urls)
    finally:
        await group.stop()
        for r in runners:
            await r.cleanup()


def _table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if re.match(r"\| [0-9]", line)]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def test_lone_prompts_match_the_model_engine_sim_runs(capsys):
    args = lone.parse(["--lengths", "512", "2048", "3000", "--repeat", "2", "--pause", "0", "--step-time", SPEC])

    async def run(urls):
        args.ranks = urls
        await lone.main(args)

    asyncio.run(_with_sim(run))
    rows = _table(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["512", "2,048", "3,000"]
    for row in rows:  # the model's own prefill and the measurement agree (3,000 tokens: two chunks, two steps)
        assert 0.95 <= float(row[4]) <= 1.3, rows
    # chunking: 3,000 tokens is two steps, each with the 10 ms constant
    assert float(rows[2][3]) == pytest.approx(2 * 10 + 3000 * 0.05, abs=0.5)  # (rounded to whole ms)


def test_lone_prompts_tell_a_model_that_underprices_prefill():
    # the same measurement against a model with half the per-token cost reads far above 1
    cheap = lone.modelled("linear_max:C=0.01,t_tok=1e-7,prefill_tok=2.5e-5,prefill_attn=0", 2, 0, 2048, 2048)
    right = lone.modelled(SPEC, 2, 0, 2048, 2048)
    assert right == pytest.approx(0.01 + 2048 * 5e-5, rel=1e-6) and right / cheap > 1.7


def test_churn_reads_the_engines_step_and_prints_every_rate(capsys):
    args = churn.parse(["--rates", "20", "--out", "2", "--window", "1.5", "--repeat", "1", "--long", "400"])

    async def run(urls):
        args.ranks = urls
        await churn.main(args)

    asyncio.run(_with_sim(run))
    rows = _table(capsys.readouterr().out)
    assert [(r[0], r[1]) for r in rows] == [("2", "0"), ("2", "20")]
    # no arrivals: the long streams' step is engine-sim's 10 ms (two sequences, tiny loads)
    assert 9.5 <= float(rows[0][2]) <= 12.5, rows
    # 20 short requests a second, each with a 16-token prefill (0.8 ms): the step grows, by less than the
    # per-request costs a real API server adds (engine-sim has none)
    assert float(rows[1][2]) >= float(rows[0][2]) - 0.5, rows
    assert float(rows[1][5]) < 15, rows


def test_the_benchmarks_read_how_full_the_ranks_ran(monkeypatch):
    # 40 requests at once on rank 0 of two 16-slot engine-sim ranks: the gauge sampler sees rank 0 full with the
    # rest queued inside it and rank 1 idle, and the ranks' step histogram gives the tokens per step
    import numpy as np

    from benchmarks import real_vllm_fidelity as fid
    from dpbalance.core import Workload

    n, out = 40, 30
    w = Workload.from_arrays(np.zeros(n), np.full(n, 64), np.full(n, out))
    prompts = [[17 + (i * 64 + j) % 900 for j in range(64)] for i in range(n)]

    async def run(urls):
        before = await asyncio.to_thread(fid.engine_counters, urls)  # (the servers run on this loop)
        gauges = fid.GaugeSampler(urls, interval_s=0.02)
        outs = await fid.send(urls[0], "tiny-moe", w, prompts, [None] * n)
        busy = await asyncio.to_thread(gauges.stop)
        after = await asyncio.to_thread(fid.engine_counters, urls)
        return outs, busy, fid.engine_side(before, after, 1.0)

    outs, busy, eng = asyncio.run(_with_sim(run))
    assert all(o.status == "ok" for o in outs)
    assert busy["gauge_samples"] >= 10
    run0, run1 = busy["mean_running"]
    wait0, wait1 = busy["mean_waiting"]
    assert 12 <= run0 <= 16 and run1 == 0 and wait1 == 0, busy
    assert wait0 > 2, busy  # 24 requests queue behind the first 16 for a while
    # every output token and the 64-token prompts were scheduled on rank 0, none on rank 1
    steps0, steps1 = eng["steps_per_rank"]
    assert steps1 == 0 and eng["tokens_per_step"][0] * steps0 == pytest.approx(n * (64 + out - 1), rel=0.02), eng
