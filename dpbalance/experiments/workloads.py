"""The choices several experiments share: which baselines, which traces, and the anchor workload."""

from __future__ import annotations

from ..policies import POLICIES
from .base import WL, Ctx

#: every simple rule and every engine's own rule, as registered: what our policies are measured against
BASELINES = tuple(e.name for e in POLICIES.entries() if e.family in ("baseline", "engine"))
QUICK_BASELINES = ("random", "round_robin", "p2c", "jsq_count", "jsq_tokens", "vllm", "fcfs")
#: the two papers' baselines (BalanceRoute: random, RR, P2C, JSQ; BF-IO code: FCFS, JSQ-tokens, RR): "best baseline"
#: means the best of these, as in the papers; the engines' built-in rules are reported separately
PAPER_BASELINES = ("random", "round_robin", "p2c", "jsq_count", "jsq_tokens", "fcfs")
ENGINE_RULES = tuple(e.name for e in POLICIES.entries() if e.family == "engine")
#: the BalanceRoute paper's JSQ sends each request to the worker with the fewest active requests
PAPER_JSQ = "jsq_count"
ANCHOR_TRACE = "mooncake-conversation"


def baselines(ctx: Ctx) -> tuple[str, ...]:
    return QUICK_BASELINES if ctx.quick else BASELINES


def main_workloads(ctx: Ctx) -> list[WL]:
    """Every trace found, G = 8 heavy load; the long-output filter (> 1000 tokens) where the trace has enough such
    rows. Without any trace file the bundled sample keeps the report runnable."""
    n = ctx.q(10_000, 1_000)
    cand = [
        ("azure-conv-2024 >1000 (paper's)", "azure-conv-2024", 1001, n),
        ("mooncake-conversation", "mooncake-conversation", None, n),
        ("vidur-arxiv >1000", "vidur-arxiv", 1001, ctx.q(n, 500)),
        ("bfio-arxiv >1000", "bfio-arxiv", 1001, n),
        ("azure-conv-2023", "azure-conv-2023", None, n),
        ("azure-code-2023", "azure-code-2023", None, n),
        ("mooncake-synthetic", "mooncake-synthetic", None, n),
        ("bfio-arxiv", "bfio-arxiv", None, n),
        ("bfio-burst", "bfio-burst", None, n),
        ("bfio-longbench", "bfio-longbench", None, n),
        ("azure-code-2024 >1000", "azure-code-2024", 1001, n),
        ("burstgpt", "burstgpt", None, n),
    ]
    if ctx.quick:
        keep = {"azure-conv-2024", "mooncake-conversation", "vidur-arxiv"}
        cand = [c for c in cand if c[1] in keep and (c[1] != "vidur-arxiv" or c[2])]
    out = [ctx.held_out(*c) for c in cand if c[1] in ctx.traces]
    if not out:
        ctx.note(
            "main",
            "No trace directory found: only the bundled `sample` trace (first 2,000 "
            "mooncake-conversation requests) was used.",
        )
        out = [ctx.held_out("sample (bundled)", "sample", None, ctx.q(1500, 600))]
    return out


def anchor_wl(ctx: Ctx) -> WL | None:
    """The main-table workload the anchors are checked on (mooncake-conversation), if that trace is here."""
    return next((w for w in main_workloads(ctx) if w.trace == ANCHOR_TRACE), None)


def focus_wl(ctx: Ctx) -> WL:
    """The workload single-trace experiments use: the anchor workload, else the first main-table workload."""
    return anchor_wl(ctx) or main_workloads(ctx)[0]
