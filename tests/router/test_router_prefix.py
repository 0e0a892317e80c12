"""A cache-aware policy behind the router sees the prefix index: a session's turns follow the rank that holds
its prefix, and the ranks' own prefix-cache counters show the hits."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from dpbalance.engine.config import EngineConfig
from dpbalance.router.ranks import StartupError
from tests.router.stacks import post, routed

SESSIONS = [
    " ".join(f"s{k}w{i}" for i in range(96)) for k in range(3)
]  # 96 words: six 16-token blocks each (an odd count: round-robin would split them)


@pytest.mark.parametrize("policy", ["prefix_affinity", "brp"])
def test_a_cache_aware_policy_through_the_router_keeps_each_session_on_one_rank(policy):
    async def main():
        sim_kw = {"engine": EngineConfig(prefill=True, prefix_cache=True), "time_scale": 50.0}
        async with routed(sims=2, sim_kw=sim_kw, policy=policy, tokenize="rank") as st:
            assert st.router.dispatcher.prefix is not None  # auto: on for every policy that reads the view
            ranks: dict[int, set[int]] = {}
            async with aiohttp.ClientSession() as s:
                for turn in range(3):
                    for k, text in enumerate(SESSIONS):
                        before = [rk.prompt_tokens for rk in st.group.ranks]
                        body = {"model": "dpbalance-sim", "prompt": text + f" turn{turn}", "max_tokens": 2}
                        status, _ = await post(s, st.url + "/v1/completions", body)
                        assert status == 200
                        served = [g for g, rk in enumerate(st.group.ranks) if rk.prompt_tokens > before[g]]
                        ranks.setdefault(k, set()).update(served)
                await st.settle()
                hits = [st.group.engine.hit_tokens[g] for g in range(2)]
            assert st.router.dispatcher.prefix.pending_prefill.tolist() == [0, 0]
            return ranks, hits

    ranks, hits = asyncio.run(main())
    assert all(len(r) == 1 for r in ranks.values()), ranks  # every later turn went where its prefix was
    # each session's second and third turns hit its six blocks (96 words + "turnN": the last token recomputed)
    assert sum(hits) == 3 * 2 * 96


def test_the_index_stays_off_for_policies_that_do_not_read_it():
    async def main():
        async with routed(sims=1, policy="br0") as st:
            return st.router.dispatcher.prefix

    assert asyncio.run(main()) is None


def test_the_dashboard_state_shows_the_index_hit_rates():
    async def main():
        sim_kw = {"engine": EngineConfig(prefix_cache=True), "time_scale": 50.0}
        async with routed(sims=2, sim_kw=sim_kw, policy="prefix_affinity", tokenize="rank") as st:
            async with aiohttp.ClientSession() as s:
                for _ in range(2):
                    body = {"model": "dpbalance-sim", "prompt": SESSIONS[0], "max_tokens": 2}
                    assert (await post(s, st.url + "/v1/completions", body))[0] == 200
                await st.settle()
            d = st.router.dispatcher
            st.router.history.sample(
                d.state, d.in_rotation, st.router.breaker.state, 0, {}, d.metrics.tokens, "p", d.prefix
            )
            return st.router.history.state()["now"]

    now = asyncio.run(main())
    # one rank got both: the second found 5 of its 6 blocks (the last holds the last token): 80 of 192 tokens
    assert sorted(now["prefix_hit_rate"]) == [0.0, 80 / 192] and now["pending_prefill"] == [0, 0]


def test_the_index_takes_the_ranks_block_size_and_kv_size_from_their_metrics():
    async def main():
        kw = {"engine": EngineConfig(prefix_cache=True, block_size=32, kv_capacity=40_000)}
        async with routed(sims=2, sim_kw=kw, policy="brp", tokenize="rank") as st:
            idx = st.router.dispatcher.prefix
            return st.router.block_size, idx.block_size, idx.kv_free.tolist()

    bs, idx_bs, kv_free = asyncio.run(main())
    # engine-sim says what vLLM says: block_size and num_gpu_blocks in vllm:cache_config_info
    assert bs == idx_bs == 32 and kv_free == [40_000 - 40_000 % 32] * 2


def test_explicit_prefix_settings_win_over_the_ranks():
    async def main():
        kw = {"engine": EngineConfig(prefix_cache=True, block_size=32)}
        async with routed(sims=1, sim_kw=kw, policy="brp", prefix_block=64, prefix_capacity=6400) as st:
            return st.router.dispatcher.prefix.block_size, st.router.dispatcher.prefix.kv_free.tolist()

    assert asyncio.run(main()) == (64, [6400])


def test_serve_step_time_gives_the_policy_the_ranks_prices(tmp_path):
    async def main(spec):
        async with routed(sims=1, policy="brp", step_time=spec) as st:
            return st.router.policy.costs

    c = asyncio.run(main("linear_max:C=0.02,t_tok=4e-7,prefill_tok=2e-4,prefill_attn=6e-8"))
    assert (c.t_tok, c.prefill_tok, c.prefill_attn) == (4e-7, 2e-4, 6e-8)
    with pytest.raises(StartupError, match="--step-time .*missing.yaml"):
        asyncio.run(main(str(tmp_path / "missing.yaml")))
    with pytest.raises(StartupError, match="--step-time linear_nope"):
        asyncio.run(main("linear_nope:C=1"))
