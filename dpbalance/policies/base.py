"""The policy contract and registry.

A policy is pure decision logic: ``dispatch(snapshot) -> list[Assignment]``. It may keep internal
state across calls (a round-robin pointer, a seeded RNG, iteration counters) but does no I/O, reads
no clock and never mutates the snapshot. The simulator and the router construct policies the same
way, from a spec string such as ``brh:predictor=survival,H=40``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..core.snapshot import Assignment, Snapshot
from ..core.specs import Registry, spec_string
from ..core.workload import Workload


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the deployment when it is built."""

    workers: int
    slots: int
    seed: int = 0
    #: requests a predictor may learn from (never the replayed ones); None when unavailable
    train: Workload | None = field(default=None, repr=False, compare=False)


@runtime_checkable
class Policy(Protocol):
    name: str

    def dispatch(self, snap: Snapshot) -> list[Assignment]: ...


POLICIES: Registry[Policy] = Registry("policy", "policies")


def make_policy(spec: str, ctx: PolicyContext) -> Policy:
    """Build a policy from its spec; unknown names/options raise ``SpecError`` listing valid ones."""
    entry, cfg = POLICIES.config_for(spec)
    policy = entry.factory(ctx) if cfg is None else entry.factory(cfg, ctx)
    policy.name = entry.name
    policy.spec = spec_string(entry.name, cfg) if cfg is not None else entry.name
    policy.config = cfg
    return policy


def policy_names() -> list[str]:
    import dpbalance.policies  # noqa: F401  (registers every family)

    return POLICIES.names()


class FifoPolicy:
    """Helper base: walk the pool in FIFO order and place each request with ``choose``.

    Subclasses implement ``choose(loads, counts, free) -> worker`` on scratch copies that this driver
    updates after every placement, so one dispatch can place many requests consistently.
    """

    name = "fifo"

    def dispatch(self, snap: Snapshot) -> list[Assignment]:
        n_free = snap.total_free
        if n_free == 0 or snap.pool_size == 0:
            return []
        ids = snap.pool_ids
        prompt = snap.pool_prompt
        loads = snap.loads.copy()
        counts = snap.counts.copy()
        free = snap.free.copy()
        out: list[Assignment] = []
        self.begin(snap)
        for i in range(min(n_free, len(ids))):
            g = self.choose(loads, counts, free, int(prompt[i]))
            if g < 0:
                break
            out.append(Assignment(int(ids[i]), g))
            loads[g] += prompt[i]
            counts[g] += 1
            free[g] -= 1
        return out

    def begin(self, snap: Snapshot) -> None:  # per-dispatch hook
        pass

    def choose(self, loads: np.ndarray, counts: np.ndarray, free: np.ndarray, prompt: int) -> int:
        raise NotImplementedError


def describe_policies() -> list[tuple[str, str, list[tuple[str, Any, str]]]]:
    import dpbalance.policies  # noqa: F401

    return POLICIES.describe()
