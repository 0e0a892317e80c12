"""``dpbalance epp``: the router's core (dispatcher, policy, rank health, accounting, metrics, record, dashboard)
behind a gRPC ext_proc front door instead of an HTTP relay.

``start_epp`` builds the same ``Router`` object ``serve`` runs (its relay is never used), adds the rank metrics
scraper (``rankload``), and serves on one gRPC port the ext_proc service (``picker``) and the gRPC health
services ``liveness``, ``readiness`` and ``envoy.service.ext_proc.v3.ExternalProcessor``; ``/metrics``,
``/dashboard`` and ``/debug/*`` are on ``--prometheus-port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import numpy as np
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client.core import GaugeMetricFamily

from ..router.app import observe_routes
from ..router.server import Router
from .config import EppConfig
from .leader import ELIGIBLE, Election
from .picker import Picker
from .rankload import RankLoads

log = logging.getLogger("dpbalance.gateway")
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
HEALTH_SERVICES = ("", "liveness", "readiness", EXT_PROC_SERVICE)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Collector:
    """The picker's own gauges, read at scrape time."""

    def __init__(self, epp: Epp):
        self.epp = epp

    def collect(self):
        e = self.epp
        fresh = GaugeMetricFamily(
            "dpbalance_epp_rank_metrics_fresh",
            "1 while the rank's /metrics are read (the shared picture)",
            labels=["rank"],
        )
        foreign = GaugeMetricFamily(
            "dpbalance_epp_foreign_requests", "Requests on the rank that other front doors placed", labels=["rank"]
        )
        for g in range(e.router.G):
            fresh.add_metric([str(g)], float(e.loads.fresh[g]))
            foreign.add_metric([str(g)], float(len(e.loads.foreign_slots[g])))
        yield fresh
        yield foreign
        yield GaugeMetricFamily("dpbalance_epp_streams", "Open ext_proc streams", value=e.picker.streams)


