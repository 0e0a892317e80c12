"""BF-IO (arXiv 2601.17855): balance the future with integer optimisation.

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

The offline lower bound on a whole trace (all steps jointly) is analysis, not a policy: ``analysis.offline_bound``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.config import setting
from ..core.snapshot import Assignments, Snapshot
from .balanceroute import BalanceRoute, BRHConfig, brh_scorer
from .base import NONE, Policy, PolicyContext


@dataclass(frozen=True)
class BfioConfig(BRHConfig):
    max_binaries: int = setting(64, "solve exactly while candidates × free workers ≤ this")
    time_limit_s: float = setting(0.05, "HiGHS time limit per dispatch")
    H: int = setting(16, "lookahead horizon of the integer program (decode steps)")
    work_conserving: bool = setting(True, "admit min(free slots, candidates) requests (off: the IP may hold work back)")
    candidates_per_slot: int = setting(8, "pool requests considered per free slot")

    def __post_init__(self):
        super().__post_init__()
        if self.max_binaries < 1 or self.time_limit_s <= 0:
            raise ValueError("need max_binaries >= 1 and time_limit_s > 0")


def solve_step(
    L: np.ndarray,
    free: np.ndarray,
    sizes: np.ndarray,
    d: np.ndarray,
    *,
    work_conserving: bool = False,
    time_limit_s: float = 1.0,
) -> tuple[np.ndarray | None, float]:
    """Exact step MILP. ``L`` [H+1, G] projected loads, ``free`` [G], ``sizes`` [n], ``d`` [H+1].

    Returns (worker per candidate or −1, objective Σ_h d_h(G·M_h − ΣL'_h)), or (None, nan) if unsolved."""
    Hp1, G = L.shape
    n = len(sizes)
    ws = np.flatnonzero(free > 0)
    k = len(ws)
    nx = n * k
    if n == 0 or k == 0:
        return np.full(n, -1), float(np.sum(d * (G * L.max(1) - L.sum(1))))
    from scipy.optimize import Bounds, LinearConstraint, milp  # here: the CLI need not load scipy to start
    from scipy.sparse import coo_matrix

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
    res = milp(
        c,
        constraints=LinearConstraint(A, lo, hi),
        integrality=integrality,
        bounds=bounds,
        options={"time_limit": time_limit_s, "disp": False},
    )
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


class BfioPolicy(Policy):
    """Exact step MILP on small instances, the BR-H driver otherwise (see module docstring)."""

    def __init__(self, cfg: BfioConfig, ctx: PolicyContext):
        self.cfg = cfg
        self.scorer = brh_scorer(cfg, ctx)
        self.fallback = BalanceRoute(cfg, ctx.workers, self.scorer)
        self.d = cfg.gamma ** np.arange(cfg.H + 1)
        self.solved = 0
        self.fell_back = 0

    def dispatch(self, snap: Snapshot) -> Assignments:
        free = snap.free
        k = int((free > 0).sum())
        if k == 0 or snap.pool_size == 0:
            return NONE
        n = min(snap.pool_size, int(free.sum()) * self.cfg.candidates_per_slot, self.cfg.max_binaries // k)
        if n >= 1:
            L = self.scorer.project(snap)
            sizes = snap.pool_prompt[:n].astype(np.float64)
            choice, _ = solve_step(
                L,
                np.asarray(free),
                sizes,
                self.d,
                work_conserving=self.cfg.work_conserving,
                time_limit_s=self.cfg.time_limit_s,
            )
            if choice is not None:
                self.solved += 1
                placed = np.flatnonzero(choice >= 0)
                return Assignments(snap.pool_ids[placed], choice[placed])
        self.fell_back += 1
        return self.fallback.dispatch(snap)
