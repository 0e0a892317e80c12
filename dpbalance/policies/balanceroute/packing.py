"""Which waiting requests a worker with k free slots should take, given its target Δ* (see ``scorers``).

- ``max_count`` (the BF-IO authors' rule): the most requests whose prompts sum to at most Δ*, then the largest
  such sum. Exact for small candidate sets (a bitset dynamic programme over reachable sums, one bitset per
  cardinality, sizes rounded *up* to a grid of Δ*/buckets so a chosen subset never exceeds Δ*); a greedy with a
  reserve for the remaining picks beyond ``EXACT_WORK`` (candidates × slots), within a few per cent of the exact
  sum (tested), which keeps a dispatch at G = 256 with a pool of 1,024 within a couple of milliseconds.
- ``max_f``: the subset with the highest F (enumerated for ≤ 12 candidates; otherwise the best of the max-count
  subset and the smallest overflowing single request).
- ``fit_one_each``: many workers with one free slot each, processed from the largest target down, each taking the
  largest remaining request that fits — vectorised (one sort, one searchsorted, one running maximum).
Every rule returns indices into the candidate array; none returns an empty choice when candidates exist
(the anti-starvation rule: if nothing scores above zero, the single best request by F is taken).
"""

from __future__ import annotations

import bisect
import math

import numpy as np

EXACT_WORK = 512  # candidates × slots up to which max_count is solved exactly

_MASKS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def subset_masks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All non-empty subsets of n items as a 0/1 matrix [2^n − 1, n] and their sizes."""
    if n not in _MASKS:
        codes = np.arange(1, 1 << n)
        m = ((codes[:, None] >> np.arange(n)) & 1).astype(np.float64)
        _MASKS[n] = (m, m.sum(1))
    return _MASKS[n]


def dp_max_count(sizes: np.ndarray, cap: float, K: int, buckets: int) -> list[int] | None:
    """Most items (≤ K) whose sum is ≤ cap, then the largest such sum; exact-cardinality bitset DP."""
    ok = np.flatnonzero(sizes <= cap)
    if len(ok) == 0:
        return None
    q = 1.0 if buckets == 0 or cap <= buckets else cap / buckets
    sz = np.ceil(sizes[ok] / q).astype(np.int64).tolist()
    T = int(math.floor(cap / q + 1e-9))
    mask = (1 << (T + 1)) - 1
    K = min(K, len(sz))
    reach = [1] + [0] * K
    hist = []
    for s in sz:
        for k in range(K, 0, -1):
            prev = reach[k - 1]
            if prev:
                reach[k] |= (prev << s) & mask
        hist.append(reach[:])
    for k in range(K, 0, -1):
        if reach[k]:
            t = reach[k].bit_length() - 1
            chosen, kk = [], k
            for i in range(len(sz) - 1, -1, -1):
                before = hist[i - 1] if i > 0 else [1] + [0] * K
                if (before[kk] >> t) & 1:
                    continue
                chosen.append(int(ok[i]))
                t -= sz[i]
                kk -= 1
                if kk == 0:
                    break
            return chosen
    return None


def greedy_max_count(sizes: np.ndarray, cap: float, K: int) -> list[int] | None:
    """The max-count rule by a greedy: k = most items that fit (the k smallest); then pick the largest item that
    still leaves room for the smallest items the remaining picks need."""
    order = np.argsort(sizes, kind="stable")
    return greedy_sorted(sizes[order].tolist(), order.tolist(), cap, K)


def greedy_sorted(values: list[float], labels: list[int], cap: float, K: int) -> list[int] | None:
    """``greedy_max_count`` on values already sorted ascending (ties in candidate order); returns the chosen
    items' labels. The lists are not changed."""
    k, total = 0, 0.0
    for v in values[:K]:
        if total + v > cap:
            break
        total += v
        k += 1
    if k == 0:
        return None
    avail, idx = values[:], labels[:]
    left = cap
    chosen = []
    for j in range(k):
        r = k - j - 1  # picks still to make after this one; they will take the r smallest other items
        hi = bisect.bisect_right(avail, left - sum(avail[:r])) - 1
        if hi < r:  # no item above the reserved smallest fits: the largest feasible pick is avail[r]
            hi = r if sum(avail[: r + 1]) <= left else -1
        if hi < 0:
            break
        left -= avail[hi]
        chosen.append(idx[hi])
        del avail[hi], idx[hi]
    return chosen or None


def max_count(sizes: np.ndarray, cap: float, K: int, buckets: int) -> list[int] | None:
    if K == 1:
        fit = np.flatnonzero(sizes <= cap)
        return [int(fit[np.argmax(sizes[fit])])] if len(fit) else None
    if math.isinf(cap):
        return np.argsort(-sizes, kind="stable")[:K].tolist()
    if len(sizes) * K <= EXACT_WORK:
        return dp_max_count(sizes, cap, K, buckets)
    return greedy_max_count(sizes, cap, K)


def max_f(sizes: np.ndarray, K: int, target: float, f, buckets: int) -> list[int] | None:
    """The subset with the highest F (``f`` maps an array of Δ to F)."""
    n = len(sizes)
    if K == 1:
        v = f(sizes)
        i = int(np.argmax(v))
        return [i] if v[i] > 0 else None
    if n <= 12:
        masks, counts = subset_masks(n)
        ok = counts <= K
        sums = masks[ok] @ sizes
        v = f(sums)
        j = int(np.lexsort((counts[ok], v))[-1])  # highest F, then most requests
        return np.flatnonzero(masks[ok][j]).tolist() if v[j] > 0 else None
    if math.isinf(target):
        return np.argsort(-sizes, kind="stable")[:K].tolist()
    best = max_count(sizes, target, K, buckets)
    above = np.flatnonzero(sizes > target)
    alt = [int(above[np.argmin(sizes[above])])] if len(above) else None
    cands = [c for c in (best, alt) if c]
    if not cands:
        return None
    vs = [float(f(np.array([sizes[c].sum()]))[0]) for c in cands]
    j = int(np.argmax(vs))
    return cands[j] if vs[j] > 0 else None


def fit_one_each(targets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Workers with one slot each, in descending target order, each take the largest remaining size ≤ its target.

    ``targets`` must be sorted descending. Returns, per worker, an index into ``sizes`` or −1 (nothing fits)."""
    k, n = len(targets), len(sizes)
    if k == 0 or n == 0:
        return np.full(k, -1, dtype=np.int64)
    order = np.argsort(-sizes, kind="stable")  # largest first
    s_desc = sizes[order]
    # first index in s_desc whose size fits target j (items before it are too large for j and for all later j)
    first = np.searchsorted(-s_desc, -targets, side="left")
    j = np.arange(k)
    pos = j + np.maximum.accumulate(first - j)  # worker j takes the next item not taken by earlier workers
    out = np.where(pos < n, order[np.minimum(pos, n - 1)], -1)
    return out.astype(np.int64)
