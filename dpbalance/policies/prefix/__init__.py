"""Prefix-aware routing: the cache-aware baselines of other systems and BRP, BalanceRoute with the
prefill a placement leaves to compute. Every policy here reads only the ``Snapshot`` and its ``PrefixView``
(``snap.prefix``), which the simulator fills from its engine model and the router from its prefix index; with
``snap.prefix`` None each falls back to its own load rule."""

from .affinity import PrefixAffinityPolicy
from .brp import BrpConfig, BrpPolicy
from .cache_aware import CacheAwarePolicy, SglangCacheAwareConfig, VllmRouterCacheAwareConfig
from .dynamo import DynamoKvConfig, DynamoKvPolicy
from .llmd import LlmdPrefixConfig, LlmdPrefixPolicy
from .preble import PrebleConfig, PreblePolicy
from .session_hash import SessionHashConfig, SessionHashPolicy

__all__ = [
    "BrpConfig",
    "BrpPolicy",
    "CacheAwarePolicy",
    "DynamoKvConfig",
    "DynamoKvPolicy",
    "LlmdPrefixConfig",
    "LlmdPrefixPolicy",
    "PrebleConfig",
    "PreblePolicy",
    "PrefixAffinityPolicy",
    "SessionHashConfig",
    "SessionHashPolicy",
    "SglangCacheAwareConfig",
    "VllmRouterCacheAwareConfig",
]
