"""Learned predictors from a training split's output lengths.

- ``survival``: the empirical output-length distribution, conditioned on age:
  P(alive at h | age a) = #(O > a + h) / #(O > a).
- ``exact_match``: the same on the training samples sharing the request's prompt key, falling back to
  ``survival`` on a miss (or when the key's samples are all shorter than the request's age).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.config import setting
from ..core.workload import NO_KEY, Workload
from .base import need_train


class TailCounts:
    """tail[t] = #(O > t) of an output-length sample, for O(1) conditional survival queries."""

    def __init__(self, outputs: np.ndarray):
        outputs = np.asarray(outputs, dtype=np.int64)
        self.n = len(outputs)
        self.tmax = int(outputs.max()) if self.n else 0
        cnt = np.bincount(outputs, minlength=self.tmax + 2).astype(np.float64)
        self.tail = self.n - np.cumsum(cnt)  # index t: #(O > t), zero from tmax on

    def alive(self, age: np.ndarray, H: int) -> np.ndarray:
        a = np.minimum(np.asarray(age, dtype=np.int64), self.tmax)
        idx = np.minimum(a[:, None] + np.arange(H + 1)[None, :], len(self.tail) - 1)
        t = self.tail[idx]
        base = t[:, :1]
        out = np.divide(t, base, out=np.ones_like(t), where=base > 0)
        # a request older than every training sample: nothing is known, assume it keeps going
        out[base[:, 0] <= 0] = 1.0
        return out


class SurvivalPredictor:
    def __init__(self, cfg=None, train: Workload | None = None):
        self.tails = TailCounts(need_train(train, "survival").output)

    def alive(self, age, key, limit, H, rid=None):
        return self.tails.alive(age, H)


@dataclass(frozen=True)
class ExactMatchConfig:
    min_samples: int = setting(1, "training samples a prompt key needs before it is trusted")


class ExactMatchPredictor:
    """Per-key tail counts; the lookup groups the active requests by key so a step costs O(distinct keys)."""

    def __init__(self, cfg: ExactMatchConfig, train: Workload | None = None):
        train = need_train(train, "exact_match")
        self.fallback = TailCounts(train.output)
        self.by_key: dict[int, TailCounts] = {}
        keyed = train.key != NO_KEY
        if keyed.any():
            keys, inv = np.unique(train.key[keyed], return_inverse=True)
            outs = train.output[keyed]
            order = np.argsort(inv, kind="stable")
            bounds = np.searchsorted(inv[order], np.arange(len(keys) + 1))
            for j, k in enumerate(keys.tolist()):
                sample = outs[order[bounds[j] : bounds[j + 1]]]
                if len(sample) >= cfg.min_samples:
                    self.by_key[k] = TailCounts(sample)

    def alive(self, age, key, limit, H, rid=None):
        age = np.asarray(age)
        out = self.fallback.alive(age, H)
        if not self.by_key:
            return out
        key = np.asarray(key)
        known = np.flatnonzero(key != NO_KEY)
        if len(known) == 0:
            return out
        ukeys, inv = np.unique(key[known], return_inverse=True)
        for j, k in enumerate(ukeys.tolist()):
            tc = self.by_key.get(k)
            if tc is None:
                continue
            rows = known[inv == j]
            a = age[rows]
            ok = tc.tail[np.minimum(a, tc.tmax)] > 0  # the key's samples still say something at this age
            if ok.any():
                out[rows[ok]] = tc.alive(a[ok], H)
        return out
