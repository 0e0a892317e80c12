"""Core model shared by every other room: workload, cluster state, pool, snapshot, balance metrics."""

from .metrics import balance_ratio, envelope, idle_fraction, imbalance_gap, imbalance_maxmin, margins
from .snapshot import ActiveView, Assignment, Assignments, Snapshot
from .specs import Registry, SpecError, build_config, parse_spec, split_specs
from .state import ClusterState, Pool, StateError
from .workload import NO_KEY, Workload

__all__ = [
    "ActiveView",
    "Assignment",
    "Assignments",
    "ClusterState",
    "NO_KEY",
    "Pool",
    "Registry",
    "Snapshot",
    "SpecError",
    "StateError",
    "Workload",
    "balance_ratio",
    "build_config",
    "envelope",
    "idle_fraction",
    "imbalance_gap",
    "imbalance_maxmin",
    "margins",
    "parse_spec",
    "split_specs",
]
