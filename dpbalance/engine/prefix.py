"""Per-rank prefix caches over one space of chained block hashes, with vLLM's semantics.

A block is ``block_size`` prompt tokens identified by a hash that covers every token before it too (a chained
hash: the trace's Mooncake ``hash_ids``, or what the router computes from a prompt), so a prompt's cached part is
always its longest prefix of blocks resident on the rank. Each rank holds blocks that running requests reference
(a reference count per block) and blocks nobody references, kept in least-recently-freed order; those are
evicted first, oldest first, when the rank needs room. A request frees its blocks last-first (as vLLM does), so a
prompt's tail is evicted before its head.

One structure serves every rank: ``holders[h]`` is the bit mask of ranks that hold block ``h``, so a request's
cached prefix on all G ranks is found in one search over its blocks (``match_all``; what a rank holds is
prefix-closed, so the search bisects rather than visiting every block). The simulator's engine keeps
its caches here; the router keeps its estimate of the ranks' caches (what it sent where) in the same class.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np


class PrefixCache:
    """The prefix caches of G ranks (see the module docstring). Capacities are the caller's business: this class
    counts blocks (``resident``) and hands out evictable ones on request (``evict``)."""

    def __init__(self, ranks: int, block_size: int, bounded: bool = True):
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        #: with unlimited room nothing is ever evicted: references and the eviction order are not kept
        self.bounded = bounded
        self.G = ranks
        self.block_size = block_size
        self.holders: dict[int, int] = {}
        self.refs: list[dict[int, int]] = [{} for _ in range(ranks)]
        #: unreferenced resident blocks per rank, oldest first (an OrderedDict: taking the oldest is O(1); a plain
        #: dict's first key is found by scanning past the slots of the keys deleted before it, ~16 µs per eviction
        #: at 60,000 blocks)
        self.free: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(ranks)]
        self.resident = [0] * ranks  # blocks held per rank (referenced or not)
        self.evicted = np.zeros(ranks, dtype=np.int64)  # blocks evicted so far per rank

    # ------------------------------------------------------------------ lookups
    def match(self, g: int, hashes: Sequence[int], limit: int | None = None, start: int = 0) -> int:
        """How many leading blocks of ``hashes`` (at most ``limit``) rank ``g`` holds; ``start``: the first ``start``
        blocks are known to be held (an earlier match on a cache that never evicts)."""
        end = len(hashes) if limit is None else min(limit, len(hashes))
        return first_drop(self.holders.get, hashes, 1 << g, start, end)

    def match_all(
        self, hashes: Sequence[int], limit: int | None = None, extra=None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """[G] leading blocks of ``hashes`` (at most ``limit``) held by each rank, counting a rank as holding a block
        that ``extra`` (optional, block -> rank mask) gives it too; written into ``out`` when given (see
        ``leading_groups``)."""
        return fill_depths(self.match_groups(hashes, limit, extra), self.G, out)

    def match_groups(
        self, hashes: Sequence[int], limit: int | None = None, extra=None, hint=None, changed: int = -1
    ) -> Groups:
        """``match_all`` as (ranks, depth) groups (``leading_groups``), for a caller that keeps them as the ``hint``
        of the same prompt's next lookup (``changed``: see ``leading_groups``)."""
        n = len(hashes) if limit is None else min(limit, len(hashes))
        get = _Union(self.holders, extra).get if extra else self.holders.get
        return leading_groups(hashes, n, self.G, get, hint, changed)

    def holds(self, g: int, block: int) -> bool:
        return bool(self.holders.get(block, 0) >> g & 1)

    def evictable(self, g: int) -> int:
        """Blocks rank ``g`` could evict now (resident, referenced by no running request)."""
        return len(self.free[g])

    # ------------------------------------------------------------------ references
    def acquire(self, g: int, hashes: Sequence[int]) -> int:
        """A request on rank ``g`` now references these blocks (held ones are shared, new ones inserted).
        Returns how many were new (the rank holds that many more blocks)."""
        if not self.bounded:
            return self._hold(g, hashes)
        refs, free, holders = self.refs[g], self.free[g], self.holders
        bit = 1 << g
        new = 0
        for x in hashes:
            n = refs.get(x)
            if n is None:
                refs[x] = 1
                if x in free:
                    del free[x]
                else:
                    holders[x] = holders.get(x, 0) | bit
                    new += 1
            else:
                refs[x] = n + 1
        self.resident[g] += new
        return new

    def release(self, g: int, hashes: Sequence[int]) -> None:
        """A request on rank ``g`` stops referencing these blocks; blocks nobody references stay cached and become
        evictable, the last block first (it is evicted before the ones in front of it)."""
        if not self.bounded:
            return
        refs, free = self.refs[g], self.free[g]
        for x in reversed(hashes):
            n = refs[x] - 1
            if n:
                refs[x] = n
            else:
                del refs[x]
                free[x] = None

    def _hold(self, g: int, hashes: Sequence[int]) -> int:
        """Unbounded: rank ``g`` holds these blocks from now on (each checked, so that a trace whose block ids are
        not chained cannot leave one out)."""
        holders = self.holders
        get = holders.get
        bit = 1 << g
        added = 0
        for x in hashes:
            m = get(x, 0)
            if not m & bit:  # (a block listed twice is held once)
                holders[x] = m | bit
                added += 1
        self.resident[g] += added
        return added

    def evict(self, g: int, blocks: int) -> int:
        """Evict up to ``blocks`` unreferenced blocks of rank ``g``, oldest first; returns how many went."""
        free, holders = self.free[g], self.holders
        keep = ~(1 << g)
        n = 0
        while n < blocks and free:
            x = free.popitem(last=False)[0]
            m = holders[x] & keep
            if m:
                holders[x] = m
            else:
                del holders[x]
            n += 1
        self.resident[g] -= n
        self.evicted[g] += n
        return n

    def insert_free(self, g: int, hashes: Sequence[int]) -> int:
        """Rank ``g`` holds these blocks (a prompt's leading blocks) without a running request referencing them
        (the router's estimate: a prompt it sent is cached once computed). Held blocks move to the newest end of the
        eviction order, the first block newest (as ``release`` leaves them). Returns how many were new."""
        if not self.bounded:
            return self._hold(g, hashes)
        refs, free, holders = self.refs[g], self.free[g], self.holders
        bit = 1 << g
        new = 0
        for x in reversed(hashes):  # the head newest: a prompt's tail is evicted before its head, as in release
            if refs and x in refs:
                continue
            if x in free:
                free.move_to_end(x)
            else:
                holders[x] = holders.get(x, 0) | bit
                new += 1
                free[x] = None
        self.resident[g] += new
        return new


