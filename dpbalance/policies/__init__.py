"""Routing policies: one registry, one contract (``dispatch(snapshot) -> assignments``)."""

from . import baselines  # noqa: F401  (registers the baseline family)
from .base import POLICIES, FifoPolicy, Policy, PolicyContext, describe_policies, make_policy, policy_names

try:  # the BalanceRoute / BF-IO family registers itself when present
    from . import balanceroute  # noqa: F401
except ImportError as _exc:  # pragma: no cover - only while that module is being written
    if "balanceroute" not in str(_exc):
        raise

#: the policy the router and the README use unless told otherwise
DEFAULT_POLICY = "br0"

__all__ = ["DEFAULT_POLICY", "POLICIES", "FifoPolicy", "Policy", "PolicyContext", "describe_policies", "make_policy", "policy_names"]
