"""The router's picture of the ranks' prefix caches: a per-rank index of the prompts it sent (a ``PrefixView``).

The router cannot read a rank's cache, so it keeps the one it would have: every prompt it sends to a rank is
taken as cached there once sent (as SGLang's cache-aware router and llm-d's prefix scorer assume), in blocks cut
as the engine cuts them: ``block_size`` token ids when the prompt comes as token ids, else runs of
``chars_per_block`` characters of its text (a stand-in for the tokenizer the router does not have: equal text
prefixes give equal runs, and a run counts as ``prompt_tokens · run / len(text)`` tokens). With a KV capacity per
rank the index evicts its least recently used blocks beyond what that capacity holds (nothing else is known about
the rank's own evictions); without one it never forgets.

Per rank it also counts the prefill the router has left there: the uncached prompt tokens of requests sent whose
first token has not come back yet (``pending_prefill``), and an estimate of the KV its running requests hold
(``kv_free``). Policies read all of it through ``Snapshot.prefix``, exactly as they read the simulator's engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from operator import or_

import numpy as np

from ..engine.hashing import VLLM_BLOCK, block_hashes
from ..engine.prefix import PrefixCache, fill_depths

CHARS_PER_TOKEN = 4  # English text under common BPE tokenizers; only scales the text stand-in


def text_block_hashes(text: str, chars_per_block: int) -> list[int]:
    """Chained hashes of the full ``chars_per_block``-character runs of ``text``."""
    out: list[int] = []
    prev = b""
    data = text.encode("utf-8", "surrogatepass")
    for i in range(0, len(data) - chars_per_block + 1, chars_per_block):
        prev = hashlib.blake2b(prev + data[i : i + chars_per_block], digest_size=8).digest()
        out.append(int.from_bytes(prev, "little") & ((1 << 63) - 1))
    return out


@dataclass
class _Entry:
    hashes: list[int]
    prompt_tokens: int
    tokens_per_block: float  # prompt tokens one block stands for
    rank: int = -1
    uncached: int = 0  # prompt tokens left to prefill on its rank when it was sent
    prefilling: bool = False
    groups: list | None = None  # its last lookup's (ranks, depth) groups: the next lookup's hint
    depths: np.ndarray | None = None  # [G] prompt tokens each rank holds, from ``groups``
    limit: int = 0  # blocks a lookup may serve (``PrefixIndex._limit``)
    seen: int = -1  # how many changes to the ranks' holdings its last lookup had seen (``PrefixIndex._changes``)


class PrefixIndex:
    """A ``PrefixView`` for the router (see the module docstring)."""

    def __init__(
        self, ranks: int, *, block_size: int = VLLM_BLOCK, kv_capacity: int | None = None, chars_per_block=None
    ):
        if kv_capacity is not None and kv_capacity < block_size:
            raise ValueError(f"kv_capacity {kv_capacity} is below one block ({block_size} tokens)")
        self.G = ranks
        self.block_size = block_size
        self.chars_per_block = int(chars_per_block or CHARS_PER_TOKEN * block_size)
        self.capacity = kv_capacity
        self.cache = PrefixCache(ranks, block_size, bounded=kv_capacity is not None)
        self._cap_blocks = None if kv_capacity is None else kv_capacity // block_size
        self._req: dict[int, _Entry] = {}
        self._none = np.zeros(ranks, dtype=np.int64)  # the cached tokens of a request the index does not know
        #: the rank (as a bit) of each change to what the ranks hold, after the first ``_base`` (forgotten): a
        #: waiting request's next lookup probes only the ranks that changed since its last one
        self._changes: list[int] = []
        self._base = 0
        self._keep = 4096
        self._pending = np.zeros(ranks, dtype=np.int64)
        self._running_kv = np.zeros(ranks, dtype=np.int64)
        self.prompt_tokens = np.zeros(ranks, dtype=np.int64)  # prompt tokens sent per rank
        self.hit_tokens = np.zeros(ranks, dtype=np.int64)  # of which the index expected the cache to serve

    # ------------------------------------------------------------------ requests
    def hashes_of(self, prompt: str | Sequence[int], prompt_tokens: int) -> tuple[list[int], float]:
        """The prompt's block hashes and the prompt tokens each block stands for."""
        if isinstance(prompt, str):
            hs = text_block_hashes(prompt, self.chars_per_block)
            per = prompt_tokens * self.chars_per_block / max(1, len(prompt.encode("utf-8", "surrogatepass")))
            return hs, per
        return block_hashes(list(prompt), self.block_size), float(self.block_size)

    def arrive(self, rid: int, prompt: str | Sequence[int], prompt_tokens: int) -> None:
        """A request joined the router's pool."""
        hs, per = self.hashes_of(prompt, prompt_tokens)
        e = self._req[rid] = _Entry(hs, int(prompt_tokens), per)
        e.limit = self._limit(e)

    def _limit(self, e: _Entry) -> int:
        """Blocks a lookup may serve: never the last prompt token (the engine recomputes it)."""
        return min(len(e.hashes), int(max(0, e.prompt_tokens - 1) // e.tokens_per_block)) if e.hashes else 0

    def sent(self, rid: int, rank: int) -> int:
        """The request went to ``rank``: its prompt counts as cached there from now on. Returns the prompt tokens
        the index expects the rank to serve from its cache."""
        e = self._req.get(rid)
        if e is None:
            return 0
        if e.rank >= 0:  # a retry on another rank: the first rank's estimate goes
            self._unsend(e)
        lim = e.limit
        k = self.cache.match(rank, e.hashes, lim)
        hit = int(k * e.tokens_per_block)
        e.rank, e.uncached, e.prefilling = rank, max(0, e.prompt_tokens - hit), True
        self.prompt_tokens[rank] += e.prompt_tokens
        self.hit_tokens[rank] += hit
        self._pending[rank] += e.uncached
        self._running_kv[rank] += e.prompt_tokens
        self.cache.insert_free(rank, e.hashes[:lim] if lim else [])
        if self._cap_blocks is not None:
            over = self.cache.resident[rank] - self._cap_blocks
            if over > 0:
                self.cache.evict(rank, over)
        if len(self._changes) >= self._keep:  # lookups that saw fewer changes than this probe every rank
            self._base += len(self._changes)
            self._changes = []
        self._changes.append(1 << rank)
        return hit

    def first_token(self, rid: int) -> None:
        """Its first token came back: its prefill is done."""
        e = self._req.get(rid)
        if e is not None and e.prefilling:
            e.prefilling = False
            self._pending[e.rank] -= e.uncached

    def done(self, rid: int) -> None:
        """The request ended (any outcome); its blocks stay in the rank's estimated cache."""
        e = self._req.pop(rid, None)
        if e is not None and e.rank >= 0:
            self._unsend(e)

    def _unsend(self, e: _Entry) -> None:
        if e.prefilling:
            self._pending[e.rank] -= e.uncached
        self._running_kv[e.rank] -= e.prompt_tokens
        e.rank, e.prefilling = -1, False

    def hit_rates(self) -> list[float]:
        """Per rank: the share of the prompt tokens sent there that the index expected its cache to serve."""
        return [float(h / p) if p else 0.0 for h, p in zip(self.hit_tokens.tolist(), self.prompt_tokens.tolist())]

    # ------------------------------------------------------------------ the PrefixView
    @property
    def pending_prefill(self) -> np.ndarray:
        return self._pending.copy()

    @property
    def kv_free(self) -> np.ndarray:
        if self.capacity is None:
            return np.full(self.G, np.inf)
        return (self.capacity - self._running_kv).astype(np.float64)

    def cached(self, request_ids: np.ndarray) -> np.ndarray:
        G, get, match = self.G, self._req.get, self.cache.match_groups
        log, base = self._changes, self._base
        top = base + len(log)
        since: dict[int, int] = {}  # changes seen -> the ranks changed since (most lookups share one)
        rows = []
        for rid in np.asarray(request_ids).tolist():
            e = get(rid)
            if e is not None and e.hashes:  # a request waits through many dispatches: each lookup starts from the last
                changed = since.get(e.seen)
                if changed is None:
                    changed = since[e.seen] = -1 if e.seen < base else reduce(or_, log[e.seen - base :], 0)
                groups = match(e.hashes, e.limit, hint=e.groups, changed=changed)
                e.seen = top
                if groups is not e.groups or e.depths is None:  # (the same list: nothing it holds changed)
                    e.groups = groups
                    e.depths = (fill_depths(groups, G) * e.tokens_per_block).astype(np.int64)
                rows.append(e.depths)
            else:
                rows.append(self._none)
        return np.array(rows, dtype=np.int64).reshape(len(rows), G)
