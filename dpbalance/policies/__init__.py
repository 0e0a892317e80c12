"""Routing policies: one contract (``Policy.dispatch(snapshot) -> Assignments``), one registry of every policy,
and ``PolicySpec``, the typed policy choice every other room carries."""

from .base import NONE, FifoPolicy, LowestKeyPolicy, NoOptions, Policy, PolicyContext, assign
from .registry import POLICIES, PolicyEntry, PolicySpec, label_of, make_policy

#: the policy the router and the README use unless told otherwise
DEFAULT_POLICY = "brp"

__all__ = [
    "DEFAULT_POLICY",
    "NONE",
    "POLICIES",
    "FifoPolicy",
    "LowestKeyPolicy",
    "NoOptions",
    "Policy",
    "PolicyContext",
    "PolicyEntry",
    "PolicySpec",
    "assign",
    "label_of",
    "make_policy",
]
