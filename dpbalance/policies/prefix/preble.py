"""preble: Preble's E2 rule (Srivatsa et al., ICLR 2025, ``WukLab/preble``): exploit or explore per request.

If the longest cached prefix on any worker is longer than the part of the prompt that would still be computed
(cached fraction > ``threshold``, 0.5 in the paper: "cached part longer than the new part"), *exploit*: the
worker with the longest cached prefix (ties: the lowest load below). Otherwise *explore*: the worker with the
lowest load, where load = its pending prefill tokens + the tokens this request would prefill there +
``decode_weight`` · its KV tokens — Preble's windowed prefill time plus decode time, both in prefill-token
equivalents (``decode_weight`` 0.1 ≈ t_tok / prefill_tok of the default step-time model × a 100-step window;
Preble's eviction-cost term is left out). Without a prefix view every request explores by token load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.config import setting
from ..base import PolicyContext
from .common import PrefixFifo, Scratch, pick


@dataclass(frozen=True)
class PrebleConfig:
    threshold: float = setting(0.5, "exploit when the cached fraction of the prompt exceeds this", min=0.0, max=1.0)
    decode_weight: float = setting(0.1, "prefill-token equivalents of one KV token of decode load", min=0.0)


class PreblePolicy(PrefixFifo):
    def __init__(self, cfg: PrebleConfig, ctx: PolicyContext):
        self.cfg = cfg

    def choose(self, sc: Scratch, i: int, s: float) -> int:
        hit = sc.hit[i]
        load = sc.pending + (s - hit) + self.cfg.decode_weight * sc.loads
        best = float(np.where(sc.free > 0, hit, -1.0).max())
        if s > 0 and best / s > self.cfg.threshold:
            return pick(sc.free, -hit, load)
        return pick(sc.free, load)
