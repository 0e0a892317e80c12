"""The per-rank prefix caches: one search over a prompt's blocks (``match_all``) agrees with each rank's own
block-by-block lookup, with few ranks and with more ranks than the bit-by-bit path handles, through every way the
engine and the router change a cache (insertions, references taken and let go, evictions)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dpbalance.engine.prefix import PrefixCache, fill_depths, set_depth


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


def walk(chain, limit, G, maps) -> list[int]:
    """The reference: per rank, a block-by-block walk from the start of the chain (any of ``maps`` may hold it)."""
    n = len(chain) if limit is None else min(limit, len(chain))
    out = []
    for g in range(G):
        k = 0
        while k < n and any(m.get(chain[k], 0) >> g & 1 for m in maps):
            k += 1
        out.append(k)
    return out


OPS = st.lists(
    st.tuples(st.sampled_from(["insert", "acquire", "release", "evict"]), st.integers(0, 2**16)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(
    G=st.sampled_from([1, 2, 5, 17, 70]),
    prompts=st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=12), min_size=1, max_size=10),
    ops=OPS,
)
def test_match_all_agrees_with_a_walk_through_insertions_references_and_evictions(G, prompts, ops):
    """A bounded cache used as the engine uses it (a request references a prompt's leading blocks it matched plus
    the ones it computed, and lets them go when it ends) and as the router uses it (a sent prompt's blocks inserted
    unreferenced), with evictions in between: after every operation, every chain's ``match_all`` at every limit
    equals each rank's walk, and so does the search over the holders plus a second map (the simulator's queued
    requests), and so does each lookup that starts from the same chain's groups after the previous operation (the
    ``hint`` a waiting request's next lookup gets), with and without the ranks touched since (``changed``)."""
    cache = PrefixCache(G, 16, bounded=True)
    hints: dict[tuple[int, object], list] = {}
    told: dict[tuple[int, object], list] = {}  # the same lookups, told which ranks were touched since the last
    touched = 0
    chains = [[hash(tuple(p[: j + 1])) for j in range(len(p))] for p in prompts]
    held: list[tuple[int, list[int]]] = []  # references taken and not yet let go
    for op, x in ops:
        chain, g = chains[x % len(chains)], (x >> 4) % G
        if op == "insert":
            cache.insert_free(g, chain[: 1 + (x >> 8) % len(chain)])
        elif op == "acquire":  # what a lookup matched, then the blocks it computed after it
            k = cache.match(g, chain)
            end = max(k, 1 + (x >> 8) % len(chain))
            cache.acquire(g, chain[:k])
            cache.acquire(g, chain[k:end])
            held.append((g, chain[:end]))
        elif op == "release" and held:
            g = held[x % len(held)][0]
            cache.release(*held.pop(x % len(held)))
        else:
            cache.evict(g, (x >> 8) % 8)
        touched |= 1 << g
        other = {h: (x * 7919 + i) % (1 << G) for i, h in enumerate(chain[:1])}  # a one-block prefix, any ranks
        for j, c in enumerate(chains):
            for limit in (None, len(c) // 2, 0):
                want = walk(c, limit, G, [cache.holders])
                assert cache.match_all(c, limit).tolist() == want
                groups = hints[j, limit] = cache.match_groups(c, limit, hint=hints.get((j, limit)))
                assert fill_depths(groups, G).tolist() == want
                told[j, limit] = cache.match_groups(c, limit, hint=told.get((j, limit)), changed=touched)
                assert fill_depths(told[j, limit], G).tolist() == want
                assert [cache.match(g, c, limit) for g in range(G)] == want
                got = cache.match_all(c, limit, other).tolist()
                assert got == walk(c, limit, G, [cache.holders, other])
        touched = 0


def test_a_prompts_tail_is_evicted_before_its_head():
    """Blocks inserted unreferenced (the router's estimate) leave the cache tail first, as blocks a request lets go
    do: evicting one block of a cached prompt shortens its cached prefix by one, never to zero."""
    for use in ("insert", "release"):
        cache = PrefixCache(1, 16)
        chain = [11, 12, 13, 14]
        if use == "insert":
            cache.insert_free(0, chain)
        else:
            cache.acquire(0, chain)
            cache.release(0, chain)
        depths = []
        for _ in chain:
            cache.evict(0, 1)
            depths.append(int(cache.match_all(chain)[0]))
        assert depths == [3, 2, 1, 0], use


@given(G=st.integers(1, 300), bits=st.data(), depth=st.integers(0, 50))
def test_set_depth_sets_exactly_the_set_bits(G, bits, depth):
    ranks = bits.draw(st.sets(st.integers(0, G - 1)))
    out = np.full(G, -1, dtype=np.int64)
    set_depth(out, sum(1 << g for g in ranks), depth)
    assert [g for g in range(G) if out[g] == depth] == sorted(ranks)
    assert (out[[g for g in range(G) if g not in ranks]] == -1).all()
