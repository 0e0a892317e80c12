"""Every setting of ``dpbalance serve``, defined once: the typed config, its help text, flags and bounds.

The ``serve`` command's options are generated from these fields (``dpbalance.cli.options``), a ``--config``
file uses the same names, and the tests build ``RouterConfig(...)`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..core.config import setting as _f
from ..policies import DEFAULT_POLICY

_RANKS = "Ranks"
_LIMITS = "Limits and timeouts"
_FAULTS = "Health checks and circuit breaker"
_SEC = "Security"
_POL = "Policy"
_OBS = "Recording and dashboard"
#: blocks of the prefix index when the ranks do not say (vLLM's default KV block size on GPUs)
PREFIX_BLOCK_DEFAULT = 16


@dataclass(frozen=True)
class RouterConfig:
    # ---------------------------------------------------------------- where the ranks are
    decode: tuple[str, ...] = _f(
        (),
        "Decode rank base URL, one per data-parallel rank (repeat the flag, or give "
        "several after --worker-urls), e.g. http://127.0.0.1:8001.",
        _RANKS,
        flags=("--decode", "--worker-urls"),
    )
    dp_endpoint: str | None = _f(
        None,
        "DP-endpoint mode: the base URL of one `vllm serve --data-parallel-size N` "
        "API server; each request is pinned to a rank with the X-data-parallel-rank "
        "header (instead of --decode).",
        _RANKS,
    )
    dp_size: int | None = _f(
        None,
        "DP-endpoint mode: the number of ranks behind --dp-endpoint (default: asked from the endpoint's /server_info).",
        _RANKS,
        min=1,
    )
    slots: int | None = _f(
        None,
        "Max running sequences per rank (vLLM's --max-num-seqs). Default: asked from a "
        "rank's /server_info (vLLM serves it with VLLM_SERVER_DEV_MODE=1; engine-sim always).",
        _RANKS,
        min=1,
    )
    prefill: tuple[str, ...] = _f(
        (),
        "PD mode: prefill instance URL (repeat); each request first gets a "
        "max_tokens=1 prefill call with kv_transfer_params, then waits for decode.",
        _RANKS,
    )
    model: str | None = _f(None, "Model name sent upstream when a client gives none.", _RANKS)
    host: str = _f("127.0.0.1", "Bind address (loopback unless you mean it).", _RANKS)
    port: int = _f(8000, "Listen port.", _RANKS, min=0, max=65535)
    # ---------------------------------------------------------------- policy
    policy: str = _f(DEFAULT_POLICY, "Policy spec (see `dpbalance policies`).", _POL, flags=("--policy", "-p"))
    fallback_policy: str = _f(
        "jsq_tokens",
        "Built-in rule that places a batch when the policy raises or returns an "
        "invalid assignment (counted in dpbalance_policy_errors_total).",
        _POL,
    )
    train_trace: str | None = _f(
        None, "Trace (name or file) whose requests train learned predictors, e.g. for brh:predictor=survival.", _POL
    )
    trace_dir: Path | None = _f(None, "Directory of the named traces (default: $DPBALANCE_TRACE_DIR).", _POL)
    tick_ms: float = _f(5.0, "Dispatcher tick in ms; it also runs on every arrival and finish.", _POL, min=0.1)
    dispatch_batch: int = _f(
        64, "Waiting requests one policy call sees; bursts are placed in back-to-back calls.", _POL, min=1
    )
    seed: int = _f(0, "Seed for randomised policies.", _POL)
    tokenize: Literal["rank", "estimate"] = _f(
        "rank", "Prompt length from a rank's /tokenize ('rank') or characters / --chars-per-token ('estimate').", _POL
    )
    chars_per_token: float = _f(
        4.0, "Characters per token for --tokenize estimate (and when /tokenize fails).", _POL, min=0.1
    )
    prefix_index: Literal["auto", "on", "off"] = _f(
        "auto",
        "Keep an index of the prompts sent to each rank, as cached there (what cache-aware policies see); "
        "auto: on for the policies that read it.",
        _POL,
    )
    prefix_block: int | None = _f(
        None,
        "Tokens per block of the prefix index (the engine's KV block size); default: the ranks' (vLLM's "
        f"cache_config_info in /metrics), else {PREFIX_BLOCK_DEFAULT}.",
        _POL,
        min=1,
    )
    prefix_capacity: int | None = _f(
        None,
        "KV tokens per rank the index assumes (its LRU forgets beyond it); default: the ranks' KV cache size (vLLM's "
        "cache_config_info in /metrics), else no limit.",
        _POL,
        min=1,
    )
    step_time: str | None = _f(
        None,
        "The ranks' step-time model: a spec (see `dpbalance simulate --help`) or a file written by `dpbalance "
        "calibrate`. Cost-aware policies (brp) weigh decode load against prefill at its prices; default: the "
        "default model's.",
        _POL,
    )
    # ---------------------------------------------------------------- recording and dashboard
    record: Path | None = _f(
        None,
        "Write every request's arrival time, prompt and output token counts, prompt hash and block hashes "
        "(never the text), rank, policy and outcome to this JSON-lines file when it ends; "
        "`--trace FILE` replays it (see docs/operators.md).",
        _OBS,
    )
    record_max_mb: float = _f(
        256.0, "Rotate the recording at this size (FILE.1, FILE.2, … keep the older ones).", _OBS, min=0.01
    )
    dashboard_history_s: float = _f(
        600.0, "Seconds of history the /dashboard keeps (one sample per second).", _OBS, min=10.0
    )
    # ---------------------------------------------------------------- limits and timeouts
    max_pending: int = _f(10_000, "Requests waiting in the router above which new ones get 429.", _LIMITS, min=1)
    max_body_bytes: int = _f(8 * 1024**2, "Request bodies larger than this get 413.", _LIMITS, min=1024)
    max_tokens_limit: int = _f(
        1_000_000, "Largest max_tokens / max_completion_tokens accepted (else 400).", _LIMITS, min=1
    )
    queue_timeout_s: float = _f(
        5.0, "A waiting request fails with 503 after this many seconds with no rank in rotation.", _LIMITS, min=0.01
    )
    max_wait_s: float = _f(
        600.0, "A waiting request fails with 504 after this many seconds without a slot.", _LIMITS, min=0.01
    )
    upstream_read_timeout_s: float = _f(
        60.0,
        "A rank that sends nothing for this many seconds during a stream "
        "(or before its first byte) fails the request; counts against the rank.",
        _LIMITS,
        min=0.01,
    )
    request_timeout_s: float = _f(1800.0, "Longest non-stream upstream call.", _LIMITS, min=0.01)
    body_timeout_s: float = _f(
        30.0, "A client that does not send its whole body within this many seconds gets 408.", _LIMITS, min=0.01
    )
    client_timeout_s: float = _f(
        60.0, "A streaming client that accepts no data for this many seconds is dropped.", _LIMITS, min=0.01
    )
    shutdown_grace_s: float = _f(
        30.0,
        "On SIGTERM: stop accepting, let running requests finish for this many seconds, then abort and count the rest.",
        _LIMITS,
        min=0.0,
    )
    max_retries: int = _f(
        3, "Times a request that no rank started is placed again after a rank failure.", _LIMITS, min=0
    )
    backoff_s: float = _f(0.05, "First retry backoff (doubles per attempt, at most 1 s).", _LIMITS, min=0.0)
    # ---------------------------------------------------------------- faults
    health_interval_s: float = _f(
        1.0, "Seconds between health checks of every rank (run concurrently).", _FAULTS, min=0.01
    )
    health_timeout_s: float = _f(2.0, "Health check timeout.", _FAULTS, min=0.01)
    cb_failure_threshold: int = _f(
        3,
        "Consecutive failures (connection errors, timeouts, 5xx, failed health checks) "
        "that take a rank out of rotation.",
        _FAULTS,
        min=1,
    )
    cb_timeout_s: float = _f(
        2.0,
        "Seconds an open breaker waits before a health check may close it again (half-open probe).",
        _FAULTS,
        min=0.0,
    )
    # ---------------------------------------------------------------- security
    api_key: str | None = _f(
        None, "Require 'Authorization: Bearer KEY' on every endpoint except /health.", _SEC, envvar="DPBALANCE_API_KEY"
    )
    open_metrics: bool = _f(False, "Serve /metrics, /debug/* and /dashboard without the API key.", _SEC)
    prometheus_port: int | None = _f(
        None,
        "Serve /metrics, /debug/* and /dashboard on this separate port only (no API key; bind with --prometheus-host).",
        _SEC,
        min=0,
        max=65535,
    )
    prometheus_host: str = _f("127.0.0.1", "Bind address of --prometheus-port.", _SEC)
    allow_kv_transfer_params: bool = _f(
        False,
        "Forward client-supplied kv_transfer_params to the ranks (dropped by "
        "default: they name remote hosts and ports).",
        _SEC,
    )

    def __post_init__(self):
        if self.decode and self.dp_endpoint:
            raise ValueError("give either --decode/--worker-urls URLs or --dp-endpoint, not both")
        if not self.decode and not self.dp_endpoint:
            raise ValueError("give at least one --decode URL (or --worker-urls A B ...), or --dp-endpoint URL")
        for u in self.decode + self.prefill + ((self.dp_endpoint,) if self.dp_endpoint else ()):
            if not (u.startswith("http://") or u.startswith("https://")):
                raise ValueError(f"rank URL {u!r} must start with http:// or https://")
        if self.dp_size is not None and not self.dp_endpoint:
            raise ValueError("--dp-size only applies with --dp-endpoint")
        for name in ("slots", "dp_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1")
        object.__setattr__(self, "decode", tuple(u.rstrip("/") for u in self.decode))
        object.__setattr__(self, "prefill", tuple(u.rstrip("/") for u in self.prefill))
        if self.dp_endpoint:
            object.__setattr__(self, "dp_endpoint", self.dp_endpoint.rstrip("/"))