class Epp:
    def __init__(self, cfg: EppConfig, router: Router):
        self.cfg, self.router = cfg, router
        self.picker = Picker(router, cfg)
        self.loads = RankLoads(router, cfg)
        self.picker.loads = self.loads
        self.health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._tasks: list[asyncio.Task] = []
        self._mrunner: web.AppRunner | None = None
        self.metrics_url: str | None = None
        self._synced = False
        self.election: Election | None = None
        router.metrics.registry.register(_Collector(self))

    @classmethod
    async def create(cls, cfg: EppConfig) -> Epp:
        return cls(cfg, await Router.create(cfg))

    def eligible(self) -> bool:
        """Could serve: synced with the ranks, dispatching, a rank in rotation, not stopping."""
        r = self.router
        return self._synced and r.dispatcher_running() and bool(r.dispatcher.in_rotation.any()) and not r.stopping

    def ready(self) -> bool:
        return self.eligible() and (self.election is None or self.election.leader)

    async def _watch_health(self) -> None:
        """Readiness: NOT_SERVING until one health round has seen the ranks ("synced"), then SERVING while the
        dispatcher runs and a rank is in rotation."""
        await self.router.health.check_once()
        self._synced = True
        last = last_elig = None
        while True:
            elig = self.eligible()
            if elig != last_elig:
                await self.health.set(ELIGIBLE, _SERVING if elig else _NOT_SERVING)
                last_elig = elig
            if self.election is not None:
                await self.election.check_once(elig)
            ok = self.ready()
            if ok != last:
                for s in ("", "readiness", EXT_PROC_SERVICE):
                    await self.health.set(s, _SERVING if ok else _NOT_SERVING)
                last = ok
            await asyncio.sleep(0.2)

    def metrics_app(self) -> web.Application:
        app = web.Application()
        observe_routes(self.router, app)
        picker = self.picker

        async def epp_stats(request):
            """Decision latency (body received → destination sent) over the last ``?last=N`` picks (default all
            kept), the policy call latency over as many calls (``?samples=1``: the samples too), readiness."""
            try:
                last = max(1, int(request.query.get("last", "100000")))
            except ValueError:
                return web.json_response({"error": "last must be an integer"}, status=400)
            w = np.asarray(picker.pick_us)[-last:]
            c = np.asarray(self.router.dispatcher.dispatch_us)[-last:]
            q = lambda x, p: float(np.percentile(x, p)) if len(x) else None  # noqa: E731
            samples = {"pick_us": w.tolist(), "policy_us": c.tolist()} if request.query.get("samples") else {}
            return web.json_response(
                {
                    **samples,
                    "ready": self.ready(),
                    "leader": self.election is None or self.election.leader,
                    "picks": int(len(picker.pick_us)),
                    "p50_us": q(w, 50),
                    "p99_us": q(w, 99),
                    "policy_p50_us": q(c, 50),
                    "policy_p99_us": q(c, 99),
                    "outcomes": self.router.outcomes,
                }
            )

        app.router.add_get("/debug/epp", epp_stats)
        return app

    async def start(self, metrics: bool = True) -> None:
        await self.router.start()
        await self.health.set("liveness", _SERVING)
        for s in ("", "readiness", EXT_PROC_SERVICE):
            await self.health.set(s, _NOT_SERVING)
        self.server = grpc.aio.server(
            options=[("grpc.max_concurrent_streams", 1 << 20), ("grpc.max_receive_message_length", 64 * 1024**2)]
        )
        pb_grpc.add_ExternalProcessorServicer_to_server(self.picker, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"{self.cfg.host}:{self.cfg.port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {self.cfg.host}:{self.cfg.port}")
        await self.server.start()
        if self.cfg.peers:
            host = "127.0.0.1" if self.cfg.host in ("0.0.0.0", "", "::") else self.cfg.host
            me = self.cfg.picker_address[0] if self.cfg.picker_address else f"{host}:{self.port}"
            self.election = Election(me, self.cfg.peers)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.loads.run()),
            loop.create_task(self.loads.run_progress()),
            loop.create_task(self._watch_health()),
        ]
        if metrics and self.cfg.prometheus_port is not None:
            self._mrunner = web.AppRunner(self.metrics_app(), access_log=None)
            await self._mrunner.setup()
            site = web.TCPSite(self._mrunner, self.cfg.prometheus_host, self.cfg.prometheus_port)
            await site.start()
            mport = site._server.sockets[0].getsockname()[1]
            self.metrics_url = f"http://{self.cfg.prometheus_host}:{mport}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking requests (readiness goes NOT_SERVING), let open streams finish for ``grace`` seconds
        (``--shutdown-grace-s``), then end them: each open request is counted once and its slot released."""
        r = self.router
        r.stopping = True
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.cfg.shutdown_grace_s if grace is None else grace)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._mrunner is not None:
            await self._mrunner.cleanup()
        if self.election is not None:
            await self.election.close()
        await r.close()


async def start_epp(cfg: EppConfig, metrics: bool = True) -> Epp:
    """Build and start a picker in the running loop (``cfg.port`` 0 = a free port: see ``Epp.port``)."""
    epp = await Epp.create(cfg)
    try:
        await epp.start(metrics=metrics)
    except BaseException:
        await epp.router.close()
        raise
    return epp


async def serve_forever(cfg: EppConfig) -> None:
    """The command: run until SIGTERM / SIGINT, then drain."""
    import signal

    epp = await start_epp(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    r = epp.router
    where = f"{r.G} ranks" + (f" behind {cfg.dp_endpoint}" if cfg.dp_endpoint else "")
    print(
        f"dpbalance epp: policy {r.policy_label} over {where} ({r.slots} slots each), {cfg.mode} mode, "
        f"ext_proc on {cfg.host}:{epp.port}" + (f", metrics on {epp.metrics_url}" if epp.metrics_url else ""),
        flush=True,
    )
    await stop.wait()
    await epp.stop()
