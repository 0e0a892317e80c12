"""Every routing policy, by name: the one list the CLI, config files, sweeps and the router choose from.

A spec is ``name`` or ``name:key=value,…`` (``brh:predictor=survival,H=40``); an unknown name or option is an
error that lists the valid ones. ``resolve_policy`` checks a spec without building anything and gives its
canonical label (every non-default option, and the predictor of the look-ahead policies always).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..core.specs import Entry, Registry
from .balanceroute import BR0Config, BRHConfig, make_br0, make_brh
from .base import Policy, PolicyContext
from .baselines import FcfsPolicy, JsqCountPolicy, JsqTokensPolicy, PowerOfTwoPolicy, RandomPolicy, RoundRobinPolicy
from .bfio import BfioConfig, make_bfio
from .engine_rules import (
    AdpBalanceConfig,
    AdpBalancePolicy,
    SglangConfig,
    SglangTotalTokensPolicy,
    VllmConfig,
    VllmKvConfig,
    VllmKvPolicy,
    VllmPolicy,
)

POLICIES: Registry[Policy] = Registry(
    "policy",
    "policies",
    entries=[
        Entry("random", RandomPolicy, None, "uniformly random worker with a free slot, FIFO over the pool"),
        Entry("round_robin", RoundRobinPolicy, None, "cycle through workers, skipping full ones, FIFO"),
        Entry("p2c", PowerOfTwoPolicy, None, "two random workers with free slots, the lower token load wins"),
        Entry("jsq_count", JsqCountPolicy, None, "fewest active requests (ties: lowest token load), FIFO"),
        Entry("jsq_tokens", JsqTokensPolicy, None, "lowest token load among workers with free slots, FIFO"),
        Entry("fcfs", FcfsPolicy, None, "BF-IO paper's FCFS: fill worker 0's free slots, then worker 1's, …"),
        Entry("vllm", VllmPolicy, VllmConfig, "vLLM internal DP rule: lowest 4·waiting + running, rotating ties"),
        Entry(
            "vllm_kv",
            VllmKvPolicy,
            VllmKvConfig,
            "vLLM's newer rule: max(inflight, waiting+running) + waiting·6·max(0, kv_usage-0.5)",
        ),
        Entry(
            "sglang_total_tokens",
            SglangTotalTokensPolicy,
            SglangConfig,
            "SGLang total_tokens: lowest held tokens, the new request counted by its prompt length",
        ),
        Entry(
            "adp_balance",
            AdpBalancePolicy,
            AdpBalanceConfig,
            "TensorRT-LLM attention-DP balance: hold new work until every rank can take some, then sort-by-tokens "
            "round-robin",
        ),
        Entry("br0", make_br0, BR0Config, "BalanceRoute BR-0: F = Δ − β(Δ − m_g)₊, placement + packing stages"),
        Entry("brh", make_brh, BRHConfig, "BalanceRoute BR-H: horizon-discounted F over predicted loads"),
        Entry(
            "bfio",
            make_bfio,
            BfioConfig,
            "BF-IO: exact step-wise horizon MILP (HiGHS) on small instances, BR-H machinery at scale",
        ),
    ],
)


@dataclass(frozen=True)
class PolicySpec:
    """A checked policy spec: its registry entry, typed config and canonical label."""

    name: str
    config: Any
    label: str

    def build(self, ctx: PolicyContext) -> Policy:
        entry = POLICIES.entry(self.name)
        return entry.factory(ctx) if self.config is None else entry.factory(self.config, ctx)


def label_of(name: str, cfg: Any) -> str:
    """``name:opt=value,…`` with every option that differs from its default, and every option marked as part of
    the label (the predictor of BR-H and BF-IO) even at its default."""
    if cfg is None:
        return name
    parts = []
    for f in dataclasses.fields(cfg):
        default = f.default if f.default is not dataclasses.MISSING else None
        value = getattr(cfg, f.name)
        if value != default or f.metadata.get("label"):
            parts.append(f"{f.name}={value}")
    return name + (":" + ",".join(parts) if parts else "")


def resolve_policy(spec: str) -> PolicySpec:
    entry, cfg = POLICIES.config_for(spec)
    return PolicySpec(entry.name, cfg, label_of(entry.name, cfg))


def make_policy(spec: str, ctx: PolicyContext) -> Policy:
    """Build a policy from its spec; unknown names/options raise ``SpecError`` listing the valid ones."""
    return resolve_policy(spec).build(ctx)
