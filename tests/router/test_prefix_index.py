"""The router's prefix index: what it sent is cached on that rank, in engine-cut blocks, with LRU forgetting at a
KV capacity; pending prefill and KV headroom follow each request's life."""

import numpy as np
import pytest

from dpbalance.router.prefix_index import PrefixIndex, text_block_hashes

IDS = list(range(40))  # 40 token ids: two full blocks of 16


def test_a_sent_prompt_is_cached_on_its_rank_only_and_never_its_last_token():
    ix = PrefixIndex(2)
    ix.arrive(1, IDS, 40)
    assert ix.sent(1, 0) == 0  # nothing cached yet: 40 tokens to prefill
    assert ix.pending_prefill.tolist() == [40, 0]
    ix.arrive(2, IDS, 40)
    ix.arrive(3, IDS[:32], 32)  # exactly two blocks: the second holds the last token, so one block may hit
    assert ix.cached(np.array([2, 3])).tolist() == [[32, 0], [16, 0]]
    assert ix.sent(2, 1) == 0  # rank 1 never saw it
    ix.first_token(1)
    assert ix.pending_prefill.tolist() == [0, 40]
    ix.done(1)
    ix.done(2)
    assert ix.pending_prefill.tolist() == [0, 0]
    assert ix.cached(np.array([3])).tolist() == [[16, 16]]  # both ranks keep what they were sent


def test_capacity_forgets_the_least_recently_sent_blocks():
    ix = PrefixIndex(1, kv_capacity=32)  # two blocks of room
    ix.arrive(1, IDS, 40)
    ix.sent(1, 0)
    ix.arrive(2, [100 + i for i in range(40)], 40)
    ix.sent(2, 0)  # two new blocks push the first prompt's out
    ix.arrive(3, IDS, 40)
    ix.arrive(4, [100 + i for i in range(40)], 40)
    assert ix.cached(np.array([3, 4])).tolist() == [[0], [32]]
    assert ix.kv_free.tolist() == [32 - 80]  # both requests still run: the estimate may go below zero
    ix.done(1)
    ix.done(2)
    assert ix.kv_free.tolist() == [32]


def test_text_prompts_use_character_runs_scaled_to_tokens():
    ix = PrefixIndex(1, block_size=16)  # 64-character runs
    text = "x" * 200
    ix.arrive(1, text, 50)  # 3 full runs, each standing for 50·64/200 = 16 tokens
    ix.sent(1, 0)
    ix.arrive(2, text + " and more", 52)
    assert ix.cached(np.array([2])).tolist() == [[int(3 * 52 * 64 / 209)]]
    assert text_block_hashes("a" * 128, 64)[0] == text_block_hashes("a" * 64, 64)[0]


def test_a_retry_moves_the_estimate_to_the_new_rank():
    ix = PrefixIndex(2)
    ix.arrive(1, IDS, 40)
    ix.sent(1, 0)
    ix.sent(1, 1)
    assert ix.pending_prefill.tolist() == [0, 40]
    with pytest.raises(ValueError, match="below one block"):
        PrefixIndex(1, kv_capacity=8)


@pytest.mark.parametrize("kept", [None, 3])
def test_a_waiting_requests_repeated_lookups_agree_with_a_fresh_lookup(kept):
    """A request waits through many dispatches and each lookup starts from its last one (``hint``), probing only
    the ranks that changed since (``kept``: how many changes the index remembers, before the ones older than its
    lookups are forgotten and every rank is probed); while other prompts are sent and the capacity evicts, every
    repeated answer equals a lookup that starts from nothing."""
    rng = np.random.default_rng(5)
    stems = [[1000 * s + i for i in range(16 * 8)] for s in range(4)]  # four families of 8-block prefixes
    ix = PrefixIndex(5, kv_capacity=16 * 20)
    if kept:
        ix._keep = kept
    waiting = list(range(6))
    for rid in waiting:
        s = stems[rid % 4]
        ix.arrive(rid, s[: 16 * (2 + rid % 6)] + [7], 16 * (2 + rid % 6) + 1)
    answers = []
    for step in range(200):
        rid = 100 + step
        s = stems[int(rng.integers(4))]
        k = int(rng.integers(1, 9))
        for _ in range(int(rng.integers(1, 4))):  # one or more sends between two lookups
            rid += 1000
            ix.arrive(rid, s[: 16 * k] + [9], 16 * k + 1)
            ix.sent(rid, int(rng.integers(5)))
            ix.done(rid)
        got = ix.cached(np.array(waiting))
        fresh = np.array([[0] * 5] * len(waiting))
        for row, w in enumerate(waiting):
            e = ix._req[w]
            fresh[row] = ix.cache.match_all(e.hashes, ix._limit(e)) * 16
        assert got.tolist() == fresh.tolist()
        answers.append(got.tolist())
    changed = sum(a != b for a, b in zip(answers, answers[1:]))
    assert changed > 20  # the answers did move: sends and evictions reached the waiting prompts
