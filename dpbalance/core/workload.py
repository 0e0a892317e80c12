"""The request population a run replays: columnar arrays sorted by arrival.

A ``Workload`` is what every trace loader and synthetic generator produces and what the simulator,
predictors and load generator consume. Request ``i`` is row ``i``; ids are dense and follow arrival
order, which lets the pool keep ids sorted and find them by binary search.

Prefix structure, where the trace has it: ``blocks`` holds each prompt's chained block hashes (``Blocks``: the
hash of block j covers every token up to the end of block j, so equal hashes mean equal prefixes), with the
block size in tokens; ``session`` groups the turns of one conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NO_KEY = -1  # prompt_key value for "no prompt identity known"


@dataclass(frozen=True)
class Blocks:
    """Chained prompt block hashes of every request, ragged: request i's are ``hashes[offsets[i]:offsets[i+1]]``.

    A prompt of s tokens has ``s // size`` full blocks; a trace may also give a hash for the partial last block
    (the Mooncake traces do), which no cache ever holds."""

    hashes: np.ndarray  # int64 [total]
    offsets: np.ndarray  # int64 [N + 1], offsets[0] == 0
    size: int  # tokens per block

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("block size must be >= 1 token")
        if len(self.offsets) == 0 or self.offsets[0] != 0 or self.offsets[-1] != len(self.hashes):
            raise ValueError("block offsets must start at 0 and end at the number of hashes")
        if np.any(np.diff(self.offsets) < 0):
            raise ValueError("block offsets must be non-decreasing")

    @classmethod
    def from_lists(cls, lists, size: int) -> Blocks:
        counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = np.fromiter((h for x in lists for h in x), dtype=np.int64, count=int(offsets[-1]))
        return cls(flat, offsets, int(size))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def of(self, i: int) -> np.ndarray:
        return self.hashes[self.offsets[i] : self.offsets[i + 1]]

    def take(self, idx) -> Blocks:
        """The blocks of rows ``idx`` (any order, repeats allowed), as a new ragged table."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = self.counts[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        # the position of every hash to copy: each row's start, repeated over its length, plus 0, 1, 2, ...
        starts = np.repeat(self.offsets[:-1][idx] - offsets[:-1], counts)
        pos = starts + np.arange(int(offsets[-1]), dtype=np.int64)
        return Blocks(self.hashes[pos], offsets, self.size)

    def unchained(self) -> tuple[int, int, int] | None:
        """Evidence that these hashes are not chained, as ``(row a, row b, block id)``: the id comes after a different
        block in row b than in row a (or starts one prompt and not the other). None when every id always follows the
        same block, as chained hashes do (an id stands for its whole prefix); prefix-cache lookups rely on it."""
        h = self.hashes
        if not len(h):
            return None
        first = np.zeros(len(h), dtype=bool)  # the first block of a prompt (its predecessor below is a stand-in 0)
        first[self.offsets[:-1][self.counts > 0]] = True
        prev = np.empty_like(h)
        prev[1:] = h[:-1]
        prev[first] = 0  # (position 0 is always a first block)
        order = np.lexsort((prev, first, h))
        hs, fs, ps = h[order], first[order], prev[order]
        bad = np.flatnonzero((hs[1:] == hs[:-1]) & ((fs[1:] != fs[:-1]) | (ps[1:] != ps[:-1])))
        if not len(bad):
            return None
        pair = np.sort(order[[bad[0], bad[0] + 1]])
        a, b = (np.searchsorted(self.offsets, pair, side="right") - 1).tolist()
        return a, b, int(hs[bad[0]])

    def salted(self, salt: np.ndarray) -> Blocks:
        """Every row's hashes mixed with that row's ``salt`` (rows with different salts share no block)."""
        s = np.repeat(np.asarray(salt, dtype=np.int64), self.counts)
        mixed = (self.hashes ^ (s * np.int64(0x9E3779B97F4A7C15 - (1 << 64)))) & np.int64((1 << 63) - 1)
        return Blocks(mixed, self.offsets.copy(), self.size)


