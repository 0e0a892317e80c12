"""dynamo_kv: NVIDIA Dynamo's KV router cost (``docs/components/router/router-concepts.md``, the KV router's
worker selector): for each worker, in blocks of ``block_size`` tokens,

    logit_g = prefill_load_scale · prefill_blocks_g + decode_blocks_g
    prefill_blocks_g = (pending prefill_g + prompt − cached_g) / block_size   (its active prefill plus the new
                       blocks the request would compute there, after its overlap with the worker's cache)
    decode_blocks_g  = (KV tokens of its active requests + prompt) / block_size

``prefill_load_scale`` is Dynamo's ``overlap_score_weight`` (``--kv-overlap-score-weight``, default 1.0). With
``temperature`` 0 (Dynamo's default) the lowest logit wins, ties at random (seeded); above 0 a worker is drawn
with probability ∝ exp(−ℓ_g / temperature) on logits normalised to [0, 1] by their range. Without a prefix view
the overlap and pending prefill are zero and the rule is the lowest token load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.config import setting
from ..base import PolicyContext
from .common import PrefixFifo, Scratch, pick_random


@dataclass(frozen=True)
class DynamoKvConfig:
    prefill_load_scale: float = setting(1.0, "weight of prefill blocks against decode blocks (overlap_score_weight)")
    temperature: float = setting(0.0, "softmax temperature over normalised logits (0: argmin)", min=0.0)

    def __post_init__(self):
        if self.prefill_load_scale < 0:
            raise ValueError("prefill_load_scale must be >= 0")


class DynamoKvPolicy(PrefixFifo):
    def __init__(self, cfg: DynamoKvConfig, ctx: PolicyContext):
        self.cfg = cfg
        self.rng = np.random.default_rng(ctx.seed)

    def logits(self, sc: Scratch, i: int, s: float) -> np.ndarray:
        bs = sc.block_size
        prefill = (sc.pending + s - sc.hit[i]) / bs
        decode = (sc.loads + s) / bs
        return self.cfg.prefill_load_scale * prefill + decode

    def choose(self, sc: Scratch, i: int, s: float) -> int:
        logit = self.logits(sc, i, s)
        if self.cfg.temperature <= 0:
            return pick_random(sc.free, logit, self.rng)
        ok = np.flatnonzero(sc.free > 0)
        v = logit[ok]
        span = float(v.max() - v.min())
        z = (v - v.min()) / span if span > 0 else np.zeros_like(v)
        p = np.exp(-z / self.cfg.temperature)
        return int(ok[self.rng.choice(len(ok), p=p / p.sum())])