def set_depth(out: np.ndarray, bits: int, depth: int) -> None:
    """``out[g] = depth`` for every set bit g of ``bits`` (a bit per rank): bit by bit when few are set, through
    numpy when many are (a prefix every rank holds sets all G at once)."""
    if bits.bit_count() <= 16:
        while bits:
            low = bits & -bits
            out[low.bit_length() - 1] = depth
            bits ^= low
        return
    G = len(out)
    mask = np.unpackbits(np.frombuffer(bits.to_bytes((G + 7) // 8, "little"), np.uint8), bitorder="little")
    out[mask[:G].view(bool)] = depth


Groups = list  # of (ranks as a bit mask, depth) pairs, every rank in exactly one


def leading_groups(hashes: Sequence[int], n: int, G: int, get, hint: Groups | None = None, changed: int = -1) -> Groups:
    """The ranks grouped by how many of the first ``n`` blocks of ``hashes`` they hold in a row from the start
    (``get(block, 0)``: the bit mask of the ranks holding it), as (ranks, depth) pairs.

    What every rank holds is prefix-closed: a rank holding a block holds every block before it in the chain (blocks
    are cached as a prompt's leading blocks, and the eviction order always takes a chain's tail before its head).
    So the set of ranks holding block k only shrinks as k grows, and the position where a rank drops out is found
    by galloping and binary search over the blocks instead of a walk over every one: a few probes per distinct
    depth, where a prompt of 130 blocks on ranks that share its first 64 costs about 20 probes instead of 130.

    ``hint``: the groups an earlier lookup of the same prompt and ``n`` found. Holdings being prefix-closed, a group
    whose ranks all still hold its last block and none holds the next one still has that depth (two probes); only
    the ranks of the groups that fail this are searched again. Same result with or without it; when every group
    holds, the result *is* ``hint`` (the same list), so a caller may keep what it derived from it. ``changed``
    (with a hint): the bit mask of the ranks whose holdings may have changed since the hint was found (-1: any);
    the groups of the others keep their depth without a probe."""
    mask = (1 << G) - 1
    groups: Groups = []
    if hint:
        if not changed:
            return hint
        mask = 0
        for bits, d in hint:
            if not bits & changed:
                groups.append((bits, d))
            elif (d < n and get(hashes[d], 0) & bits) or (d and get(hashes[d - 1], 0) & bits != bits):
                mask |= bits  # a rank of it gained the next block or lost its last: search them again
            else:
                groups.append((bits, d))
        if not mask:
            return hint
    lo = 0
    while lo < n:
        a = first_drop(get, hashes, mask, lo, n)
        if a == n:  # every rank left holds the rest
            break
        m = mask & get(hashes[a], 0)
        groups.append((mask & ~m, a))
        mask = m
        if not mask:
            break
        lo = a + 1
    if mask:
        groups.append((mask, n))
    return groups


def fill_depths(groups: Groups, G: int, out: np.ndarray | None = None) -> np.ndarray:
    """[G] each rank's depth from (ranks, depth) groups, written into ``out`` when given: the largest group fills
    the row at once; the others (usually a few ranks) are set rank by rank."""
    if out is None:
        out = np.empty(G, dtype=np.int64)
    big = max(range(len(groups)), key=lambda k: groups[k][0].bit_count())
    out.fill(groups[big][1])
    for k, (bits, depth) in enumerate(groups):
        if k != big:
            set_depth(out, bits, depth)
    return out


def first_drop(get, hashes: Sequence[int], mask: int, lo: int, n: int) -> int:
    """The first position in ``[lo, n)`` whose block some rank of ``mask`` does not hold (``get(block, 0)``: the
    ranks holding it), or ``n``; every rank of ``mask`` holds the blocks before ``lo``, and holdings are
    prefix-closed (see ``leading_groups``): the last block first, then galloping from ``lo``, then bisection."""
    if lo >= n or mask & get(hashes[n - 1], 0) == mask:
        return n
    a, b, step = lo, n - 1, 1  # position b is one where a rank stops
    while a + step - 1 < b:
        p = a + step - 1
        if mask & get(hashes[p], 0) != mask:
            b = p
            break
        a = p + 1
        step <<= 1
    while a < b:
        mid = (a + b) >> 1
        if mask & get(hashes[mid], 0) == mask:
            a = mid + 1
        else:
            b = mid
    return a


class _Union:
    """Two block -> rank-mask maps read as one (a rank holds a block if either says so)."""

    __slots__ = ("a", "b")

    def __init__(self, a: dict[int, int], b: dict[int, int]):
        self.a, self.b = a, b

    def get(self, x: int, default: int = 0) -> int:
        return self.a.get(x, default) | self.b.get(x, default)
