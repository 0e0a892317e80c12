"""The settings of one simulated run, and the arrival times they give a workload."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..core.config import setting
from ..core.constants import DEFAULT_SLOTS
from ..core.workload import Workload
from ..engine.config import EngineConfig


class SimulationError(RuntimeError):
    """The run cannot continue: a policy broke the rules or starved the pool."""


#: forwarded requests (``front``): most a rank accepts at once, as a multiple of the slots it runs (beyond that
#: they wait in the router's pool; only a deep overload reaches it)
FORWARD_DEPTH = 64


@dataclass(frozen=True)
class SimConfig:
    """Knobs of one simulated run; every field is recorded in the result JSON."""

    workers: int = setting(8, "G, data-parallel decode workers", flags=("--workers", "-G"), min=1)
    slots: int = setting(
        DEFAULT_SLOTS, "B, max concurrent sequences per worker (vLLM max_num_seqs)", flags=("--slots", "-B"), min=1
    )
    arrival: Literal["replay", "poisson", "saturated"] = setting(
        "replay", "replay (trace timestamps) | poisson (--qps) | saturated (pool topped up to --visible every step)"
    )
    visible: int | None = setting(None, "saturated: requests visible in the pool (default 4·G)", min=1)
    rate_scale: float = setting(1.0, "replay: multiply the trace's arrival rate by k", min=1e-9)
    qps: float | None = setting(
        None, "poisson: arrival rate; replay: resample the trace to this mean rate (req/s)", min=1e-9
    )
    window: Literal["steady", "all"] | None = setting(
        None, "measurement window: steady (up to the last admission) | all (default: steady if saturated, else all)"
    )
    seed: int = setting(0, "seeds arrivals and randomised policies")
    step_time: str = setting(
        "linear_max",
        "step-time model spec: linear_max[:C=…,t_tok=…] | linear_max_mean[:c=…,a=…,b=…] | "
        "linear_seqs[:c=…,a=…,b=…,s=…,r=…] | a step-time file written by `dpbalance calibrate` (FILE.yaml, "
        "or FILE.yaml:model=NAME)",
    )
    energy: str = setting(
        "bfio_power", "energy model spec: bfio_power[:p_idle=…,p_max=…,gamma=…] | busy_idle[:p_busy=…,p_idle=…]"
    )
    prefill_delay_s: float = setting(
        0.0,
        "fixed seconds between arrival and joining the router's pool (a prefill stage in front of decode ranks; "
        "the engine model's --prefill models prefill on the ranks themselves)",
        flags=("--prefill-delay",),
        min=0.0,
    )
    engine: EngineConfig = setting(
        default_factory=EngineConfig,
        doc="the engine model of every rank (prefill, prefix cache, KV capacity)",
        flatten=True,
    )
    front: Literal["auto", "pool", "forward"] = setting(
        "auto",
        "how requests reach the ranks when the engine models prefill: pool holds each one until a rank has a free "
        "slot (dpbalance serve); forward sends it to a rank at once and the rank queues what it cannot run "
        "(--slots, or --max-num-seqs, at a time), as the Rust cache-aware routers, inference gateways and the "
        "engines' own balancers do; auto: each policy as its system runs (forward for those peers' rules, pool "
        "for dpbalance's)",
    )
    max_idle_dispatches: int = setting(100_000, "consecutive empty iterations before failing", cli=False)
    record_stride: int = setting(8, "keep every k-th per-worker load row for plots", cli=False)

    def __post_init__(self):
        if self.workers < 1 or self.slots < 1:
            raise ValueError("workers and slots must be >= 1")
        if self.rate_scale <= 0:
            raise ValueError("rate_scale must be > 0")
        if self.qps is not None and self.qps <= 0:
            raise ValueError("qps must be > 0")
        if self.visible is not None and self.visible < 1:
            raise ValueError("visible must be >= 1")
        if self.prefill_delay_s < 0:
            raise ValueError("prefill_delay_s must be >= 0")
        if self.arrival == "poisson" and self.qps is None:
            raise ValueError("poisson arrivals need qps (--qps)")

    def for_policy(self, policy, requests: int) -> SimConfig:
        """The configuration a run of ``policy`` (a built policy) simulates: with the engine modelling prefill and
        the requests forwarded (``front``), a rank accepts up to ``FORWARD_DEPTH`` × B requests and runs B of them
        (``max_num_seqs``), the rest in its own queue; otherwise this configuration."""
        if not self.forwards(policy):
            return self
        B = self.slots
        run = min(self.engine.max_num_seqs or B, B)
        depth = max(B, min(requests, FORWARD_DEPTH * B))
        return dataclasses.replace(self, slots=depth, engine=dataclasses.replace(self.engine, max_num_seqs=run))

    def forwards(self, policy) -> bool:
        """True when requests go to the ranks at once (see ``front``): only with the engine modelling prefill."""
        if not self.engine.prefill:
            return False
        return self.front == "forward" or (self.front == "auto" and bool(getattr(policy, "forwards", False)))

    @property
    def effective_window(self) -> str:
        return self.window or ("steady" if self.arrival == "saturated" else "all")

    @property
    def effective_visible(self) -> int:
        return self.visible or 4 * self.workers


def arrival_times(w: Workload, cfg: SimConfig) -> np.ndarray | None:
    """Arrival time of every request under the configured mode (None for saturated)."""
    n = len(w)
    if cfg.arrival == "saturated":
        return None
    if cfg.arrival == "poisson":
        rng = np.random.default_rng(cfg.seed)
        gaps = rng.exponential(1.0 / cfg.qps, size=n)
        t = np.cumsum(gaps)
        return t - t[0] if n else t
    if not w.has_timestamps:
        raise SimulationError(
            f"trace {w.name!r} has no arrival times; use --arrival saturated, or --arrival poisson --qps N"
        )
    t = w.arrival.astype(np.float64)
    if cfg.qps is not None and n > 1:
        span = float(t[-1] - t[0])
        if span > 0:
            t = t * ((n - 1) / span) / cfg.qps
    return t / cfg.rate_scale
