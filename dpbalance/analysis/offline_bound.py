"""The offline lower bound: how far any online policy is from the best schedule of a short trace.

The whole trace is scheduled jointly with oracle lengths (a time-indexed MILP over start steps), giving the least
possible Σ_t M_t (sum of per-step envelopes, i.e. decode time up to the constant C per step) and idle area
Σ_t (G·M_t − Σ_g L_gt) of any schedule that finishes within T steps. HiGHS's dual bound is reported, so the figure
is a valid lower bound even when the solve hits its time limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from ..core.workload import Workload


@dataclass(frozen=True)
class OfflineBound:
    sum_envelope: float  # lower bound on Σ_t M_t over the steps (HiGHS dual bound; = optimum when optimal)
    idle_area: float  # the matching lower bound on Σ_t (G·M_t − Σ_g L_gt)
    best_sum_envelope: float  # the best offline schedule HiGHS found (achievable; nan if none in time)
    best_idle_area: float
    steps: int  # T, the step budget
    optimal: bool  # HiGHS proved optimality: bound == best
    status: str


def offline_lower_bound(
    w: Workload, workers: int, slots: int, steps: int, *, release: np.ndarray | None = None, time_limit_s: float = 30.0
) -> OfflineBound:
    """Least Σ_t M_t of any schedule of ``w`` (oracle lengths, growing loads, slot caps) finishing within
    ``steps`` decode steps; ``release[i]`` is the first step request i may start (default 0: saturated).

    Since Σ_t Σ_g L_gt is the same for every schedule (each request's load sequence is fixed), minimising
    the envelope sum also minimises the idle area, and lower-bounds the decode time C·T + t_tok·Σ_t M_t.
    """
    n, G, T = len(w), workers, steps
    s, o = w.prompt.astype(float), w.output.astype(int)
    rel = np.zeros(n, dtype=int) if release is None else np.asarray(release, dtype=int)
    if np.any(rel + o > T):
        raise ValueError("some request cannot finish within the step budget")
    var = []  # (i, g, t0)
    for i in range(n):
        for g in range(G if i else 1):  # workers are interchangeable: pin the first request to worker 0
            for t0 in range(rel[i], T - o[i] + 1):
                var.append((i, g, t0))
    nv = len(var)
    c = np.concatenate([np.zeros(nv), np.ones(T)])
    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0
    for i in range(n):  # every request starts exactly once
        js = [j for j, v in enumerate(var) if v[0] == i]
        rows += [r] * len(js)
        cols += js
        vals += [1.0] * len(js)
        lo.append(1.0)
        hi.append(1.0)
        r += 1
    load_rows: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for j, (i, g, t0) in enumerate(var):
        for t in range(t0, t0 + o[i]):
            load_rows.setdefault((g, t), []).append((j, s[i] + (t - t0)))
    for (_g, t), items in load_rows.items():
        # M_t − Σ load ≥ 0   and   Σ active ≤ B
        rows += [r] * (len(items) + 1)
        cols += [j for j, _ in items] + [nv + t]
        vals += [-v for _, v in items] + [1.0]
        lo.append(0.0)
        hi.append(np.inf)
        r += 1
        rows += [r] * len(items)
        cols += [j for j, _ in items]
        vals += [1.0] * len(items)
        lo.append(0.0)
        hi.append(float(slots))
        r += 1
    A = coo_matrix((vals, (rows, cols)), shape=(r, nv + T)).tocsr()
    res = milp(
        c,
        constraints=LinearConstraint(A, lo, hi),
        integrality=np.concatenate([np.ones(nv), np.zeros(T)]),
        bounds=Bounds(np.zeros(nv + T), np.concatenate([np.ones(nv), np.full(T, np.inf)])),
        options={"time_limit": time_limit_s, "disp": False},
    )
    bound = getattr(res, "mip_dual_bound", None)
    if bound is None or not np.isfinite(bound):
        bound = res.fun if res.status == 0 else float("nan")
    total_load = float(sum(np.sum(s[i] + np.arange(o[i])) for i in range(n)))
    best = float(res.fun) if res.x is not None else float("nan")
    return OfflineBound(
        sum_envelope=float(bound),
        idle_area=G * float(bound) - total_load,
        best_sum_envelope=best,
        best_idle_area=G * best - total_load,
        steps=T,
        optimal=res.status == 0,
        status=res.message,
    )
