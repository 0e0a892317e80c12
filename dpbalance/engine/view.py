"""What a policy sees of the engine model: the ``PrefixView`` of ``core.snapshot``, read from the engine."""

from __future__ import annotations

import numpy as np

from .core import Engine


class EngineView:
    """Pending prefill, KV headroom and cached prompt tokens per rank, straight from the engine's state (exact:
    the simulator knows its caches)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.block_size = engine.bs

    @property
    def pending_prefill(self) -> np.ndarray:
        return np.array(self.engine.pending, dtype=np.int64)

    @property
    def kv_free(self) -> np.ndarray:
        return self.engine.kv_free()

    def cached(self, request_ids: np.ndarray) -> np.ndarray:
        e = self.engine
        out = np.zeros((len(request_ids), e.G), dtype=np.int64)
        if e.cache is None:
            return out
        for row, i in enumerate(np.asarray(request_ids).tolist()):
            hl, prompt = e.hashes_of(i), int(e._source[0][i])
            if hl:
                out[row] = e.cache.match_all(hl, e.max_hit_blocks(prompt))
        return out * e.bs