@dataclass(frozen=True)
class Workload:
    """Columnar requests. ``arrival`` in seconds from the first request (0 when the trace has none)."""

    arrival: np.ndarray  # float64 [N], non-decreasing
    prompt: np.ndarray  # int64 [N], s_i >= 0
    output: np.ndarray  # int64 [N], o_i >= 1
    key: np.ndarray  # int64 [N], prompt identity hash or NO_KEY
    name: str = "workload"
    has_timestamps: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    blocks: Blocks | None = None  # chained prompt block hashes, when the trace has them
    session: np.ndarray | None = None  # int64 [N], conversation id or NO_KEY, when the trace has them

    def __post_init__(self) -> None:
        n = len(self.arrival)
        for col in ("prompt", "output", "key"):
            if len(getattr(self, col)) != n:
                raise ValueError(f"workload column {col!r} has {len(getattr(self, col))} rows, expected {n}")
        if self.blocks is not None and len(self.blocks) != n:
            raise ValueError(f"workload has block hashes for {len(self.blocks)} requests, expected {n}")
        if self.session is not None and len(self.session) != n:
            raise ValueError(f"workload column 'session' has {len(self.session)} rows, expected {n}")
        if n and np.any(np.diff(self.arrival) < 0):
            raise ValueError("workload arrivals must be sorted (use Workload.from_rows to sort)")
        if n and (self.output.min() < 1):
            raise ValueError("every request needs output length >= 1")
        if n and (self.prompt.min() < 0):
            raise ValueError("prompt lengths must be >= 0")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        arrival,
        prompt,
        output,
        key=None,
        *,
        name: str = "workload",
        has_timestamps: bool = True,
        meta: dict[str, Any] | None = None,
        blocks: Blocks | None = None,
        session=None,
    ) -> Workload:
        """Build from arbitrary columns: sorted by arrival (stable), times shifted to start at 0."""
        arrival = np.asarray(arrival, dtype=np.float64)
        prompt = np.asarray(prompt, dtype=np.int64)
        output = np.asarray(output, dtype=np.int64)
        key = np.full(len(arrival), NO_KEY, dtype=np.int64) if key is None else np.asarray(key, dtype=np.int64)
        order = np.argsort(arrival, kind="stable")
        arrival = arrival[order]
        if len(arrival):
            arrival = arrival - arrival[0]
        sorted_ = bool(np.all(order == np.arange(len(order))))
        if blocks is not None and not sorted_:
            blocks = blocks.take(order)
        sess = None if session is None else np.asarray(session, dtype=np.int64)[order]
        return cls(
            arrival, prompt[order], output[order], key[order], name, has_timestamps, dict(meta or {}), blocks, sess
        )

    def __len__(self) -> int:
        return len(self.arrival)

    def take(self, idx) -> Workload:
        """The requests at ``idx`` (an index array or a slice, in arrival order), times shifted to start at 0."""
        return self._take(idx)

    def _take(self, idx, **meta_updates) -> Workload:
        arrival = self.arrival[idx]
        if len(arrival):
            arrival = arrival - arrival[0]
        meta = {**self.meta, **meta_updates}
        return Workload(
            arrival,
            self.prompt[idx],
            self.output[idx],
            self.key[idx],
            self.name,
            self.has_timestamps,
            meta,
            None if self.blocks is None else self.blocks.take(np.arange(len(self))[idx]),
            None if self.session is None else self.session[idx],
        )

    # ------------------------------------------------------------------ filters
    def filter(
        self,
        *,
        min_output: int | None = None,
        max_output: int | None = None,
        start_s: float | None = None,
        end_s: float | None = None,
        max_requests: int | None = None,
    ) -> Workload:
        """Keep rows matching every given bound, then the first ``max_requests`` of them."""
        mask = np.ones(len(self), dtype=bool)
        if min_output is not None:
            mask &= self.output >= min_output
        if max_output is not None:
            mask &= self.output <= max_output
        if start_s is not None:
            mask &= self.arrival >= start_s
        if end_s is not None:
            mask &= self.arrival < end_s
        idx = np.flatnonzero(mask)
        if max_requests is not None:
            if max_requests < 1:
                raise ValueError("max_requests must be >= 1")
            idx = idx[:max_requests]
        applied = {
            k: v
            for k, v in dict(
                min_output=min_output, max_output=max_output, start_s=start_s, end_s=end_s, max_requests=max_requests
            ).items()
            if v is not None
        }
        return self._take(idx, filters={**self.meta.get("filters", {}), **applied})

    def split(self, train_fraction: float = 0.5) -> tuple[Workload, Workload]:
        """Time-ordered train/test split: the first ``train_fraction`` of requests train predictors,
        the rest are replayed. Ordering by time means no test request's future leaks into training."""
        if not 0.0 < train_fraction < 1.0:
            raise ValueError("train_fraction must be in (0, 1)")
        cut = int(round(len(self) * train_fraction))
        idx = np.arange(len(self))
        return self._take(idx[:cut], split="train"), self._take(idx[cut:], split="test")

    def head_tail(self, n_test: int) -> tuple[Workload, Workload]:
        """Replay the first ``n_test`` requests and train on everything after them.

        Used when a run replays a prefix (``--max-requests``): the remaining rows are a training split
        disjoint from the replayed requests."""
        idx = np.arange(len(self))
        return self._take(idx[n_test:], split="train"), self._take(idx[:n_test], split="test")

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, float]:
        def q(x, p):
            return float(np.percentile(x, p)) if len(x) else float("nan")

        n = len(self)
        span = float(self.arrival[-1] - self.arrival[0]) if n else 0.0
        return {
            "requests": n,
            "span_s": span,
            "rate_req_s": (n / span) if span > 0 else float("nan"),
            "prompt_mean": float(self.prompt.mean()) if n else float("nan"),
            "prompt_p50": q(self.prompt, 50),
            "prompt_p99": q(self.prompt, 99),
            "prompt_max": int(self.prompt.max()) if n else 0,
            "output_mean": float(self.output.mean()) if n else float("nan"),
            "output_p50": q(self.output, 50),
            "output_p99": q(self.output, 99),
            "output_max": int(self.output.max()) if n else 0,
            "output_gt_1000": int((self.output > 1000).sum()),
            "distinct_keys": int(len(np.unique(self.key[self.key != NO_KEY]))),
            **self.prefix_stats(),
        }

    def prefix_stats(self) -> dict[str, Any]:
        """What the prefix structure allows: the block size, the sessions, and ``prefix_reuse``, the share of prompt
        tokens one cache with unlimited room would serve (each prompt's longest prefix of full blocks seen in an
        earlier prompt, the last prompt token always recomputed)."""
        if self.blocks is None:
            return {}
        b, size = self.blocks, self.blocks.size
        seen: set[int] = set()
        hit = 0
        for i, s in enumerate(self.prompt.tolist()):
            hs = b.hashes[b.offsets[i] : b.offsets[i + 1]].tolist()
            full = min(len(hs), max(0, s - 1) // size)
            k = 0
            while k < full and hs[k] in seen:
                k += 1
            hit += k * size
            seen.update(hs[: s // size])
        total = int(self.prompt.sum())
        out: dict[str, Any] = {"block_size": size, "prefix_reuse": hit / total if total else 0.0}
        if self.session is not None:
            out["sessions"] = int(len(np.unique(self.session[self.session != NO_KEY])))
        return out
