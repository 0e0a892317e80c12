"""The prefix-aware policies (issue 18): a hand-worked decision per policy on a snapshot with a hand-made prefix
view, valid assignments on random snapshots with and without a view, brp's reduction to br0, and brp's decisions
against its rule written plainly."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from dpbalance.core.snapshot import Snapshot
from dpbalance.policies import PolicyContext, make_policy
from tests.helpers import random_snapshot, snapshot_of

PREFIX_POLICIES = [
    "brp",
    "prefix_affinity",
    "sglang_cache_aware",
    "vllm_router_cache_aware",
    "dynamo_kv",
    "llmd_prefix",
    "preble",
    "session_hash",
    "vllm_dp",
]


@dataclass
class View:
    """A hand-made PrefixView: ``hits[request id] = [G] cached tokens``."""

    hits: dict
    G: int
    pending: np.ndarray = None
    kv: np.ndarray = None
    block_size: int = 100
    prefill: bool = True
    first: dict = field(default_factory=dict)

    @property
    def pending_prefill(self):
        return np.zeros(self.G) if self.pending is None else self.pending

    @property
    def kv_free(self):
        return np.full(self.G, np.inf) if self.kv is None else self.kv

    def cached(self, ids):
        return np.array([self.hits.get(int(i), [0] * self.G) for i in ids], dtype=np.int64).reshape(len(ids), self.G)

    def first_block(self, ids):
        return np.array([self.first.get(int(i), -1) for i in ids], dtype=np.int64)


def with_view(snap: Snapshot, view) -> Snapshot:
    return Snapshot(snap._state, snap._pool, snap.now, prefix=view)


def decide(spec, snap, G=3, B=4):
    return list(make_policy(spec, PolicyContext(workers=G, slots=B)).dispatch(snap))


# ---------------------------------------------------------------- golden cases, worked by hand
# three workers: loads 3000, 1000, 2000 tokens (one request each); one waiting request (id 1) of 1000 tokens,
# of which worker 0 caches 900 and worker 2 caches 400
def golden(pending=None, kv=None):
    snap = snapshot_of([[3000], [1000], [2000]], pool=[(1, 1000)], slots=4)
    return with_view(snap, View({1: [900, 0, 400]}, 3, pending, kv))


def test_prefix_affinity_takes_the_longest_cached_prefix():
    assert decide("prefix_affinity", golden()) == [(1, 0)]


def test_prefix_affinity_without_a_view_is_the_lowest_load():
    assert decide("prefix_affinity", snapshot_of([[3000], [1000], [2000]], pool=[(1, 1000)], slots=4)) == [(1, 1)]


def test_cache_aware_thresholds():
    # counts 1, 1, 1: balanced; match rate 0.9 > 0.3 → the best match (worker 0)
    assert decide("sglang_cache_aware", golden()) == [(1, 0)]
    # match rate 0.9 ≤ 0.95 → the smallest tree: no tree yet, so the lowest index
    assert decide("sglang_cache_aware:cache_threshold=0.95", golden()) == [(1, 0)]
    # imbalanced counts (5, 0, 1: max − min 5 > 2 and 5 > 1.1·0) → shortest queue, worker 1
    snap = snapshot_of([[10] * 5, [], [10]], pool=[(1, 1000)], slots=8)
    snap = with_view(snap, View({1: [900, 0, 400]}, 3))
    got = decide("vllm_router_cache_aware:balance_abs_threshold=2", snap, B=8)
    assert got == [(1, 1)]


def test_cache_aware_smallest_tree_spreads_unmatched_requests():
    # no matches: the tree grows by each placement's unmatched tokens, so three requests go to three workers
    snap = snapshot_of([[], [], []], pool=[(1, 500), (2, 500), (3, 500)], slots=4)
    got = decide("sglang_cache_aware", with_view(snap, View({}, 3)))
    assert sorted(g for _, g in got) == [0, 1, 2]


def test_dynamo_cost_by_hand():
    # blocks of 100: prefill (pending + 1000 − cached)/100 = 1, 10, 6; decode (load + 1000)/100 = 40, 20, 30
    # logits 41, 30, 36 → worker 1
    assert decide("dynamo_kv", golden()) == [(1, 1)]
    # prefill_load_scale 5: 45, 70, 60 → worker 0
    assert decide("dynamo_kv:prefill_load_scale=5", golden()) == [(1, 0)]


def test_llmd_scores_by_hand():
    # prefix 0.9, 0, 0.4 (×3); queue: pending 0 everywhere → 1 each (×2); kv: unlimited → 1 each (×2)
    assert decide("llmd_prefix", golden()) == [(1, 0)]
    # pending 5000, 0, 0 → queue scores 0, 1, 1: 2.7 + 0 + 2, 0 + 2 + 2, 1.2 + 2 + 2 → worker 2
    assert decide("llmd_prefix", golden(pending=np.array([5000.0, 0, 0]))) == [(1, 2)]


def test_preble_exploit_and_explore():
    # cached 0.9 > 0.5 → exploit: worker 0
    assert decide("preble", golden()) == [(1, 0)]
    # threshold 0.95 → explore: pending + miss + 0.1·load = 100 + 300, 1000 + 100, 600 + 200 → worker 0 (400)
    assert decide("preble:threshold=0.95", golden()) == [(1, 0)]
    # without the cache, miss is 1000 everywhere: the lowest load, worker 1
    snap = with_view(snapshot_of([[3000], [1000], [2000]], pool=[(1, 1000)], slots=4), View({}, 3))
    assert decide("preble", snap) == [(1, 1)]


def test_session_hash_is_sticky_and_skips_full_workers():
    snap = snapshot_of([[], [], []], pool=[(1, 100), (2, 100)], slots=4)
    view = View({}, 3, first={1: 42, 2: 42})
    got = decide("session_hash", with_view(snap, view))
    assert got[0][1] == got[1][1]  # one session, one worker
    g = got[0][1]
    full = [[1] * 4 if w == g else [] for w in range(3)]
    snap2 = with_view(snapshot_of(full, pool=[(1, 100)], slots=4), view)
    assert decide("session_hash", snap2)[0][1] != g


def test_vllm_dp_is_four_waiting_plus_running():
    # running 2, 1, 1; the first request goes to worker 1 (score 1), bumping its waiting to 1 (score 5); the second
    # to worker 2
    snap = snapshot_of([[10, 10], [10], [10]], pool=[(1, 10), (2, 10)], slots=4)
    assert decide("vllm_dp", snap) == [(1, 1), (2, 2)]


def test_brp_takes_the_hit_when_it_pays_and_spreads_when_the_barrier_costs_more():
    # W = load (no pending): 3000, 1000, 2000, M = 3000. k = 1/t_tok ≈ 9.95e6 per second of prefill.
    # worker 0: miss 100 → τ = 1e-2 + 2.5e-8·100·950 = 0.0124 s → Δ ≈ 1000 + 123,300; overflow Δ (it is at M)
    # worker 1: miss 1000 → τ = 0.1 + 2.5e-8·1000·500 = 0.1125 s → Δ ≈ 1000 + 1.12e6; overflow Δ − 2000
    # cost_0 ≈ 4·124,300 = 497k; cost_1 ≈ 3·1.12e6 − 6000 ≈ 3.36e6 → the hit on worker 0 pays
    assert decide("brp", golden()) == [(1, 0)]
    # with 2 s of prefill queued on worker 0 (pending 10,000 tokens ≈ 2.25e-4 s each), its envelope is far above the
    # rest: worker 0 costs 4·Δ_0 ≈ 497k (it is M), worker 2 (miss 600, Δ ≈ 1000 + 7.5e5) stays under M → cost Δ_2
    # ≈ 751k; worker 1 ≈ 1.12e6: the hit still pays. With 20 s queued on worker 0 and prefill weighted 10×, worker 0
    # still costs λ·Δ_0 + β·Δ_0 and worker 2 only λ·Δ_2 once λ = 0 → spread to worker 2
    assert decide("brp:work_weight=0", golden(pending=np.array([1e5, 0, 0]))) in ([(1, 1)], [(1, 2)])


def test_brp_wait_weight_charges_the_prefill_queued_ahead():
    # default prices: k = 1/t_tok ≈ 9.948e6 per second. Worker 0 has 2,000 prompt tokens queued: c_pend = 1e-4 +
    # 2.5e-8·500 = 1.125e-4 s each → 0.225 s → k·0.225 ≈ 2.238e6, so W_0 = 3000 + 2.238e6 = M.
    # Δ_0 = 1000 + k·0.012375 ≈ 124,108 (at M: cost 4·Δ_0 ≈ 496k); Δ_2 = 1000 + k·0.0705 ≈ 702,334 (under M: cost
    # Δ_2); Δ_1 ≈ 1.12e6. μ = 0: the hit on worker 0 wins however long its queue.
    snap = golden(pending=np.array([2000.0, 0, 0]))
    assert decide("brp:wait_weight=0", snap) == [(1, 0)]
    # the default μ = 0.3 adds 0.3·2.24e6 ≈ 671k on worker 0: 1.17M against worker 2's 702k
    assert decide("brp", golden(pending=np.array([2000.0, 0, 0]))) == [(1, 2)]
    # μ = 1 adds the request's own wait, k·0.225 ≈ 2.24e6, on worker 0 only: worker 2 wins (702k)
    assert decide("brp:wait_weight=1", golden(pending=np.array([2000.0, 0, 0]))) == [(1, 2)]
    # μ = 0.05 adds 112k: 608k, still below worker 2's 702k
    assert decide("brp:wait_weight=0.05", golden(pending=np.array([2000.0, 0, 0]))) == [(1, 0)]


def test_brp_waits_for_a_full_rank_only_for_its_cache():
    # worker 0 has a free slot and 5,000 tokens; worker 1 is full (two slots) with 200. Request 7: 1,000 tokens.
    # No cache anywhere: Δ ≈ 1000 + k·0.1125 ≈ 1.12e6 on both; worker 1's cost over all ranks (2·(Δ − 4800) + Δ)
    # is a little below worker 0's (3·Δ), but a rank that is only less loaded is never waited for: worker 0
    snap = snapshot_of([[5000], [100, 100]], pool=[(7, 1000)], slots=2)
    assert decide("brp", with_view(snap, View({7: [0, 0]}, 2)), G=2, B=2) == [(7, 0)]
    # worker 1 caches 900 of the 1,000 tokens: its cost is far lower, and the request waits for it (bounded)
    assert decide("brp", with_view(snap, View({7: [0, 900]}, 2)), G=2, B=2) == []
    # ... unless it has waited affinity_wait_s already (here 0: never waits)
    assert decide("brp:affinity_wait_s=0", with_view(snap, View({7: [0, 900]}, 2)), G=2, B=2) == [(7, 0)]


def _held_case(now: float, cap1: int = 2) -> Snapshot:
    """Request 7 (1,000 tokens, arrived at 0) with worker 1 full and caching 900 of it, worker 0 free; at ``now``."""
    snap = snapshot_of([[5000], [100, 100]], pool=[(7, 1000)], slots=2)
    if cap1 != 2:
        snap._state.set_cap(1, cap1)
    return Snapshot(snap._state, snap._pool, now, prefix=View({7: [0, 900]}, 2))


def test_brp_bounds_the_affinity_wait_from_the_first_hold_not_from_arrival():
    # in an overloaded router every request has queued longer than the bound by the time a slot frees: the bound
    # counts from the first dispatch that held it, so a request that has waited 100 s in the pool is still held
    pol = make_policy("brp:affinity_wait_s=30", PolicyContext(workers=2, slots=2))
    assert list(pol.dispatch(_held_case(100.0))) == []
    assert list(pol.dispatch(_held_case(129.0))) == []  # held for 29 s
    assert list(pol.dispatch(_held_case(130.0))) == [(7, 0)]  # 30 s: it goes to the free rank
    assert pol._held == {}  # placed: forgotten


def test_brp_never_waits_for_a_closed_rank():
    # worker 1 caches the prompt but the router closed it (cap 0: unhealthy, drained): the request goes to worker 0
    pol = make_policy("brp", PolicyContext(workers=2, slots=2))
    assert list(pol.dispatch(_held_case(0.0, cap1=0))) == [(7, 0)]


def test_brp_remembers_holds_of_requests_outside_the_window():
    pol = make_policy("brp:affinity_wait_s=30", PolicyContext(workers=2, slots=2))
    pol._held = {5: 10.0, 6: 50.0}  # held earlier, not in this dispatch (one free slot: request 7 only)
    assert list(pol.dispatch(_held_case(70.0))) == []
    # 5 was first held 60 s ago (twice the bound: it would be placed at its next look anyway), 6 20 s ago
    assert pol._held == {6: 50.0, 7: 70.0}


def test_brp_avoids_a_rank_without_kv_room_for_its_miss():
    assert decide("brp", golden(kv=np.array([50.0, 1e9, 1e9]))) != [(1, 0)]


def test_brp_prices_are_the_deployments():
    from dpbalance.core.costs import DEFAULT_COSTS, StepCosts
    from dpbalance.engine.step_time import make_step_time

    # the default step-time model's prices are the ones brp falls back to
    assert make_step_time("linear_max", 72).costs(8) == DEFAULT_COSTS
    # a KV token priced 1 ms and a prefill token 1 ns: Δ ≈ 1000 everywhere (kτ = 1000 · 1e-7 s is nothing), so
    # cost_0 = β·1000 + λ·1000 = 4000 (it is M) against 1000 on workers 1 and 2 (no overflow): the hit does not pay,
    # and the tie goes to the lower W, worker 1
    cheap = StepCosts(t_tok=1e-3, prefill_tok=1e-9, prefill_attn=0.0)
    pol = make_policy("brp", PolicyContext(workers=3, slots=4, costs=cheap))
    assert list(pol.dispatch(golden())) == [(1, 1)]
    # the same prices set in the policy's spec win over the deployment's
    spec = "brp:t_tok=1e-3,prefill_tok=1e-9,prefill_attn=0"
    assert list(make_policy(spec, PolicyContext(workers=3, slots=4)).dispatch(golden())) == [(1, 1)]
    assert list(make_policy("brp:t_tok=0.0001", PolicyContext(workers=3, slots=4, costs=cheap)).dispatch(golden())) == [
        (1, 1)
    ]


def test_step_costs_of_a_model_without_a_load_term():
    from dpbalance.engine.step_time import make_step_time

    # linear_max_mean with a = 0: a token on the busiest of 4 ranks raises the step by b / 4
    c = make_step_time("linear_max_mean:c=0.03,a=0,b=4e-6,prefill_tok=1e-4,prefill_attn=1e-8", 32).costs(4)
    assert c.t_tok == pytest.approx(1e-6) and c.prefill_tok == 1e-4 and c.prefill_attn == 1e-8
    # no load term at all: decode balance is nearly free, priced a millionth of a prefill token
    c = make_step_time("linear_max_mean:c=0.03,a=0,b=0,prefill_tok=1e-4", 32).costs(4)
    assert c.t_tok == pytest.approx(1e-10)


# ---------------------------------------------------------------- properties
def random_view(rng, snap, G):
    ids = snap.pool_ids.tolist()
    s = dict(zip(ids, snap.pool_prompt.tolist()))
    hits = {i: (rng.integers(0, s[i] + 1, G) // 100 * 100).tolist() for i in ids}
    kv = rng.choice([np.inf, 1e4, 1e6]) * np.ones(G)
    return View(hits, G, rng.integers(0, 20000, G).astype(float), kv, first={i: int(rng.integers(0, 5)) for i in ids})


@pytest.mark.parametrize("spec", PREFIX_POLICIES)
@pytest.mark.parametrize("seed", range(12))
def test_assignments_are_valid(spec, seed):
    rng = np.random.default_rng(seed)
    G, B = int(rng.integers(1, 9)), int(rng.integers(1, 8))
    snap = random_snapshot(rng, G, B, int(rng.integers(0, 40)), full=False)
    for s in (snap, with_view(snap, random_view(rng, snap, G))):
        a = make_policy(spec, PolicyContext(workers=G, slots=B, seed=seed)).dispatch(s)
        rids, ws = a.request_id.tolist(), a.worker.tolist()
        assert len(set(rids)) == len(rids) and set(rids) <= set(snap.pool_ids.tolist())
        assert all(0 <= g < G for g in ws)
        assert (np.bincount(ws, minlength=G) <= snap.free).all()
        if spec != "brp":  # FIFO rules place every request that has a slot (brp may hold one for its rank)
            assert len(rids) == min(snap.pool_size, snap.total_free)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("br", ["", "preset=paper", "max_wait_s=off"])
def test_brp_without_prefill_decides_exactly_like_br0(seed, br):
    rng = np.random.default_rng(seed)
    G, B = int(rng.integers(1, 9)), int(rng.integers(1, 8))
    snap = random_snapshot(rng, G, B, int(rng.integers(1, 60)), full=False)
    ctx = PolicyContext(workers=G, slots=B)
    want = list(make_policy("br0" + (":" + br if br else ""), ctx).dispatch(snap))
    assert list(make_policy("brp" + (":" + br if br else ""), ctx).dispatch(snap)) == want  # no view
    view = random_view(rng, snap, G)
    view.prefill = False  # a view of ranks whose prompts cost nothing
    assert list(make_policy("brp" + (":" + br if br else ""), ctx).dispatch(with_view(snap, view))) == want
    zero = "brp:prefill_weight=0" + ("," + br if br else "")
    assert list(make_policy(zero, ctx).dispatch(with_view(snap, random_view(rng, snap, G)))) == want
    # prefill on, but nothing cached anywhere (whatever the pending prefill and KV): placement cannot change the
    # prefill work, BR-0 decides
    cold = random_view(rng, snap, G)
    cold.hits = {i: [0] * G for i in cold.hits}
    assert list(make_policy("brp" + (":" + br if br else ""), ctx).dispatch(with_view(snap, cold))) == want


def test_brp_with_prefill_and_no_shared_prefix_runs_like_br0_through_the_simulator():
    from dpbalance.core import Workload
    from dpbalance.engine.config import EngineConfig
    from dpbalance.sim import SimConfig, run_simulation

    rng = np.random.default_rng(4)
    n = 300
    w = Workload.from_arrays(np.sort(rng.uniform(0, 30, n)), rng.integers(100, 3000, n), rng.integers(1, 200, n))
    cfg = SimConfig(workers=4, slots=8, engine=EngineConfig(prefill=True, prefix_cache=True))
    a, b = run_simulation(w, "br0", cfg)[0], run_simulation(w, "brp", cfg)[0]  # no block hashes: no hits
    assert a.throughput_all_tok_s == b.throughput_all_tok_s and a.ttft_p50_s == b.ttft_p50_s


def test_brp_without_prefill_runs_like_br0_through_the_simulator():
    from dpbalance.core import Workload
    from dpbalance.engine.config import EngineConfig
    from dpbalance.sim import SimConfig, run_simulation

    rng = np.random.default_rng(3)
    n = 300
    w = Workload.from_arrays(np.sort(rng.uniform(0, 30, n)), rng.integers(100, 3000, n), rng.integers(1, 200, n))
    for eng in (EngineConfig(), EngineConfig(prefix_cache=True)):
        cfg = SimConfig(workers=4, slots=8, engine=eng)
        a = run_simulation(w, "br0", cfg)[0]
        b = run_simulation(w, "brp", cfg)[0]
        assert a.throughput_all_tok_s == b.throughput_all_tok_s and a.ttft_p99_s == b.ttft_p99_s


def brp_by_the_rule(pol, snap, held_before: dict) -> list[tuple[int, int]]:
    """brp's placement written plainly, request by request in Python floats, from the module docstring's rule:
    every cost recomputed from the current loads (the policy keeps one cost matrix current instead).
    ``held_before``: when the policy first held each request, as it was before this dispatch."""
    v, cfg = snap.prefix, pol.cfg
    n = min(snap.pool_size, snap.total_free, pol.window)
    s, miss, tau, delta, pend, W = (x.tolist() for x in pol._costs(snap, v, n))
    G, k, beta = pol.G, pol.k, pol.beta
    lam, mu, hold, slo = cfg.work_weight, cfg.wait_weight, cfg.affinity_wait_s, cfg.ttft_slo
    free, kvf = snap.free.tolist(), np.asarray(v.kv_free, dtype=float).tolist()
    bounded = any(np.isfinite(kvf))
    wait = (snap.now - snap.pool_arrival[:n]).tolist()
    held_for = [snap.now - held_before.get(int(r), snap.now) for r in snap.pool_ids[:n]]
    caps = snap.caps.tolist()
    w_max, out = max(W), []
    order = sorted(range(n), key=lambda i: -min(delta[i]))  # stable: ties keep pool order
    for i in order:
        cost = [
            max(W[g] + delta[i][g] - w_max, 0.0) * beta + lam * delta[i][g] + (mu * k * pend[g] if mu else 0.0)
            for g in range(G)
        ]
        ok = [f > 0 for f in free]
        n_ok = sum(ok)
        if hold > 0 and held_for[i] < hold and 0 < n_ok < G:
            best_free = min(miss[i][g] for g in range(G) if ok[g])
            if min(miss[i][g] for g in range(G) if not ok[g]) < best_free:
                g_all = min(range(G), key=lambda g: cost[g])
                if not ok[g_all] and caps[g_all] > 0 and miss[i][g_all] < best_free:
                    if cost[g_all] < min(cost[g] for g in range(G) if ok[g]) - 1e-9:
                        continue
        room = ok
        if bounded:
            room = [ok[g] and kvf[g] >= miss[i][g] for g in range(G)]
            if not any(room):
                top = max(kvf[g] for g in range(G) if ok[g])
                room = [ok[g] and kvf[g] >= top for g in range(G)]
        if slo is not None:
            est = [wait[i] + pend[g] + tau[i][g] for g in range(G)]
            meet = [room[g] and est[g] <= slo for g in range(G)]
            if any(meet):
                room = meet
            else:
                cost = est
        cand = [g for g in range(G) if room[g]]
        c_min = min(cost[g] for g in cand)
        tie = [g for g in cand if cost[g] <= c_min + 1e-9 * max(1.0, abs(c_min))]
        g = min(tie, key=lambda g: W[g])
        out.append((int(snap.pool_ids[i]), g))
        W[g] += delta[i][g]
        w_max = max(w_max, W[g])
        pend[g] += tau[i][g]
        kvf[g] -= miss[i][g]
        free[g] -= 1
    return sorted(out)


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("cfg", ["", "wait_weight=0", "ttft_slo=2", "affinity_wait_s=0", "beta=1"])
def test_brp_decides_as_its_rule_written_plainly(seed, cfg):
    rng = np.random.default_rng(seed)
    G, B = int(rng.integers(2, 9)), int(rng.integers(1, 8))
    snap = random_snapshot(rng, G, B, int(rng.integers(1, 60)), full=False)
    view = random_view(rng, snap, G)
    view.hits = {i: (h if rng.random() < 0.7 else [0] * G) for i, h in view.hits.items()}
    snap = with_view(snap, view)
    pol = make_policy("brp" + (":" + cfg if cfg else ""), PolicyContext(workers=G, slots=B))
    n = min(snap.pool_size, snap.total_free, pol.window)
    if n == 0 or not (pol._costs(snap, view, n)[1] < snap.pool_prompt[:n, None]).any():
        return  # nothing cached anywhere in the window: brp hands over to br0 (tested above)
    if rng.random() < 0.5:  # some requests held before, some long enough ago that the bound has passed
        pol._held = {int(r): snap.now - float(rng.uniform(0, 60)) for r in snap.pool_ids if rng.random() < 0.5}
    if rng.random() < 0.3:  # a closed rank
        snap._state.set_cap(int(rng.integers(G)), 0)
    before = dict(pol._held)
    a = pol.dispatch(snap)
    assert sorted(zip(a.request_id.tolist(), a.worker.tolist())) == brp_by_the_rule(pol, snap, before)


@pytest.mark.parametrize("cfg", ["", "ttft_slo=2", "wait_weight=0"])
def test_brp_runs_of_held_requests_decide_as_the_rule(cfg, monkeypatch):
    """Overloaded: most ranks full and caching most of every prompt, so requests are held in runs, which the policy
    checks in one pass (``_leading_holds``); a few requests cached nowhere are placed between the runs."""
    from dpbalance.policies.prefix import brp

    passes = []
    leading = brp._leading_holds
    monkeypatch.setattr(brp, "_leading_holds", lambda *a: passes.append(leading(*a)) or passes[-1])
    for seed in range(40):
        rng = np.random.default_rng(seed)
        G, B = int(rng.integers(3, 17)), int(rng.integers(1, 5))
        snap = random_snapshot(rng, G, B, int(rng.integers(20, 80)), full=True)
        full = snap.free == 0
        if full.all() or not full.any():
            continue
        s = dict(zip(snap.pool_ids.tolist(), snap.pool_prompt.tolist()))
        hits = {i: [0] * G if rng.random() < 0.15 else np.where(full, p * 9 // 10, 0).tolist() for i, p in s.items()}
        snap = with_view(snap, View(hits, G, rng.integers(0, 20000, G).astype(float)))
        pol = make_policy("brp" + (":" + cfg if cfg else ""), PolicyContext(workers=G, slots=B))
        if rng.random() < 0.5:
            pol._held = {int(r): snap.now - float(rng.uniform(0, 60)) for r in snap.pool_ids if rng.random() < 0.3}
        before = dict(pol._held)
        a = pol.dispatch(snap)
        assert sorted(zip(a.request_id.tolist(), a.worker.tolist())) == brp_by_the_rule(pol, snap, before), seed
    assert sum(1 for k in passes if k > 0) >= 5  # the one-pass check ran and held requests in it
