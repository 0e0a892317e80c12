"""BF-IO (arXiv 2601.17855), SPEC §3.3: balance the future with integer optimisation.

``bfio`` policy: at each dispatch choose a binary assignment x (request × worker, slot caps respected)
minimising the discounted predicted imbalance over h = 0..H,

    Σ_h d_h · ( G·M_h − Σ_g (L[h, g] + Σ_i x_ig·s_i) ),   M_h ≥ L[h, g] + Σ_i x_ig·s_i  for every g,

with L[h, g] the projected loads of the active requests (the BR-H projection, same predictors). It is
solved exactly with HiGHS (``scipy.optimize.milp``) over the first ``candidates_per_slot``·(free slots)
waiting requests when that is small (candidates × workers ≤ ``max_binaries``) within ``time_limit_s``;
it is work-conserving by default (it fills min(free slots, candidates) slots and chooses which requests
go where) because the bare objective prefers admitting nothing whenever an admission raises the envelope.
Otherwise, or when HiGHS finds nothing in time, the dispatch
falls back to the BR-H two-stage driver (the same F-score machinery, documented in balanceroute.py).

``offline_lower_bound``: the whole short trace scheduled jointly with oracle lengths (time-indexed MILP over
start steps), giving the least possible Σ_t M_t (sum of per-step envelopes, i.e. decode time up to the
constant C per step) and idle area Σ_t (G·M_t − Σ_g L_gt) of any schedule that finishes within T steps.
HiGHS's dual bound is reported, so the figure is a valid lower bound even when the solve hits its time limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from ..core.snapshot import Assignment, Snapshot
from ..core.workload import Workload
from .balanceroute import BRHConfig, BalanceRoute, brh_scorer
from .base import POLICIES, PolicyContext


@dataclass(frozen=True)
class BfioConfig(BRHConfig):
    max_binaries: int = field(default=64, metadata={"doc": "solve exactly while candidates × free workers ≤ this"})
    time_limit_s: float = field(default=0.05, metadata={"doc": "HiGHS time limit per dispatch"})
    H: int = field(default=16, metadata={"doc": "lookahead horizon of the integer program (decode steps)"})
    work_conserving: bool = field(
        default=True, metadata={"doc": "admit min(free slots, candidates) requests (off: the IP may hold work back)"})
    candidates_per_slot: int = field(default=8, metadata={"doc": "pool requests considered per free slot"})

    def __post_init__(self):
        super().__post_init__()
        if self.max_binaries < 1 or self.time_limit_s <= 0:
            raise ValueError("need max_binaries >= 1 and time_limit_s > 0")


def solve_step(L: np.ndarray, free: np.ndarray, sizes: np.ndarray, d: np.ndarray, *, work_conserving: bool = False,
               time_limit_s: float = 1.0) -> tuple[np.ndarray | None, float]:
    """Exact step MILP. ``L`` [H+1, G] projected loads, ``free`` [G], ``sizes`` [n], ``d`` [H+1].

    Returns (worker per candidate or −1, objective Σ_h d_h(G·M_h − ΣL'_h)), or (None, nan) if unsolved."""
    Hp1, G = L.shape
    n = len(sizes)
    ws = np.flatnonzero(free > 0)
    k = len(ws)
    nx = n * k
    if n == 0 or k == 0:
        return np.full(n, -1), float(np.sum(d * (G * L.max(1) - L.sum(1))))
    # variables: x[i, j] (i candidate, j index into ws), then M_h
    c = np.concatenate([-np.repeat(sizes, k) * d.sum() * 1.0, G * d])
    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0
    # M_h − Σ_i x_i,j s_i ≥ L[h, ws[j]]
    for h in range(Hp1):
        for j, g in enumerate(ws):
            rows += [r] * (n + 1)
            cols += list(range(j, nx, k)) + [nx + h]
            vals += list(-sizes) + [1.0]
            lo.append(L[h, g])
            hi.append(np.inf)
            r += 1
    for i in range(n):  # each request at most once
        rows += [r] * k
        cols += list(range(i * k, i * k + k))
        vals += [1.0] * k
        lo.append(0.0)
        hi.append(1.0)
        r += 1
    for j, g in enumerate(ws):  # slot caps
        rows += [r] * n
        cols += list(range(j, nx, k))
        vals += [1.0] * n
        lo.append(0.0)
        hi.append(float(free[g]))
        r += 1
    if work_conserving:
        rows += [r] * nx
        cols += list(range(nx))
        vals += [1.0] * nx
        need = float(min(int(free.sum()), n))
        lo.append(need)
        hi.append(need)
        r += 1
    A = coo_matrix((vals, (rows, cols)), shape=(r, nx + Hp1)).tocsr()
    m_lo = L.max(axis=1)  # the envelope never drops below today's loads
    bounds = Bounds(np.concatenate([np.zeros(nx), m_lo]), np.concatenate([np.ones(nx), np.full(Hp1, np.inf)]))
    integrality = np.concatenate([np.ones(nx), np.zeros(Hp1)])
    res = milp(c, constraints=LinearConstraint(A, lo, hi), integrality=integrality, bounds=bounds,
               options={"time_limit": time_limit_s, "disp": False})
    if res.x is None:
        return None, float("nan")
    x = np.round(res.x[:nx]).reshape(n, k)
    choice = np.full(n, -1)
    for i in range(n):
        j = np.flatnonzero(x[i] > 0.5)
        if len(j):
            choice[i] = ws[j[0]]
    return choice, step_objective(L, choice, sizes, d)


def step_objective(L: np.ndarray, choice: np.ndarray, sizes: np.ndarray, d: np.ndarray) -> float:
    """Σ_h d_h (G·M_h − Σ_g L'[h, g]) after adding each chosen request's size to its worker at every h."""
    L2 = L.copy()
    for i, g in enumerate(choice):
        if g >= 0:
            L2[:, g] += sizes[i]
    G = L.shape[1]
    return float(np.sum(d * (G * L2.max(1) - L2.sum(1))))


class BfioPolicy:
    """Exact step MILP on small instances, the BR-H driver otherwise (see module docstring)."""

    def __init__(self, cfg: BfioConfig, ctx: PolicyContext):
        self.cfg = cfg
        self.scorer = brh_scorer(cfg, ctx)
        self.fallback = BalanceRoute(cfg, ctx, self.scorer)
        self.d = cfg.gamma ** np.arange(cfg.H + 1)
        self.solved = 0
        self.fell_back = 0

    def dispatch(self, snap: Snapshot) -> list[Assignment]:
        free = snap.free
        k = int((free > 0).sum())
        if k == 0 or snap.pool_size == 0:
            return []
        n = min(snap.pool_size, int(free.sum()) * self.cfg.candidates_per_slot, self.cfg.max_binaries // k)
        if n >= 1:
            L = self.scorer.project(snap)
            sizes = snap.pool_prompt[:n].astype(np.float64)
            choice, _ = solve_step(L, np.asarray(free), sizes, self.d, work_conserving=self.cfg.work_conserving,
                                   time_limit_s=self.cfg.time_limit_s)
            if choice is not None:
                self.solved += 1
                ids = snap.pool_ids
                return [Assignment(int(ids[i]), int(g)) for i, g in enumerate(choice) if g >= 0]
        self.fell_back += 1
        return self.fallback.dispatch(snap)


@POLICIES.register("bfio", config=BfioConfig,
                   summary="BF-IO: exact step-wise horizon MILP (HiGHS) on small instances, BR-H machinery at scale")
def make_bfio(cfg: BfioConfig, ctx: PolicyContext) -> BfioPolicy:
    return BfioPolicy(cfg, ctx)


# ------------------------------------------------------------------------------ offline lower bound
@dataclass(frozen=True)
class OfflineBound:
    sum_envelope: float  # lower bound on Σ_t M_t over the steps (HiGHS dual bound; = optimum when optimal)
    idle_area: float  # the matching lower bound on Σ_t (G·M_t − Σ_g L_gt)
    best_sum_envelope: float  # the best offline schedule HiGHS found (achievable; nan if none in time)
    best_idle_area: float
    steps: int  # T, the step budget
    optimal: bool  # HiGHS proved optimality: bound == best
    status: str


def offline_lower_bound(w: Workload, workers: int, slots: int, steps: int, *, release: np.ndarray | None = None,
                        time_limit_s: float = 30.0) -> OfflineBound:
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
    for (g, t), items in load_rows.items():
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
    res = milp(c, constraints=LinearConstraint(A, lo, hi),
               integrality=np.concatenate([np.ones(nv), np.zeros(T)]),
               bounds=Bounds(np.zeros(nv + T), np.concatenate([np.ones(nv), np.full(T, np.inf)])),
               options={"time_limit": time_limit_s, "disp": False})
    bound = getattr(res, "mip_dual_bound", None)
    if bound is None or not np.isfinite(bound):
        bound = res.fun if res.status == 0 else float("nan")
    total_load = float(sum(np.sum(s[i] + np.arange(o[i])) for i in range(n)))
    best = float(res.fun) if res.x is not None else float("nan")
    return OfflineBound(sum_envelope=float(bound), idle_area=G * float(bound) - total_load,
                        best_sum_envelope=best, best_idle_area=G * best - total_load, steps=T,
                        optimal=res.status == 0, status=res.message)
