"""Hand-worked cases of the engine model: chunked prefill under a token budget, the prefix cache's rules (full
blocks only, the last prompt token recomputed), preemption when KV runs out. Each expected number is worked out in
the comment beside it from the module docstring's rules, not read back from the code."""

from __future__ import annotations

import numpy as np
import pytest

from dpbalance.engine.config import EngineConfig
from dpbalance.engine.core import Engine, EngineError
from dpbalance.engine.step_time import make_step_time

# τ_g = C + t_tok·L_g + prefill_tok·T_g + prefill_attn·A_g with round numbers
MODEL = "linear_max:C=1,t_tok=0.01,prefill_tok=0.1,prefill_attn=0.001"


def engine(G=2, slots=2, **kw) -> Engine:
    return Engine(G, EngineConfig(**kw), make_step_time(MODEL, slots), slots=slots, block_size=4)


def test_a_prompt_is_prefilled_in_chunks_of_the_budget_then_decodes():
    e = engine(prefill=True, max_batched_tokens=4)
    e.admit_one(0, 0, 6)
    s1 = e.step()
    # chunk of 4 tokens over an empty context: attention pairs 4·(0 + 5/2) = 10
    # rank 0: 1 + 0.1·4 + 0.001·10 = 1.41; rank 1 runs a dummy step: 1
    assert s1.prefill_tokens.tolist() == [4, 0]
    assert s1.busy == pytest.approx([1.41, 1.0])
    assert s1.tau == pytest.approx(1.41)
    assert s1.generated.tolist() == [0, 0] and s1.stalled == [0] and s1.started == []
    s2 = e.step()
    # the last 2 tokens over a context of 4: pairs 2·(4 + 3/2) = 11 → 1 + 0.2 + 0.011; the first token is sampled
    assert s2.prefill_tokens.tolist() == [2, 0]
    assert s2.tau == pytest.approx(1.211)
    assert s2.generated.tolist() == [1, 0] and s2.started == [0] and s2.stalled == []
    s3 = e.step()
    # a plain decode step: the KV holds the prompt and the first token, 7 tokens → 1 + 0.01·7
    assert s3.tau == pytest.approx(1.07)
    assert s3.prefill_tokens.tolist() == [0, 0] and s3.generated.tolist() == [1, 0]
    assert e.generated(0) == 2
    e.finish([0])
    assert not e.reqs and e.dec_load.tolist() == [0, 0] and e.pending == [0, 0]


def test_decodes_take_the_budget_first_and_the_long_prefill_threshold_caps_a_chunk():
    e = engine(G=1, slots=2, prefill=True, max_batched_tokens=5, long_prefill_threshold=3)
    e.admit_one(0, 0, 2)
    e.step()  # prompt of 2 in one chunk, first token sampled
    e.admit_one(1, 0, 10)
    s = e.step()
    # budget 5 − 1 decode = 4, capped by the threshold at 3: pairs 3·(0 + 2) = 6
    # rank: 1 + 0.01·3 (decode load 2 + 1) + 0.1·3 + 0.001·6 = 1.336
    assert s.prefill_tokens.tolist() == [3]
    assert s.tau == pytest.approx(1.336)
    assert s.stalled == [1]


def test_prefix_cache_serves_full_blocks_and_never_the_last_prompt_token():
    e = engine(G=1, slots=4, prefill=True, prefix_cache=True, max_batched_tokens=64)
    e.admit_one(0, 0, 9, [11, 12])  # 9 tokens: two full blocks of 4, nothing cached yet
    e.step()
    assert e.prefilled.tolist() == [9]
    e.admit_one(1, 0, 9, [11, 12])  # both blocks cached; the 9th token is computed: hit 8
    e.admit_one(2, 0, 8, [11, 12])  # exactly two blocks, but the last token must be recomputed: hit one block, 4
    e.admit_one(3, 0, 9, [11, 99])  # the chain breaks at the second block: hit 4
    s = e.step()
    assert s.prefill_tokens.tolist() == [1 + 4 + 5]
    assert e.hit_tokens == [8 + 4 + 4]
    assert e.prompt_tokens == [9 + 9 + 8 + 9]
    assert e.hit_rate() == pytest.approx(16 / 35)


