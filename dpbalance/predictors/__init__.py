"""Output-length predictors for BR-H: ĉ_i ≈ E[min(r_i, H)], the expected steps (within the next H) that an
active request keeps contributing load, and p_fin = P(finish within H | age).

All predictors are fitted on a *training* workload (never the replayed requests) and evaluated vectorised
over the active set: ``predict(age, key, limit, H) -> (c_hat, p_fin, mu_rem)``.

- ``oracle``: the true remaining length (the simulator's ``limit`` = o_i; the router's = max_tokens),
  optionally with multiplicative noise o·U[1−δ, 1+δ] fixed per request (as in the BF-IO experiments).
- ``survival``: the empirical output-length distribution S(t) = P(O > t) of the training split, conditioned
  on age: p_fin = (S(a) − S(a+H))/S(a), μ_rem = E[O − a | a < O ≤ a+H].
- ``exact_match``: the same formulas on the training samples that share the request's prompt key, falling
  back to ``survival`` on a miss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.specs import Registry
from ..core.workload import NO_KEY, Workload


class PredictorError(ValueError):
    """A predictor cannot be built (e.g. it needs a training split and none was given)."""


class Predictor:
    name = "predictor"

    def predict(self, age: np.ndarray, key: np.ndarray, limit: np.ndarray, H: int, rid: np.ndarray | None = None):
        """(ĉ, p_fin, μ_rem) arrays for requests of this age (tokens generated so far)."""
        raise NotImplementedError


PREDICTORS: Registry[Predictor] = Registry("predictor")


@dataclass(frozen=True)
class OracleConfig:
    noise: float = field(default=0.0, metadata={"doc": "δ: o_est = o·U[1−δ, 1+δ], fixed per request"})
    seed: int = field(default=0, metadata={"doc": "seed of the noise"})

    def __post_init__(self):
        if not 0.0 <= self.noise < 1.0:
            raise ValueError("noise must be in [0, 1)")


def _uniform_by_id(rid: np.ndarray, seed: int) -> np.ndarray:
    """A stable U[0,1) per request id (so noisy estimates don't change from step to step)."""
    x = (rid.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@PREDICTORS.register("oracle", config=OracleConfig, summary="true remaining length (upper bound); optional noise δ")
class OraclePredictor(Predictor):
    def __init__(self, cfg: OracleConfig, train: Workload | None = None):
        self.cfg = cfg

    def predict(self, age, key, limit, H, rid=None):
        o = limit.astype(np.float64)
        if self.cfg.noise > 0:
            if rid is None:
                raise ValueError("noisy oracle needs request ids")
            u = _uniform_by_id(np.asarray(rid), self.cfg.seed)
            o = np.round(o * (1 - self.cfg.noise + 2 * self.cfg.noise * u))
        rem = np.maximum(o - age, 1.0)
        fin = rem <= H
        c_hat = np.minimum(rem, H)
        return c_hat, fin.astype(np.float64), np.where(fin, rem, np.nan)


class _Empirical:
    """Tail counts and partial sums of an output-length sample, for O(1) conditional queries."""

    def __init__(self, outputs: np.ndarray):
        outputs = np.asarray(outputs, dtype=np.int64)
        self.n = len(outputs)
        self.tmax = int(outputs.max()) if self.n else 0
        cnt = np.bincount(outputs, minlength=self.tmax + 1).astype(np.float64)
        # tail[t] = #(O > t); psum[t] = Σ_{O <= t} O
        self.tail = self.n - np.cumsum(cnt)
        self.psum = np.cumsum(cnt * np.arange(self.tmax + 1))

    def query(self, age: np.ndarray, H: int):
        a = np.minimum(age.astype(np.int64), self.tmax)
        b = np.minimum(a + H, self.tmax)
        alive = self.tail[a]
        n_fin = alive - self.tail[b]
        s_fin = self.psum[b] - self.psum[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(alive > 0, n_fin / np.maximum(alive, 1), 0.0)
            mu = np.where(n_fin > 0, s_fin / np.maximum(n_fin, 1) - age, np.nan)
            c = np.where(alive > 0, ((alive - n_fin) * H + (s_fin - age * n_fin)) / np.maximum(alive, 1), float(H))
        # a request older than every training sample: nothing known, assume it keeps going
        return np.clip(c, 1.0, float(H)) if H >= 1 else np.ones_like(c), p, mu


def _need_train(train: Workload | None, name: str) -> Workload:
    if train is None or len(train) == 0:
        raise PredictorError(
            f"predictor {name!r} needs a training split of requests that are not replayed: use --max-requests "
            "smaller than the trace (later rows train), or --train-split F; or use predictor=oracle"
        )
    return train


@PREDICTORS.register("survival", summary="empirical output-length distribution of the training split, conditioned on age")
class SurvivalPredictor(Predictor):
    def __init__(self, cfg=None, train: Workload | None = None):
        self.emp = _Empirical(_need_train(train, "survival").output)

    def predict(self, age, key, limit, H, rid=None):
        return self.emp.query(np.asarray(age), H)


@dataclass(frozen=True)
class ExactMatchConfig:
    min_samples: int = field(default=1, metadata={"doc": "training samples a prompt key needs before it is trusted"})


@PREDICTORS.register("exact_match", config=ExactMatchConfig,
                     summary="per-prompt-key empirical distribution, falling back to survival")
class ExactMatchPredictor(Predictor):
    def __init__(self, cfg: ExactMatchConfig, train: Workload | None = None):
        train = _need_train(train, "exact_match")
        self.fallback = _Empirical(train.output)
        self.by_key: dict[int, _Empirical] = {}
        keyed = train.key != NO_KEY
        if keyed.any():
            keys, inv = np.unique(train.key[keyed], return_inverse=True)
            outs = train.output[keyed]
            order = np.argsort(inv, kind="stable")
            bounds = np.searchsorted(inv[order], np.arange(len(keys) + 1))
            for j, k in enumerate(keys):
                sample = outs[order[bounds[j]:bounds[j + 1]]]
                if len(sample) >= cfg.min_samples:
                    self.by_key[int(k)] = _Empirical(sample)

    def predict(self, age, key, limit, H, rid=None):
        age = np.asarray(age)
        c, p, mu = self.fallback.query(age, H)
        if self.by_key:
            for i in np.flatnonzero(key != NO_KEY):
                emp = self.by_key.get(int(key[i]))
                if emp is not None and emp.tail[min(int(age[i]), emp.tmax)] > 0:
                    ci, pi, mi = emp.query(age[i : i + 1], H)
                    c[i], p[i], mu[i] = ci[0], pi[0], mi[0]
        return c, p, mu


def make_predictor(spec: str, train: Workload | None = None) -> Predictor:
    entry, cfg = PREDICTORS.config_for(spec)
    p = entry.factory(cfg, train=train)
    p.name = entry.name
    return p


def evaluate(predictor: Predictor, test: Workload, H: int = 80, ages_per_request: int = 8, seed: int = 0) -> dict:
    """AUC of "finishes within H" and MAE of μ_rem (steps) on the test requests, at sampled ages."""
    rng = np.random.default_rng(seed)
    o = np.repeat(test.output, ages_per_request)
    age = np.floor(rng.random(len(o)) * o).astype(np.int64)  # uniform over 0..o−1
    key = np.repeat(test.key, ages_per_request)
    rid = np.repeat(np.arange(len(test)), ages_per_request)
    _, p, mu = predictor.predict(age, key, o, H, rid=rid)
    rem = o - age
    y = rem <= H
    auc = _auc(y, p)
    fin = y & np.isfinite(mu)
    mae = float(np.mean(np.abs(mu[fin] - rem[fin]))) if fin.any() else float("nan")
    return {"auc": auc, "mae_steps": mae, "samples": int(len(o)), "positives": int(y.sum()), "H": H}


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann–Whitney AUC with ties counted half."""
    from scipy.stats import rankdata

    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


__all__ = ["PREDICTORS", "Predictor", "PredictorError", "evaluate", "make_predictor"]
