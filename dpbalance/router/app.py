"""The router's HTTP surface: routes, the API key, JSON errors for every failure, the endpoints served from
the ranks, health, metrics, and the SIGTERM drain.

| path | |
|---|---|
| ``POST /v1/completions``, ``POST /v1/chat/completions`` | placed by the policy, relayed (``Router.completions``) |
| ``GET /v1/models``, ``GET /version``, ``POST /tokenize``, ``POST /detokenize`` | the answer of a rank in rotation |
| ``GET /health`` | 200 while the dispatcher runs and a rank is in rotation, else 503 (never needs the key) |
| ``GET /metrics``, ``GET /debug/dispatch`` | need the key unless ``--open-metrics``; only on ``--prometheus-port``
  if set |
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .dashboard import page
from .inbound import authorized, json_error

log = logging.getLogger("dpbalance.router")
_GENERATION = ("/v1/completions", "/v1/chat/completions")
_OPEN = ("/health",)
_OBSERVE = ("/metrics", "/debug/dispatch", "/dashboard", "/dashboard/state")
ROUTER_KEY = web.AppKey("router", object)


def _error_middleware():
    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            etype = "not_found_error" if exc.status == 404 else "invalid_request_error"
            msg = {404: f"no route {request.path}", 405: f"method {request.method} not allowed on {request.path}"}
            return json_error(exc.status, msg.get(exc.status, exc.reason), etype, headers=headers)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:
            log.exception("unhandled error on %s", request.path)
            return json_error(500, f"internal router error: {type(exc).__name__}", "server_error")

    return errors


def _auth_middleware(router, observe_open: bool):
    key = router.cfg.api_key

    @web.middleware
    async def auth(request: web.Request, handler):
        path = request.path
        if path in _OPEN or (observe_open and path in _OBSERVE):
            return await handler(request)
        if not authorized(request.headers.get("Authorization"), key):
            if path in _GENERATION:
                return router.reject(
                    401,
                    "unauthorized",
                    "invalid or missing API key (Authorization: Bearer KEY)",
                    "authentication_error",
                )
            return json_error(401, "invalid or missing API key (Authorization: Bearer KEY)", "authentication_error")
        return await handler(request)

    return auth


def observe_routes(router, app: web.Application) -> None:
    async def metrics(_):
        d = router.dispatcher
        d.flush()
        router.metrics.refresh(d.state, d.in_rotation, router.breaker.state, len(d.pool), d.prefix)
        return web.Response(body=router.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def dispatch_stats(_):
        d = router.dispatcher
        w = np.asarray(d.dispatch_us)
        c = np.asarray(d.dispatch_cpu_us)
        q = lambda x, p: float(np.percentile(x, p)) if len(x) else None  # noqa: E731
        return web.json_response(
            {
                "calls": int(len(w)),
                "p50_us": q(w, 50),
                "p99_us": q(w, 99),
                "cpu_p50_us": q(c, 50),
                "cpu_p99_us": q(c, 99),
                "outcomes": router.outcomes,
                "active": d.active,
                "waiting": len(d.pool),
            }
        )

    async def dashboard(_):
        return web.Response(body=page(), content_type="text/html", charset="utf-8")

    async def dashboard_state(_):
        return web.json_response(router.history.state())

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/dispatch", dispatch_stats)
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard/state", dashboard_state)


async def _from_rank(router, request: web.Request, method: str, path: str) -> web.Response:
    """The answer of the first rank in rotation that answers (status and body unchanged)."""
    body = await request.read() if method == "POST" else None
    order = router.dispatcher.in_rotation.nonzero()[0].tolist() or list(range(router.G))
    last = None
    for g in order[:3]:
        tgt = router.targets[g]
        headers = dict(tgt.headers)
        if body is not None:
            headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        try:
            async with router.session.request(
                method,
                tgt.url + path,
                data=body,
                headers=headers,
                params=request.query,
                timeout=aiohttp.ClientTimeout(total=30),
            ) as r:
                data = await r.read()
                if r.status >= 500:
                    last = f"rank {g} answered {r.status}"
                    continue
                return web.Response(
                    status=r.status,
                    body=data,
                    headers={"Content-Type": r.headers.get("Content-Type", "application/json")},
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            last = f"rank {g}: {type(exc).__name__}"
    return json_error(503, f"no rank answered {path} ({last})", "server_error")


def build_apps(router) -> tuple[web.Application, web.Application | None]:
    """(the API app, the metrics app on --prometheus-port or None)."""
    cfg = router.cfg
    separate = cfg.prometheus_port is not None
    mws = [_error_middleware()]
    if cfg.api_key is not None:
        mws.append(_auth_middleware(router, observe_open=cfg.open_metrics))
    app = web.Application(client_max_size=cfg.max_body_bytes + 1024, middlewares=mws)
    app[ROUTER_KEY] = router

    async def completions(r):
        return await router.completions(r, chat=False)

    async def chat(r):
        return await router.completions(r, chat=True)

    async def health(_):
        running = router.dispatcher_running()
        n = int(router.dispatcher.in_rotation.sum())
        ok = running and n > 0 and not router.stopping
        status = (
            "ok"
            if ok
            else "shutting down"
            if router.stopping
            else "dispatcher stopped"
            if not running
            else "no decode rank in rotation"
        )
        return web.json_response(
            {
                "status": status,
                "ranks_in_rotation": n,
                "ranks": router.G,
                "dispatcher": "running" if running else "stopped",
            },
            status=200 if ok else 503,
        )

    def proxy(method: str, path: str):
        async def h(r):
            return await _from_rank(router, r, method, path)

        return h

    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", proxy("GET", "/v1/models"))
    app.router.add_get("/version", proxy("GET", "/version"))
    app.router.add_post("/tokenize", proxy("POST", "/tokenize"))
    app.router.add_post("/detokenize", proxy("POST", "/detokenize"))
    if not separate:
        observe_routes(router, app)

    async def on_startup(_):
        await router.start()

    async def on_shutdown(_):
        await router.drain()

    async def on_cleanup(_):
        await router.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    if not separate:
        return app, None
    mapp = web.Application(middlewares=[_error_middleware()])
    observe_routes(router, mapp)
    return app, mapp
