"""How requests reach the ranks (``SimConfig.front``): held in the router's pool until a slot is free (dpbalance's
rules), or forwarded at once and queued by the rank (the peers' rules), which only the engine model with prefill
can show."""

from __future__ import annotations

import numpy as np
import pytest

from dpbalance.core.workload import Blocks, Workload
from dpbalance.engine.config import EngineConfig
from dpbalance.sim import SimConfig, run_simulation
from dpbalance.sim.loop import simulate
from dpbalance.sim.run import build_policy

ENGINE = EngineConfig(prefill=True, prefix_cache=True, max_batched_tokens=64)


def shared_prefix(n: int = 4) -> Workload:
    """n requests at t = 0 with one 32-token prompt each, all four 8-token blocks the same."""
    blocks = Blocks.from_lists([[1, 2, 3, 4]] * n, 8)
    return Workload.from_arrays(np.zeros(n), [32] * n, [3] * n, blocks=blocks)


def test_forwarded_requests_queue_on_the_rank_their_rule_chose():
    # two ranks of one slot each: in the pool, the second request can only go to the free rank; forwarded,
    # prefix_affinity sends every request after the first to the rank that will hold the prefix, which runs them
    # one at a time
    w = shared_prefix()
    ranks = {}
    for front in ("pool", "forward"):
        cfg = SimConfig(workers=2, slots=1, front=front, engine=ENGINE)
        rec = simulate(w, build_policy("prefix_affinity", cfg), cfg)
        assert rec.front == front and rec.slots == 1
        ranks[front] = rec.worker.tolist()
    assert sorted(set(ranks["pool"])) == [0, 1]
    assert len(set(ranks["forward"])) == 1


def test_auto_forwards_the_peers_rules_and_pools_dpbalances():
    w = shared_prefix()
    cfg = SimConfig(workers=2, slots=1, engine=ENGINE)
    fronts = {p: simulate(w, build_policy(p, cfg), cfg).front for p in ("sglang_cache_aware", "vllm_dp", "brp", "br0")}
    assert fronts == {"sglang_cache_aware": "forward", "vllm_dp": "forward", "brp": "pool", "br0": "pool"}
    res, _ = run_simulation(w, "llmd_prefix", cfg)
    assert res.config["front"] == "forward" and res.slots == 1


def test_without_prefill_every_rule_is_pooled():
    # decode-only ranks start a request the step it arrives: there is no rank queue to model
    w = shared_prefix()
    cfg = SimConfig(workers=2, slots=1, front="forward", engine=EngineConfig(prefix_cache=True))
    assert simulate(w, build_policy("sglang_cache_aware", cfg), cfg).front == "pool"


@pytest.mark.parametrize("policy", ["sglang_cache_aware", "round_robin"])
def test_a_forwarded_rank_runs_no_more_than_its_slots(policy):
    rng = np.random.default_rng(3)
    n = 60
    lists = [[int(s) * 100 + j for j in range(4)] for s in rng.integers(0, 3, n)]
    w = Workload.from_arrays(
        np.sort(rng.uniform(0, 2, n)), [32] * n, rng.integers(1, 30, n), blocks=Blocks.from_lists(lists, 8)
    )
    cfg = SimConfig(workers=2, slots=3, front="forward", engine=ENGINE)
    run_cfg = cfg.for_policy(build_policy(policy, cfg), n)
    assert run_cfg.engine.max_num_seqs == 3 and run_cfg.slots == n
    res, _ = run_simulation(w, policy, cfg)
    assert res.completed == n
