"""How well an output-length predictor anticipates finishes: AUC of "finishes within H" and the MAE of the
remaining length of the requests that do, on a test split, at ages sampled over each request's life."""

from __future__ import annotations

import numpy as np

from ..core.workload import Workload
from ..predictors import Predictor, finish_stats


def evaluate(predictor: Predictor, test: Workload, H: int = 80, ages_per_request: int = 8, seed: int = 0) -> dict:
    """{"auc", "mae_steps", "samples", "positives", "H"} on ``test`` (never the predictor's training rows)."""
    rng = np.random.default_rng(seed)
    o = np.repeat(test.output, ages_per_request)
    age = np.floor(rng.random(len(o)) * o).astype(np.int64)  # uniform over 0..o−1
    key = np.repeat(test.key, ages_per_request)
    rid = np.repeat(np.arange(len(test)), ages_per_request)
    p, mu = finish_stats(predictor.alive(age, key, o, H, rid=rid))
    rem = o - age
    y = rem <= H
    fin = y & np.isfinite(mu)
    mae = float(np.mean(np.abs(mu[fin] - rem[fin]))) if fin.any() else float("nan")
    return {"auc": auc(y, p), "mae_steps": mae, "samples": int(len(o)), "positives": int(y.sum()), "H": H}


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann–Whitney AUC with ties counted half."""
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # here: importing this module (the CLI does) need not load scipy

    r = rankdata(score)
    return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))
