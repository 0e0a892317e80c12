"""The per-rank prefix caches: one walk over a prompt's blocks (``match_all``) agrees with each rank's own lookup,
with few ranks and with more ranks than the bit-by-bit path handles."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dpbalance.engine.prefix import PrefixCache, set_depth


@settings(max_examples=60, deadline=None)
@given(
    G=st.sampled_from([1, 3, 17, 70]),
    prompts=st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=8), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
    bounded=st.booleans(),
)
def test_match_all_is_every_ranks_own_match(G, prompts, seed, bounded):
    rng = np.random.default_rng(seed)
    cache = PrefixCache(G, 16, bounded=bounded)
    chains = [[hash(tuple(p[: j + 1])) for j in range(len(p))] for p in prompts]
    for chain in chains:  # each prompt cached on a random set of ranks (often most of them)
        for g in np.flatnonzero(rng.random(G) < 0.8).tolist():
            cache.insert_free(g, chain) if bounded else cache.acquire(g, chain)
    for chain in chains:
        for limit in (None, len(chain) // 2):
            want = [cache.match(g, chain, limit) for g in range(G)]
            assert cache.match_all(chain, limit).tolist() == want


@given(G=st.integers(1, 300), bits=st.data(), depth=st.integers(0, 50))
def test_set_depth_sets_exactly_the_set_bits(G, bits, depth):
    ranks = bits.draw(st.sets(st.integers(0, G - 1)))
    out = np.full(G, -1, dtype=np.int64)
    set_depth(out, sum(1 << g for g in ranks), depth)
    assert [g for g in range(G) if out[g] == depth] == sorted(ranks)
    assert (out[[g for g in range(G) if g not in ranks]] == -1).all()
