"""Every setting of ``dpbalance epp``: ``serve``'s settings where they mean the same, plus the gateway's own.

``EppConfig`` extends ``RouterConfig``: ranks (``--worker-urls`` or ``--dp-endpoint``), ``--policy``, ``--slots``,
``--model``, ``--api-key``, ``--prometheus-port``, ``--record`` and the limits keep their names, help and checks.
``--port`` is the gRPC (ext_proc) port here. Settings that only make sense for a relay that carries the
tokens itself (PD prefill, client write timeouts, upstream read timeouts, ...) stay off the command line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from ..core.config import setting as _f
from ..router.config import RouterConfig

_GW = "Gateway"

# the names of the Endpoint Picker protocol (headers, metadata namespaces and keys)
DEST = "x-gateway-destination-endpoint"
SERVED = "x-gateway-destination-endpoint-served"
SUBSET = "x-gateway-destination-endpoint-subset"
LB_NS = "envoy.lb"
SUBSET_NS = "envoy.lb.subset_hint"
UPSTREAM_ADDRESS = "upstream.address"  # the Envoy attribute that names the endpoint that served a response


def _hidden(name: str):
    """``RouterConfig``'s field ``name`` unchanged (default, help) but off the ``epp`` command line."""
    f = RouterConfig.__dataclass_fields__[name]
    kw = {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
    return dataclasses.field(metadata={**f.metadata, "cli": False}, **kw)


def _default(name: str, default):
    """``RouterConfig``'s field ``name`` (help, flags, bounds) with another default."""
    return dataclasses.field(default=default, metadata=RouterConfig.__dataclass_fields__[name].metadata)


def endpoint_of(url: str) -> str:
    """``http://10.0.0.5:8001`` → ``10.0.0.5:8001``: the ``ip:port`` the gateway routes to (an IP address, not a
    name: Envoy's original-destination cluster connects to exactly what the header says)."""
    u = urlsplit(url)
    if u.scheme != "http":
        raise ValueError(f"rank URL {url!r}: the gateway reaches ranks over plain http:// (ip:port)")
    if u.path not in ("", "/"):
        raise ValueError(f"rank URL {url!r}: give the base URL of the rank (no path)")
    host = u.hostname or ""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"rank URL {url!r}: the gateway routes by ip:port, give the rank's IP address instead of {host!r}"
        ) from None
    port = u.port or 80
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@dataclass(frozen=True)
class EppConfig(RouterConfig):
    port: int = _f(9002, "gRPC (Envoy ext_proc) listen port.", "Ranks", min=0, max=65535)
    mode: Literal["streamed", "decision-only"] = _f(
        "streamed",
        "'streamed': the response body passes through the picker, which counts the tokens (exact loads); "
        "'decision-only': the picker sees the request and the response headers only and estimates progress "
        "(one token per engine step, step time from the ranks' /metrics).",
        _GW,
    )
    rank_metrics_interval_s: float = _f(
        0.25,
        "Seconds between scrapes of every rank's /metrics (running requests, KV usage, step time): the load "
        "other replicas put on the ranks, and the progress estimate of --mode decision-only. 0 turns it off.",
        _GW,
        min=0.0,
    )
    replicas: int = _f(
        1,
        "Picker replicas in front of the same ranks. Each admits at most its 1/N share of every rank's slots "
        "(so together they never overfill a rank) and sees what the others placed through the ranks' /metrics.",
        _GW,
        min=1,
    )
    peers: tuple[str, ...] = _f(
        (),
        "HOST:PORT (gRPC) of the other picker replicas of this pool (repeat): the replica with the lowest "
        "address that sees a rank leads, the others report NOT_SERVING for readiness until it goes, so the "
        "proxy sends every request to one picture of the load.",
        _GW,
    )
    rank_metrics_stale_s: float = _f(
        3.0,
        "A rank whose /metrics has not answered for this many seconds counts only this replica's own requests.",
        _GW,
        min=0.1,
    )
    envoy_port: int = _f(8080, "The listener port written by --print-envoy-config.", _GW, min=1, max=65535)
    picker_address: tuple[str, ...] = _f(
        (),
        "HOST:PORT at which Envoy reaches the picker, written by --print-envoy-config (repeat for replicas; a "
        "DNS name such as a headless Service lists every replica). Default: --host:--port (127.0.0.1 for a "
        "wildcard --host).",
        _GW,
    )
    print_envoy_config: bool = _f(
        False, "Print an Envoy bootstrap (YAML) for these ranks and this picker, then exit.", _GW
    )
    prometheus_port: int | None = _default("prometheus_port", 9090)
    # a relay's settings: the picker never carries the tokens itself
    prefill: tuple[str, ...] = _hidden("prefill")
    client_timeout_s: float = _hidden("client_timeout_s")
    upstream_read_timeout_s: float = _hidden("upstream_read_timeout_s")
    request_timeout_s: float = _hidden("request_timeout_s")
    body_timeout_s: float = _hidden("body_timeout_s")
    open_metrics: bool = _hidden("open_metrics")
    max_retries: int = _hidden("max_retries")
    backoff_s: float = _hidden("backoff_s")

    def __post_init__(self):
        super().__post_init__()
        if self.prefill:
            raise ValueError("the picker has no PD mode (prefill URLs)")
        for u in self.decode + ((self.dp_endpoint,) if self.dp_endpoint else ()):
            endpoint_of(u)
        for flag, addrs in (("--picker-address", self.picker_address), ("--peers", self.peers)):
            for a in addrs:
                host, _, port = a.rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(f"{flag} {a!r}: give HOST:PORT")

    @property
    def streamed(self) -> bool:
        return self.mode == "streamed"
