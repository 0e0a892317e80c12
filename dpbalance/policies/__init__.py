"""Routing policies: one contract (``dispatch(snapshot) -> assignments``), one registry of every policy."""

from .base import FifoPolicy, Policy, PolicyContext
from .registry import POLICIES, PolicySpec, label_of, make_policy, resolve_policy

#: the policy the router and the README use unless told otherwise
DEFAULT_POLICY = "br0"

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "FifoPolicy",
    "Policy",
    "PolicyContext",
    "PolicySpec",
    "label_of",
    "make_policy",
    "resolve_policy",
]
