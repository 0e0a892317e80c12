"""The router's Prometheus metrics (its own registry), named next to vLLM-router's and SGLang-router's.

Per-token work never touches a labelled metric: relayed tokens are summed in a plain per-rank array and
exported by a collector at scrape time; rank gauges are refreshed at scrape time too.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from .outcomes import Outcome

OUTCOMES = tuple(o.value for o in Outcome)
_LAT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _TokenCollector:
    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens

    def collect(self):
        c = CounterMetricFamily("dpbalance_generated_tokens", "Tokens relayed from each decode rank", labels=["rank"])
        for g, n in enumerate(self.tokens.tolist()):
            c.add_metric([str(g)], n)
        yield c


class RouterMetrics:
    def __init__(self, G: int):
        self.G = G
        self.tokens = np.zeros(G, dtype=np.int64)  # relayed tokens per rank (hot path: plain array add)
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        reg = self.registry = CollectorRegistry()
        reg.register(_TokenCollector(self.tokens))
        self.requests = Counter(
            "dpbalance_requests",
            "Requests by final outcome (exactly one per request)",
            ["outcome", "reason"],
            registry=reg,
        )
        self.duration = Histogram(
            "dpbalance_request_duration_seconds", "Arrival to final outcome", ["outcome"], buckets=_LAT, registry=reg
        )
        self.ttft = Histogram(
            "dpbalance_time_to_first_token_seconds", "Arrival to the first token relayed", buckets=_LAT, registry=reg
        )
        self.queue_wait = Histogram(
            "dpbalance_queue_wait_seconds", "Arrival to admission to a rank", buckets=_LAT, registry=reg
        )
        self.retries = Counter(
            "dpbalance_retries",
            "Requests placed again after a rank failed before starting them",
            ["rank"],
            registry=reg,
        )
        self.upstream = Counter(
            "dpbalance_upstream_responses", "Rank HTTP answers by status code", ["rank", "code"], registry=reg
        )
        self.rank_failures = Counter(
            "dpbalance_rank_failures", "Failures counted against a rank by the breaker", ["rank", "kind"], registry=reg
        )
        self.cb_state = Gauge(
            "dpbalance_cb_state", "Circuit breaker per rank (0 closed, 1 open, 2 half-open)", ["rank"], registry=reg
        )
        self.cb_transitions = Counter("dpbalance_cb_transitions", "Breaker state changes", ["rank", "to"], registry=reg)
        self.policy_errors = Counter(
            "dpbalance_policy_errors",
            "Policy calls that raised or returned an invalid assignment (the batch was placed by the fallback rule)",
            ["kind"],
            registry=reg,
        )
        self.dispatch = Histogram(
            "dpbalance_dispatch_seconds",
            "Policy dispatch latency (wall)",
            registry=reg,
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2),
        )
        self.dispatcher_alive = Gauge("dpbalance_dispatcher_alive", "1 while the dispatcher task runs", registry=reg)
        self.load = Gauge(
            "dpbalance_rank_load_tokens", "KV tokens held per rank (router accounting)", ["rank"], registry=reg
        )
        self.active = Gauge("dpbalance_rank_active_requests", "Requests running per rank", ["rank"], registry=reg)
        self.free = Gauge("dpbalance_rank_free_slots", "Free slots per rank", ["rank"], registry=reg)
        self.healthy = Gauge("dpbalance_rank_healthy", "1 if the rank is in rotation", ["rank"], registry=reg)
        self.pool = Gauge("dpbalance_pool_size", "Requests waiting in the router", registry=reg)
        self.gap = Gauge("dpbalance_imbalance_gap_tokens", "G·max load − Σ load", registry=reg)
        self.maxmin = Gauge("dpbalance_imbalance_maxmin_tokens", "max load − min load", registry=reg)
        self.prefix_hit = Gauge(
            "dpbalance_rank_prefix_hit_rate",
            "Prefix index (cache-aware policies): share of the prompt tokens sent to the rank expected cached there",
            ["rank"],
            registry=reg,
        )
        self.prefix_pending = Gauge(
            "dpbalance_rank_pending_prefill_tokens",
            "Prefix index (cache-aware policies): uncached prompt tokens sent to the rank, first token not back",
            ["rank"],
            registry=reg,
        )
        for o in OUTCOMES:  # every outcome series exists from the start (sums are well defined)
            self.duration.labels(o)
        for g in range(G):
            self.retries.labels(str(g))

    def finish(self, outcome: str, reason: str, duration_s: float | None = None) -> None:
        self.outcomes[outcome] += 1
        self.requests.labels(outcome, reason).inc()
        if duration_s is not None:
            self.duration.labels(outcome).observe(duration_s)

    def refresh(self, state, in_rotation: np.ndarray, breaker_codes: list[int], pool_size: int, prefix=None) -> None:
        for g in range(self.G):
            lbl = str(g)
            self.load.labels(lbl).set(int(state.loads[g]))
            self.active.labels(lbl).set(int(state.counts[g]))
            self.free.labels(lbl).set(int(state.free[g]))
            self.healthy.labels(lbl).set(int(in_rotation[g]))
            self.cb_state.labels(lbl).set(breaker_codes[g])
        self.pool.set(pool_size)
        if prefix is not None:
            for g, (h, p) in enumerate(zip(prefix.hit_rates(), prefix.pending_prefill.tolist())):
                self.prefix_hit.labels(str(g)).set(h)
                self.prefix_pending.labels(str(g)).set(p)
        loads = state.loads
        self.gap.set(int(self.G * loads.max() - loads.sum()))
        self.maxmin.set(int(loads.max() - loads.min()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
