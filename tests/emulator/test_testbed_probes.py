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
