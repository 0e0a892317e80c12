"""Every routing policy, by name: the one list the CLI, config files, sweeps and the router choose from, and
``PolicySpec``, the typed, checked form of a policy choice that they all carry.

A spec is ``name`` or ``name:key=value,…`` (``brh:predictor=survival,H=40``). It is parsed once, where it
enters (a command-line option, a config file, a grid cell), into a ``PolicySpec``: the registry entry, the typed
config, and the canonical label (every non-default option, and the predictor of the look-ahead policies
always). Everything downstream — the simulator, the sweep's cells and cache keys, the reports, the router —
works with that object, never with the string.

Adding a policy: write its module (a config dataclass made of ``setting`` fields, and a ``Policy`` subclass
whose constructor takes ``(config, ctx)``), then add one ``PolicyEntry`` line below. ``docs/policies.md`` walks
through an example that the tests run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..core.config import build
from ..core.specs import Entry, Registry, SpecError
from .balanceroute import BR0Config, BRHConfig, make_br0, make_brh
from .base import NoOptions, Policy, PolicyContext
from .baselines import FcfsPolicy, JsqCountPolicy, JsqTokensPolicy, PowerOfTwoPolicy, RandomPolicy, RoundRobinPolicy
from .bfio import BfioConfig, BfioPolicy
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
from .prefix import (
    BrpConfig,
    BrpPolicy,
    CacheAwarePolicy,
    DynamoKvConfig,
    DynamoKvPolicy,
    LlmdPrefixConfig,
    LlmdPrefixPolicy,
    PrebleConfig,
    PreblePolicy,
    PrefixAffinityPolicy,
    SessionHashConfig,
    SessionHashPolicy,
    SglangCacheAwareConfig,
    VllmRouterCacheAwareConfig,
)

#: how a policy's decision time grows: "simple" rules are a heap or a scan per request, "search" policies score
#: candidate subsets (cost grows with the pool and G), "solver" policies solve an integer program per call
Cost = Literal["simple", "search", "solver"]


@dataclass(frozen=True)
class PolicyEntry(Entry[Policy]):
    """A registered policy. ``factory(config, ctx)`` builds it; ``family`` groups related rules in reports
    (baseline, engine, balanceroute, bfio, prefix); ``source`` says where its rule comes from; ``reads_prefix``:
    it reads ``Snapshot.prefix`` (the ranks' prefix caches and pending prefill), so the router keeps its prefix
    index for it."""

    factory: Callable[[Any, PolicyContext], Policy]
    family: str = "baseline"
    cost: Cost = "simple"
    source: str = ""
    reads_prefix: bool = False


def _e(name, factory, config_cls, summary, family, cost="simple", source="", reads_prefix=None):
    """An entry; the prefix family reads the prefix view by definition, others say so with ``reads_prefix``."""
    reads = family == "prefix" if reads_prefix is None else reads_prefix
    return PolicyEntry(name, factory, config_cls or NoOptions, summary, family, cost, source, reads)


POLICIES: Registry[Policy] = Registry(
    "policy",
    "policies",
    entries=[
        _e("random", RandomPolicy, None, "uniformly random worker with a free slot, FIFO over the pool", "baseline"),
        _e("round_robin", RoundRobinPolicy, None, "cycle through workers, skipping full ones, FIFO", "baseline"),
        _e(
            "p2c",
            PowerOfTwoPolicy,
            None,
            "two random workers with free slots, the lower token load wins",
            "baseline",
            source="power of two choices (Mitzenmacher 2001); ties as vllm-router's power_of_two",
        ),
        _e("jsq_count", JsqCountPolicy, None, "fewest active requests (ties: lowest token load), FIFO", "baseline"),
        _e("jsq_tokens", JsqTokensPolicy, None, "lowest token load among workers with free slots, FIFO", "baseline"),
        _e(
            "fcfs",
            FcfsPolicy,
            None,
            "BF-IO paper's FCFS: fill worker 0's free slots, then worker 1's, …",
            "baseline",
            source="BF-IO (arXiv 2601.17855), its FCFS baseline",
        ),
        _e(
            "vllm",
            VllmPolicy,
            VllmConfig,
            "vLLM internal DP rule: lowest 4·waiting + running, rotating ties",
            "engine",
            source="vLLM v1 DP coordinator (vllm/v1/engine/core_client.py)",
        ),
        _e(
            "vllm_kv",
            VllmKvPolicy,
            VllmKvConfig,
            "vLLM's newer rule: max(inflight, waiting+running) + waiting·6·max(0, kv_usage-0.5)",
            "engine",
            source="vLLM v1 DP load balancing with KV usage",
        ),
        _e(
            "sglang_total_tokens",
            SglangTotalTokensPolicy,
            SglangConfig,
            "SGLang total_tokens: lowest held tokens, the new request counted by its prompt length",
            "engine",
            source="SGLang data_parallel_controller.py, load_balance_method=total_tokens",
        ),
        _e(
            "adp_balance",
            AdpBalancePolicy,
            AdpBalanceConfig,
            "TensorRT-LLM attention-DP balance: hold new work until every rank can take some, then sort-by-tokens "
            "round-robin",
            "engine",
            source="TensorRT-LLM tech blog 10, ADP balance strategy",
        ),
        _e(
            "br0",
            make_br0,
            BR0Config,
            "BalanceRoute BR-0: F = Δ − β(Δ − m_g)₊, placement + packing stages",
            "balanceroute",
            "search",
            "BalanceRoute (arXiv 2605.06113), BR-0",
        ),
        _e(
            "brh",
            make_brh,
            BRHConfig,
            "BalanceRoute BR-H: horizon-discounted F over predicted loads",
            "balanceroute",
            "search",
            "BalanceRoute (arXiv 2605.06113), BR-H",
        ),
        _e(
            "brp",
            BrpPolicy,
            BrpConfig,
            "BalanceRoute with prefill: lowest β·(W_g+Δ_ig−M)₊ + λ·Δ_ig, W = decode load + queued prefill, "
            "Δ = prompt + the prefill it leaves after cache hits (BR-0 exactly when prefill is off)",
            "balanceroute",
            "search",
            "dpbalance: BR-0's objective extended to prefill after cache hits",
            reads_prefix=True,
        ),
        _e(
            "prefix_affinity",
            PrefixAffinityPolicy,
            None,
            "longest cached prefix among free workers, ties by lowest token load",
            "prefix",
            source="pure locality: the longest cached prefix, as cache-aware routers place below their thresholds",
        ),
        _e(
            "sglang_cache_aware",
            CacheAwarePolicy,
            SglangCacheAwareConfig,
            "shortest queue if max−min > 64 and max > 1.5·min requests; else best match if > 0.3 of the prompt; "
            "else smallest tree",
            "prefix",
            source="sgl-router policies/cache_aware.rs, sglang-router CLI defaults",
        ),
        _e(
            "vllm_router_cache_aware",
            CacheAwarePolicy,
            VllmRouterCacheAwareConfig,
            "SGLang's cache_aware rule with the gateway library defaults 0.5 / 32 / 1.1",
            "prefix",
            source="vllm-project/router (fork of sgl-router) cache_aware, CacheAwareConfig::default: its text-tree "
            "rule (vllm-router 0.1.17 matches token blocks, and routes by load when it cannot tokenize a prompt)",
        ),
        _e(
            "dynamo_kv",
            DynamoKvPolicy,
            DynamoKvConfig,
            "lowest prefill_load_scale·(pending + new − overlap blocks) + decode blocks; temperature 0: argmin",
            "prefix",
            source="NVIDIA Dynamo KV router (router-concepts.md), overlap_score_weight 1.0",
        ),
        _e(
            "llmd_prefix",
            LlmdPrefixPolicy,
            LlmdPrefixConfig,
            "max 3·prefix match + 2·queue score + 2·(1 − KV usage), scores in [0, 1], random ties",
            "prefix",
            source="llm-d inference scheduler default profile (prefix-cache, queue, kv-cache-utilization)",
        ),
        _e(
            "preble",
            PreblePolicy,
            PrebleConfig,
            "E2: exploit the longest match if cached > half the prompt, else lowest prefill + decode load",
            "prefix",
            source="Preble (ICLR 2025, WukLab/preble), E2 scheduling",
        ),
        _e(
            "session_hash",
            SessionHashPolicy,
            SessionHashConfig,
            "consistent hash ring (160 virtual nodes) on the first block hash (else prompt key), next free clockwise",
            "prefix",
            source="vllm-router consistent_hash; session identity = first block hash",
        ),
        _e(
            "vllm_dp",
            VllmPolicy,
            VllmConfig,
            "vLLM's internal DP balancer: lowest 4·waiting + running, rotating ties (the `vllm` rule)",
            "engine",
            source="vLLM v1 DPLBAsyncMPClient.get_core_engine_for_request (core_client.py)",
        ),
        _e(
            "bfio",
            BfioPolicy,
            BfioConfig,
            "BF-IO: exact step-wise horizon MILP (HiGHS) on small instances, BR-H machinery at scale",
            "bfio",
            "solver",
            "BF-IO (arXiv 2601.17855)",
        ),
    ],
)


def label_of(name: str, cfg: Any) -> str:
    """``name:opt=value,…`` with every option that differs from its default, and every option marked as part of
    the label (the predictor of BR-H and BF-IO) even at its default."""
    parts = []
    for f in dataclasses.fields(cfg) if cfg is not None else ():
        default = f.default if f.default is not dataclasses.MISSING else None
        value = getattr(cfg, f.name)
        if value != default or f.metadata.get("label"):
            parts.append(f"{f.name}={value}")
    return name + (":" + ",".join(parts) if parts else "")


@dataclass(frozen=True)
class PolicySpec:
    """A checked policy choice: its registry entry and typed config. Equal specs have equal labels."""

    entry: PolicyEntry
    config: Any

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        """The spec of ``name`` or ``name:key=value,…``; unknown names or options raise ``SpecError`` listing the
        valid ones."""
        if isinstance(text, PolicySpec):
            return text
        entry, cfg = POLICIES.config_for(text)
        return cls(entry, cfg)

    # ------------------------------------------------------------------ what it is
    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def label(self) -> str:
        """The canonical spec string (parses back to an equal spec)."""
        return label_of(self.entry.name, self.config)

    @property
    def family(self) -> str:
        return self.entry.family

    @property
    def cost(self) -> Cost:
        return self.entry.cost

    @property
    def reads_prefix(self) -> bool:
        """It reads the prefix view (the router then keeps its prefix index on ``--prefix-index auto``)."""
        return self.entry.reads_prefix

    @property
    def predictor(self) -> str | None:
        """The output-length predictor, for the policies that take one."""
        return getattr(self.config, "predictor", None)

    @property
    def takes_predictor(self) -> bool:
        return any(f.name == "predictor" for f in dataclasses.fields(self.config))

    @property
    def variant(self) -> str:
        """The policy with its predictor and nothing else (what decides its cost per decision)."""
        return self.name + (f":predictor={self.predictor}" if self.predictor else "")

    def __str__(self) -> str:
        return self.label

    # ------------------------------------------------------------------ changing and building
    def replace(self, **options: Any) -> PolicySpec:
        """The same policy with these options changed (typed values, or strings as in a spec)."""
        current = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config) if f.init}
        cfg = build(
            type(self.config), {**current, **options}, f"policy {self.name!r}: ", kind="option", error=SpecError
        )
        return PolicySpec(self.entry, cfg)

    def with_predictor(self, predictor: str | None) -> PolicySpec:
        """This spec with ``predictor`` if the policy takes one (a sweep's predictor axis); unchanged otherwise."""
        if predictor is None or not self.takes_predictor:
            return self
        return self.replace(predictor=predictor)

    def build(self, ctx: PolicyContext) -> Policy:
        return self.entry.factory(self.config, ctx)


def make_policy(spec: str | PolicySpec, ctx: PolicyContext) -> Policy:
    """Build a policy from its spec; unknown names/options raise ``SpecError`` listing the valid ones."""
    return PolicySpec.parse(spec).build(ctx)


__all__ = ["POLICIES", "PolicyEntry", "PolicySpec", "label_of", "make_policy"]