def test_cache_is_per_rank():
    e = engine(G=2, slots=4, prefill=True, prefix_cache=True, max_batched_tokens=64)
    e.admit_one(0, 0, 9, [1, 2])
    e.step()
    e.admit_one(1, 1, 9, [1, 2])  # rank 1 never saw these blocks
    e.admit_one(2, 0, 9, [1, 2])
    e.step()
    assert e.hit_tokens == [8, 0]


def test_prefix_cache_without_prefill_counts_hits_and_costs_nothing():
    e = engine(G=1, slots=4, prefix_cache=True)
    e.admit_one(0, 0, 9, [1, 2])
    s = e.step()
    assert s.generated.tolist() == [1] and s.tau == pytest.approx(1 + 0.01 * 9)
    e.admit_one(1, 0, 9, [1, 2])
    assert e.hit_tokens == [8]


def test_kv_capacity_preempts_the_latest_request_which_recomputes_prompt_and_output():
    # capacity 12 tokens: two prompts of 5 fit (10), then each decode adds a token per step
    e = engine(G=1, slots=2, prefill=True, kv_capacity=12, max_batched_tokens=16)
    e.admit_one(0, 0, 5)
    e.admit_one(1, 0, 5)
    s = e.step()  # both prefill (KV 10) and sample their first token
    assert s.generated.tolist() == [2] and s.preempted == []
    e.step()  # two decodes: KV 10 → 12
    s = e.step()  # two more tokens need 14 > 12: the latest-scheduled (1) is preempted; 0 decodes alone
    assert s.preempted == [1] and e.preemptions.tolist() == [1]
    assert e.reqs[1].target == 5 + 2  # its prompt and the 2 tokens it had sampled are recomputed
    assert s.generated.tolist() == [1]
    e.finish([0])
    s = e.step()  # room again: request 1 recomputes 7 tokens and samples its next token
    assert s.prefill_tokens.tolist() == [7] and s.started == [1]
    assert e.generated(1) == 3


def test_engine_refuses_a_budget_below_the_slots_and_a_model_without_prefill_terms():
    with pytest.raises(EngineError, match="max-batched-tokens"):
        engine(slots=8, prefill=True, max_batched_tokens=4)
    with pytest.raises(EngineError, match="no prefill terms"):
        Engine(1, EngineConfig(prefill=True), _no_prefill_model(), slots=4)


def _no_prefill_model():
    m = make_step_time("linear_max", 4)
    m.prefill_tok = None  # as a step-time file calibrated without prefill phases loads
    return m


def test_prefill_interval_defers_new_prefills_to_cadence_steps():
    e = engine(G=1, slots=2, prefill=True, max_batched_tokens=16, prefill_interval=3)
    e.step()  # step 0 is a cadence step (nothing waiting)
    e.admit_one(0, 0, 4)
    out = [e.step().prefill_tokens[0] for _ in range(3)]  # steps 1, 2 wait; step 3 releases
    assert out == [0, 0, 4]


def test_adp_wait_holds_new_prefills_until_every_rank_has_one_or_the_wait_runs_out():
    e = engine(G=2, slots=2, prefill=True, max_batched_tokens=16, adp_wait=2)
    e.admit_one(0, 0, 4)
    assert e.step().prefill_tokens.tolist() == [0, 0]  # rank 1 has nothing: wait
    e.admit_one(1, 1, 4)
    assert e.step().prefill_tokens.tolist() == [4, 4]  # every rank has one: both start together
    e.admit_one(2, 0, 4)
    assert e.step().prefill_tokens.tolist() == [0, 0]
    assert e.step().prefill_tokens.tolist() == [4, 0]  # the wait (2 steps) ran out


