"""Properties of the engine model run through the simulator: conservation (every request ends once, nothing is
left held), and the equivalences that make the decode-only model a special case of it."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpbalance.core.workload import Blocks, Workload
from dpbalance.engine.config import EngineConfig
from dpbalance.sim import Loop, SimConfig
from dpbalance.sim.run import build_policy

POLICIES = ["round_robin", "jsq_tokens", "br0"]


@st.composite
def workloads(draw):
    n = draw(st.integers(3, 40))
    prompt = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    output = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    gaps = draw(st.lists(st.floats(0, 0.5), min_size=n, max_size=n))
    sessions = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    # requests of a session share a prefix of block hashes (chained: a block's hash names its whole prefix)
    lists = []
    for p in prompt:
        s = int(rng.integers(sessions))
        shared = int(rng.integers(0, p // 8 + 1))
        lists.append(
            [s * 1000 + j for j in range(shared)] + [int(h) for h in rng.integers(1 << 40, size=p // 8 - shared)]
        )
    return Workload.from_arrays(np.cumsum(gaps), prompt, output, blocks=Blocks.from_lists(lists, 8))


def run(w: Workload, policy: str, **kw):
    cfg = SimConfig(**{"workers": 3, "slots": 4, "max_idle_dispatches": 500, **kw})
    loop = Loop(w, build_policy(policy, cfg), cfg, None, None)
    return loop, loop.run()


ENGINES = st.fixed_dictionaries(
    {
        "prefill": st.booleans(),
        "prefix_cache": st.booleans(),
        "kv_capacity": st.sampled_from(["unlimited", 90, 200]),
        "max_batched_tokens": st.sampled_from([4, 16, 2048]),
        "long_prefill_threshold": st.sampled_from([0, 5]),
        "prefill_interval": st.sampled_from([1, 3]),
        "max_num_seqs": st.sampled_from([None, 2]),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads(), eng=ENGINES, policy=st.sampled_from(POLICIES))
def test_every_request_ends_once_and_nothing_stays_held(w, eng, policy):
    if not eng["prefill"]:
        eng.update(prefill_interval=1, max_num_seqs=None)
    if eng["max_num_seqs"] and eng["max_batched_tokens"] < eng["max_num_seqs"]:
        eng["max_num_seqs"] = None
    if not (eng["prefill"] or eng["prefix_cache"] or eng["kv_capacity"] != "unlimited"):
        eng["prefix_cache"] = True  # all off is the decode-only model: no engine to inspect
    loop, rec = run(w, policy, engine=EngineConfig(**eng))
    e = loop.engine
    admit, first, finish = rec.admit_time(), rec.first_token_time(), rec.finish_time()
    assert (rec.admit_step >= 0).all()
    assert (first >= admit - 1e-12).all() and (finish >= first - 1e-12).all()
    assert not e.reqs and not any(e.waiting) and not any(e.prefilling)
    assert e.dec_count.tolist() == [0] * 3 and e.dec_load.tolist() == [0] * 3
    assert e.pending == [0] * 3 and e.kv_private == [0] * 3
    if e.cache is not None:  # every block a request referenced was released
        assert all(all(n == 0 for n in refs.values()) for refs in e.cache.refs)
    # each prompt is computed at least once, less what the caches served, plus what preemption recomputed
    if eng["prefill"]:
        assert e.prefilled.sum() >= w.prompt.sum() - sum(e.hit_tokens)
        if not e.preemptions.any():
            assert e.prefilled.sum() == w.prompt.sum() - sum(e.hit_tokens)
    assert sum(e.prompt_tokens) == w.prompt.sum()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads(), policy=st.sampled_from(POLICIES), kv=st.sampled_from(["unlimited", 200]))
def test_a_rank_never_runs_more_than_max_num_seqs(w, policy, kv):
    """The router may send 4 per rank; the engine runs at most 2 of them (prefilling or decoding) at any step,
    the rest wait in its queue, and every request still ends."""
    cfg = SimConfig(
        workers=3,
        slots=4,
        max_idle_dispatches=500,
        engine=EngineConfig(prefill=True, max_num_seqs=2, kv_capacity=kv, max_batched_tokens=16),
    )
    loop = Loop(w, build_policy(policy, cfg), cfg, None, None)
    e = loop.engine
    step, most = e.step, []

    def counted():
        out = step()
        most.append(max(int(e.dec_count[g]) + len(e.prefilling[g]) for g in range(3)))
        return out

    e.step = counted
    rec = loop.run()
    assert max(most) <= 2
    assert (rec.finish_time() >= rec.first_token_time()).all() and not e.reqs


def test_requests_preempted_in_the_step_they_start_still_finish():
    """Prompts cost nothing and a rank's KV holds 90 tokens: a burst of one-token requests is admitted with a
    60-token prompt among them, and all three on rank 0 are preempted in the very step they start, before the
    simulator has scheduled their finish. They restart, sample their one token and end (once, each), instead of
    decoding on past their output until a recomputation no longer fits (found by the property test above)."""
    prompt = [1] * 24 + [31, 1, 1, 60] + [1] * 6
    arrival = [0.0] * 10 + [0.5 * k for k in range(1, 15)] + [7.5] * 10
    w = Workload.from_arrays(np.array(arrival), prompt, [1] * len(prompt))
    loop, rec = run(w, "round_robin", engine=EngineConfig(prefill=False, kv_capacity=90, max_batched_tokens=4))
    assert int(loop.engine.preemptions.sum()) >= 3
    assert (rec.finish_time() >= rec.first_token_time()).all() and loop.done == len(prompt)
    assert not loop.engine.reqs and loop.n_ending.min() >= 0


@settings(max_examples=30, deadline=None)
@given(w=workloads(), policy=st.sampled_from(POLICIES))
def test_a_prefix_cache_alone_changes_no_step_time(w, policy):
    """Caching without prefill modelling counts hits but costs nothing: the decode-only steps exactly."""
    _, base = run(w, policy)
    _, cached = run(w, policy, engine=EngineConfig(prefix_cache=True))
    np.testing.assert_array_equal(base.steps["tau"], cached.steps["tau"])
    np.testing.assert_array_equal(base.finish_time(), cached.finish_time())
    np.testing.assert_array_equal(base.first_token_time(), cached.first_token_time())


@settings(max_examples=30, deadline=None)
@given(w=workloads(), policy=st.sampled_from(POLICIES))
def test_free_prefill_with_an_ample_budget_schedules_as_the_decode_only_model(w, policy):
    """A prompt that costs nothing and fits the budget is computed in its admission step and samples its first
    token there, as in the decode-only model: the same steps, so (with a constant step time) the same times. The
    step times themselves differ by design: the decode-only model charges a new prompt as decode load in its
    first step, the engine model as prefill work."""
    free = "linear_max:C=0.01,t_tok=0,prefill_tok=0,prefill_attn=0"
    _, base = run(w, policy, step_time=free)
    _, pre = run(w, policy, step_time=free, engine=EngineConfig(prefill=True, max_batched_tokens=10**6))
    assert len(base.steps["tau"]) == len(pre.steps["tau"])
    np.testing.assert_array_equal(base.admit_step, pre.admit_step)
    np.testing.assert_allclose(base.first_token_time(), pre.first_token_time(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(base.finish_time(), pre.finish_time(), rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(w=workloads(), policy=st.sampled_from(POLICIES), cache=st.booleans())
def test_a_capacity_nothing_fills_is_unlimited(w, policy, cache):
    eng = EngineConfig(prefill=True, prefix_cache=cache, max_batched_tokens=16)
    _, unl = run(w, policy, engine=eng)
    _, big = run(w, policy, engine=dataclasses.replace(eng, kv_capacity=10**9))
    np.testing.assert_allclose(unl.steps["tau"], big.steps["tau"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(unl.finish_time(), big.finish_time(), rtol=0, atol=1e-9)


def test_prefill_costs_time_and_delays_first_tokens():
    rng = np.random.default_rng(3)
    w = Workload.from_arrays(np.sort(rng.uniform(0, 5, 60)), rng.integers(100, 800, 60), rng.integers(5, 50, 60))
    _, base = run(w, "jsq_tokens")
    _, pre = run(w, "jsq_tokens", engine=EngineConfig(prefill=True))
    assert pre.steps["tau"].sum() > base.steps["tau"].sum()
    assert np.median(pre.first_token_time() - pre.admit_time()) > np.median(base.first_token_time() - base.admit_time())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    w=workloads(),
    policy=st.sampled_from(["br0", "jsq_tokens", "brp", "llmd_prefix", "dynamo_kv", "preble"]),
    budget=st.sampled_from([4, 16, 2048]),
)
def test_estimating_cached_prefixes_only_once_a_policy_reads_them_changes_nothing(w, policy, budget):
    """The engine estimates a waiting request's cached prefix on arrival only once something has read the ranks'
    pending prefill: the same run with estimates from the start gives the same steps and times, whether the policy
    weighs pending prefill (it reads it at its first dispatch, before anything arrived) or not (then the engine
    never estimates)."""
    eng = EngineConfig(prefill=True, prefix_cache=True, max_batched_tokens=budget)
    cfg = SimConfig(workers=3, slots=4, max_idle_dispatches=500, engine=eng)
    lazy = Loop(w, build_policy(policy, cfg), cfg, None, None)
    a = lazy.run()
    eager = Loop(w, build_policy(policy, cfg), cfg, None, None)
    eager.engine.start_estimates()
    b = eager.run()
    np.testing.assert_array_equal(a.steps["tau"], b.steps["tau"])
    np.testing.assert_array_equal(a.admit_step, b.admit_step)
    np.testing.assert_array_equal(a.first_token_time(), b.first_token_time())
    assert lazy.engine.estimate == (policy not in ("br0", "jsq_tokens"))