def test_kv_free_counts_evictable_blocks_as_free():
    e = engine(G=1, slots=2, prefill=True, prefix_cache=True, kv_capacity=40, max_batched_tokens=64)
    e.admit_one(0, 0, 9, [1, 2])
    e.step()
    # the 9 prompt tokens (8 of them in its referenced cached blocks); the sampled token's KV is written next step
    assert e.kv_free().tolist() == [40 - 9]
    e.finish([0])
    assert e.kv_free().tolist() == [40]  # its blocks stay cached but may be evicted
    assert np.isinf(engine(G=1).kv_free()).all()


@pytest.mark.parametrize("kv", ["unlimited", 64])
def test_max_num_seqs_keeps_requests_in_the_rank_queue_until_a_running_one_ends(kv):
    # one rank, the router may send 4 but the engine runs at most 2 at once; budget 64 fits every prompt
    e = engine(G=1, slots=4, prefill=True, max_batched_tokens=64, max_num_seqs=2, kv_capacity=kv)
    for i in range(3):
        e.admit_one(i, 0, 3)
    s1 = e.step()
    # requests 0 and 1 prefill their 3 tokens and sample a token; request 2 has no seat: 6 tokens, 2 started
    assert s1.prefill_tokens.tolist() == [6] and s1.generated.tolist() == [2]
    assert s1.stalled == [2] and e.pending == [3]
    s2 = e.step()  # both decode; the third still waits (no seat frees until one finishes)
    assert s2.prefill_tokens.tolist() == [0] and s2.generated.tolist() == [2] and s2.stalled == [2]
    e.finish([0])
    s3 = e.step()  # a seat is free: request 2 prefills next to request 1's decode
    assert s3.prefill_tokens.tolist() == [3] and s3.generated.tolist() == [2] and s3.stalled == []
    assert e.dec_count.tolist() == [2]


def test_max_num_seqs_needs_prefill_and_a_budget_for_its_sequences():
    with pytest.raises(ValueError, match="needs --prefill"):
        EngineConfig(max_num_seqs=2)
    with pytest.raises(EngineError, match="--max-num-seqs"):
        engine(G=1, slots=8, prefill=True, max_batched_tokens=4, max_num_seqs=6)
    engine(G=1, slots=8, prefill=True, max_batched_tokens=6, max_num_seqs=6)  # the budget fits 6 decodes


def test_a_per_request_cost_lands_on_the_admitting_rank_in_the_next_step_only():
    model = make_step_time(MODEL + ",per_request=0.5", 4)
    e = Engine(2, EngineConfig(prefill=True, max_batched_tokens=64), model, slots=4, block_size=4)
    e.admit_one(0, 0, 2)
    e.admit_one(1, 0, 2)
    e.admit_one(2, 1, 2)
    s1 = e.step()
    # rank 0: two prompts of 2 over empty contexts, pairs 2·(0 + 3/2) = 3 each: 1 + 0.1·4 + 0.001·6 + 0.5·2 = 2.406
    # rank 1: one prompt: 1 + 0.1·2 + 0.001·3 + 0.5 = 1.703; the decode-alone time carries the arrivals too
    assert s1.busy == pytest.approx([2.406, 1.703])
    assert s1.decode_busy == pytest.approx([2.0, 1.5])
    s2 = e.step()
    # plain decodes, nothing admitted since: rank 0 holds 2·(2 + 1) = 6 tokens → 1.06, rank 1 3 tokens → 1.03
    assert s2.busy == pytest.approx([1.06, 1.03])
    e.admit_one(3, 1, 2)
    assert e.step().busy[1] == pytest.approx(1 + 0.01 * 4 + 0.1 * 2 + 0.001 * 3 + 0.5)


def test_without_a_per_request_cost_the_engine_counts_no_arrivals():
    e = engine(prefill=True, max_batched_tokens=8)
    e.admit_one(0, 0, 2)
    assert e.arrived is None
    assert e.step().busy == pytest.approx([1 + 0.1 * 2 + 0.001 * 3, 1.0])
