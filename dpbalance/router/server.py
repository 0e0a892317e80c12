"""``dpbalance serve``: an OpenAI-compatible proxy that admits requests to data-parallel decode ranks with the
same policy objects the simulator runs.

Flow of one request: read and check the body (400/401/408/413) → 429 if too many wait → prompt length from
a rank's ``/tokenize`` (or an estimate) → wait in the pool → the dispatcher places it with the policy →
forward to its rank → relay the answer, counting streamed tokens into the live loads. Every request ends
exactly once as completed, failed (reason) or rejected (reason), counted in ``/metrics``, and the slot it
held is released on every path (``Router.completions``' ``finally``).

Rooms: ``config`` (settings), ``inbound`` (client bodies, auth, errors), ``dispatcher`` (pool, state, policy
calls), ``ranks`` (targets, breaker, health, discovery), ``relay`` (upstream calls and relaying),
``metrics`` (Prometheus), ``app`` (routes). This module wires them together.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time

import aiohttp
from aiohttp import web

from ..core.costs import StepCosts
from ..core.specs import SpecError
from ..engine.hashing import block_hashes
from ..engine.step_time import make_step_time
from ..policies import PolicyContext, PolicySpec
from ..predictors import PredictorError
from ..traces.record import RecordWriter
from .config import PREFIX_BLOCK_DEFAULT, RouterConfig
from .dashboard import History
from .dispatcher import Dispatcher, QueueTimeout, Ticket
from .inbound import BadRequest, error_body, json_error, parse, read_json
from .metrics import RouterMetrics
from .outcomes import Outcome, Reason
from .prefix_index import PrefixIndex
from .rank_metrics import cache_geometry
from .ranks import Breaker, HealthChecker, StartupError, discover, make_targets
from .relay import ClientGone, RankFailed, Relay

log = logging.getLogger("dpbalance.router")
__all__ = ["Router", "RouterConfig", "StartupError", "start_router"]


class _PrefillFailed(Exception):
    def __init__(self, message: str, response: web.Response | None = None):
        super().__init__(message)
        self.response = response


def step_costs(cfg: RouterConfig, G: int, slots: int) -> StepCosts | None:
    """The prices of ``--step-time`` for the policy (None: not given)."""
    if cfg.step_time is None:
        return None
    try:
        return make_step_time(cfg.step_time, slots).costs(G)
    except (SpecError, OSError, ValueError) as exc:
        raise StartupError(f"--step-time {cfg.step_time}: {exc}") from None


class Router:
    def __init__(
        self,
        cfg: RouterConfig,
        G: int,
        slots: int,
        session: aiohttp.ClientSession,
        train=None,
        cache: tuple[int, int] | None = None,
    ):
        """``cache``: the ranks' (KV block size, KV tokens), as ``rank_metrics.cache_geometry`` reads them; the
        config's ``prefix_block`` and ``prefix_capacity`` win over it."""
        self.cfg, self.G, self.slots, self.session = cfg, G, slots, session
        self.block_size = cfg.prefix_block or (cache[0] if cache else PREFIX_BLOCK_DEFAULT)
        kv_capacity = cfg.prefix_capacity or (cache[1] if cache else None)
        self.metrics = RouterMetrics(G)
        ctx = PolicyContext(workers=G, slots=slots, seed=cfg.seed, train=train, costs=step_costs(cfg, G, slots))
        spec = PolicySpec.parse(cfg.policy)
        self.policy_label = spec.label
        self.recorder = (
            RecordWriter(cfg.record, max_bytes=int(cfg.record_max_mb * 1024**2)) if cfg.record is not None else None
        )
        self.history = History(G, cfg.dashboard_history_s)
        try:
            policy = spec.build(ctx)
        except PredictorError as exc:
            raise StartupError(
                f"policy {cfg.policy!r}: its predictor needs a training trace: give --train-trace "
                f"NAME|FILE (requests it learns output lengths from), or use predictor=oracle "
                f"({exc})"
            ) from None
        fallback = PolicySpec.parse(cfg.fallback_policy).build(ctx)
        self.dispatcher = Dispatcher(G, slots, policy, fallback, self.metrics, cfg, label=spec.label)
        if cfg.prefix_index == "on" or (cfg.prefix_index == "auto" and spec.reads_prefix):
            self.dispatcher.prefix = PrefixIndex(G, block_size=self.block_size, kv_capacity=kv_capacity)
        self.targets = make_targets(cfg, G)
        self.breaker = Breaker(
            G, cfg.cb_failure_threshold, cfg.cb_timeout_s, self.dispatcher.set_rotation, self.metrics
        )
        self.health = HealthChecker(self.targets, self.breaker, session, cfg.health_interval_s, cfg.health_timeout_s)
        self.relay = Relay(self)
        self.stopping = False
        self.tokenizing = 0
        self.inflight: set[asyncio.Task] = set()
        self._tasks: list[asyncio.Task] = []
        self._prefill_rr = -1

    @classmethod
    async def create(cls, cfg: RouterConfig) -> Router:
        """Learn what the config leaves out from the ranks (slots, DP size), load the training trace, build."""
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        try:
            G, slots = await discover(cfg, session)
            cache = None
            if cfg.prefix_block is None or cfg.prefix_capacity is None:
                cache = await cache_geometry(session, [cfg.dp_endpoint] if cfg.dp_endpoint else list(cfg.decode))
            train = None
            if cfg.train_trace:
                from ..traces import TraceError, load_trace

                try:
                    train = load_trace(cfg.train_trace, cfg.trace_dir)
                except (TraceError, FileNotFoundError) as exc:
                    raise StartupError(f"--train-trace: {exc}") from None
            return cls(cfg, G, slots, session, train, cache)
        except BaseException:
            await session.close()
            raise

    # ------------------------------------------------------------------ views the tests and /debug use
    @property
    def policy(self):
        return self.dispatcher.policy

    @property
    def state(self):
        return self.dispatcher.state

    @property
    def outcomes(self) -> dict:
        return dict(self.metrics.outcomes)

    @property
    def healthy(self):
        return self.dispatcher.in_rotation

    def dispatcher_running(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        gc.collect()
        gc.freeze()  # start-up objects (modules, policy, trace) leave the collector's scans: shorter GC pauses
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.dispatcher.run()),
            loop.create_task(self.health.run()),
            loop.create_task(self.relay.watchdog()),
            loop.create_task(self._sample()),
        ]

    async def _sample(self) -> None:
        """One sample a second for /dashboard."""
        while True:
            d = self.dispatcher
            d.flush()
            self.history.sample(
                d.state,
                d.in_rotation,
                self.breaker.state,
                len(d.pool),
                self.metrics.outcomes,
                self.metrics.tokens,
                self.policy_label,
                d.prefix,
            )
            await asyncio.sleep(1.0)

    async def drain(self) -> None:
        """SIGTERM: stop taking requests, let running ones finish for the grace period, abort and count the rest."""
        self.stopping = True
        pending = {t for t in self.inflight if not t.done()}
        if pending and self.cfg.shutdown_grace_s > 0:
            await asyncio.wait(pending, timeout=self.cfg.shutdown_grace_s)
        rest = [t for t in self.inflight if not t.done()]
        for t in rest:
            t.cancel()
        if rest:
            await asyncio.wait(rest, timeout=5)

    async def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:  # pragma: no cover - logged when it happened
                pass
        await self.session.close()

    # ------------------------------------------------------------------ accounting
    def finish(self, t: Ticket, outcome: Outcome, reason: Reason | str) -> None:
        """The ticket's one outcome (later calls for the same ticket are ignored)."""
        if t.outcome is not None:
            return
        t.outcome = outcome
        now = time.monotonic()
        self.metrics.finish(outcome, reason, now - t.arrival)
        if self.dispatcher.prefix is not None:
            self.dispatcher.prefix.done(t.rid)
        if self.recorder is not None:
            self.recorder.write(
                t=time.time() - (now - t.arrival),
                prompt_tokens=t.prompt_tokens,
                output_tokens=max(t.tokens, t.est_tokens if outcome == Outcome.COMPLETED else 0),
                prompt_hash=f"{t.key & (2**64 - 1):016x}",
                rank=t.rank if t.rank >= 0 else None,
                policy=self.policy_label,
                outcome=str(outcome) if outcome == Outcome.COMPLETED else f"{outcome}:{reason}",
                blocks=t.blocks,
                block_size=self.block_size,
                sent_s=t.started - t.arrival if t.started else None,
                ttft_s=t.first_token - t.arrival if t.first_token else None,
            )

    def reject(
        self,
        status: int,
        reason: str,
        message: str,
        etype: str = "invalid_request_error",
        param: str | None = None,
        headers: dict | None = None,
    ) -> web.Response:
        self.metrics.finish(Outcome.REJECTED, reason, 0.0)
        return json_error(status, message, etype, param, headers)

    # ------------------------------------------------------------------ a generation request
    async def completions(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if self.stopping:
            return self.reject(503, Reason.SHUTTING_DOWN, "the router is shutting down", "server_error")
        try:
            body = await read_json(request, self.cfg.max_body_bytes, self.cfg.body_timeout_s)
            p = parse(body, chat, self.cfg.max_tokens_limit, self.cfg.allow_kv_transfer_params)
        except BadRequest as exc:
            return self.reject(exc.status, exc.reason, str(exc), exc.etype, exc.param)
        except asyncio.CancelledError:  # the client left while sending its body
            self.metrics.finish(Outcome.FAILED, Reason.SHUTDOWN if self.stopping else Reason.CLIENT_DISCONNECT, 0.0)
            raise
        if len(self.dispatcher.pool) + self.tokenizing >= self.cfg.max_pending:
            return self.reject(
                429,
                Reason.OVERLOADED,
                "too many requests are waiting, retry later",
                "rate_limit_error",
                headers={"Retry-After": "1"},
            )
        d = self.dispatcher
        t = Ticket(
            rid=d.new_id(),
            body=p.body,
            chat=chat,
            stream=p.stream,
            prompt_tokens=0,
            limit=p.limit,
            arrival=time.monotonic(),
            key=p.key,
            want_usage=p.want_usage,
            want_continuous=p.want_continuous,
        )
        task = asyncio.current_task()
        self.inflight.add(task)
        try:
            return await self._serve(request, t, p.text)
        except asyncio.CancelledError:
            self.finish(t, Outcome.FAILED, Reason.SHUTDOWN if self.stopping else Reason.CLIENT_DISCONNECT)
            if self.stopping and t.resp is not None:  # tell a streaming client why it ends
                await _end_stream(t.resp, "the router is shutting down")
            raise
        except ClientGone as exc:
            self.finish(t, Outcome.FAILED, exc.reason)
            return t.resp or web.Response(status=499)
        except Exception as exc:  # a bug: answer and count it rather than leave the client hanging
            log.exception("request %d failed", t.rid)
            self.finish(t, Outcome.FAILED, Reason.INTERNAL_ERROR)
            if t.resp is not None:
                return t.resp
            return json_error(500, f"internal router error: {type(exc).__name__}", "server_error")
        finally:
            self.inflight.discard(task)
            d.release(t)
            d.drop(t)
            if t.outcome is None:  # pragma: no cover - every path above sets one
                self.finish(t, Outcome.FAILED, Reason.INTERNAL_ERROR)

    async def _serve(self, request: web.Request, t: Ticket, text) -> web.StreamResponse:
        self.tokenizing += 1
        try:
            t.prompt_tokens, ids = await self.prompt_length(text, t.body if t.chat else None)
            if self.dispatcher.prefix is not None:  # the rank's token ids when it gave them, else the text
                self.dispatcher.prefix.arrive(t.rid, ids if ids is not None else text, t.prompt_tokens)
            if self.recorder is not None and ids is not None:  # recorded as the engine cuts it, never the tokens
                t.blocks = block_hashes(ids, self.block_size)
            if self.cfg.prefill:
                kv = await self.prefill(t)
                if kv is not None:
                    t.body = dict(t.body, kv_transfer_params=kv)
        except _PrefillFailed as exc:
            self.finish(t, Outcome.FAILED if exc.response is None else Outcome.REJECTED, Reason.PREFILL_FAILED)
            return exc.response or json_error(502, str(exc), "server_error")
        finally:
            self.tokenizing -= 1
        d = self.dispatcher
        d.submit(t)
        while True:
            try:
                g, _slot = await t.assigned
            except QueueTimeout as exc:
                self.finish(t, Outcome.FAILED, exc.reason)
                if exc.reason == Reason.NO_RANK_IN_ROTATION:
                    return json_error(
                        503, f"no decode rank in rotation for {self.cfg.queue_timeout_s:g} s", "server_error"
                    )
                return json_error(504, f"no decode slot within {self.cfg.max_wait_s:g} s", "server_error")
            try:
                if t.stream:
                    return await self.relay.stream(request, t, g)
                return await self.relay.nonstream(request, t, g)
            except RankFailed as exc:
                self.breaker.failure(g, exc.kind)
                d.release(t)
                t.attempts += 1
                if t.attempts > self.cfg.max_retries:
                    self.finish(t, Outcome.FAILED, Reason.RANK_UNAVAILABLE)
                    if exc.status is not None:  # the last rank's own 5xx answer
                        return web.Response(
                            status=exc.status, body=exc.body, headers={"Content-Type": exc.content_type}
                        )
                    return json_error(503, f"decode ranks unavailable: {exc}", "server_error")
                self.metrics.retries.labels(str(g)).inc()
                await asyncio.sleep(min(1.0, self.cfg.backoff_s * 2 ** (t.attempts - 1)))
                d.requeue(t)

    async def prompt_length(self, text, chat_body: dict | None) -> tuple[int, list[int] | None]:
        """The prompt's token count, and its token ids when known (given as ids, or from a rank's /tokenize)."""
        if isinstance(text, list):
            return max(1, len(text)), text
        if self.cfg.tokenize == "rank":
            payload = {"messages": chat_body["messages"]} if chat_body is not None else {"prompt": text}
            for g in self.dispatcher.in_rotation.nonzero()[0].tolist()[:2]:
                tgt = self.targets[g]
                try:
                    async with self.session.post(
                        tgt.url + "/tokenize", json=payload, headers=tgt.headers, timeout=aiohttp.ClientTimeout(total=5)
                    ) as r:
                        if r.status == 200:
                            got = await r.json(content_type=None)
                            ids = got.get("tokens")
                            return max(1, int(got["count"])), ids if isinstance(ids, list) else None
                except (TimeoutError, aiohttp.ClientError, KeyError, ValueError, TypeError, OSError):
                    continue
        return max(1, int(len(text) / self.cfg.chars_per_token)), None

    async def prefill(self, t: Ticket) -> dict | None:
        """PD mode (vLLM's disaggregated-prefill proxy protocol): run the prompt on a prefill instance with
        max_tokens=1 and kv_transfer_params asking for remote decode; return the handles it gives back."""
        self._prefill_rr = (self._prefill_rr + 1) % len(self.cfg.prefill)
        url = self.cfg.prefill[self._prefill_rr] + ("/v1/chat/completions" if t.chat else "/v1/completions")
        probe = dict(
            t.body,
            max_tokens=1,
            stream=False,
            kv_transfer_params={
                "do_remote_decode": True,
                "do_remote_prefill": False,
                "remote_engine_id": None,
                "remote_block_ids": None,
                "remote_host": None,
                "remote_port": None,
            },
        )
        probe.pop("stream_options", None)
        if "max_completion_tokens" in probe:
            probe["max_completion_tokens"] = 1
        try:
            async with self.session.post(
                url, json=probe, timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
            ) as r:
                body = await r.read()
                if 400 <= r.status < 500:  # the client's request is bad: its answer goes back
                    raise _PrefillFailed(
                        f"prefill {url} answered {r.status}",
                        web.Response(
                            status=r.status, body=body, headers={"Content-Type": r.headers.get("Content-Type", "")}
                        ),
                    )
                if r.status != 200:
                    raise _PrefillFailed(f"prefill {url} answered {r.status}")
                return json.loads(body).get("kv_transfer_params")
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError, OSError) as exc:
            raise _PrefillFailed(f"prefill {url} failed: {type(exc).__name__}") from None

    def app(self) -> web.Application:
        from .app import build_apps

        return build_apps(self)[0]


async def _end_stream(resp: web.StreamResponse, message: str) -> None:
    err = json.dumps(error_body(message, "server_error", code=503)).encode()
    try:
        await asyncio.wait_for(resp.write(b"data: " + err + b"\n\n"), 0.5)
        await asyncio.wait_for(resp.write_eof(), 0.5)
    except (TimeoutError, asyncio.CancelledError, ConnectionError, RuntimeError):
        pass


async def start_router(cfg: RouterConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[Router, str, web.AppRunner]:
    """Start a router on ``host:port`` (0 = a free port) in the running loop; returns (router, URL, runner).
    ``await runner.cleanup()`` shuts it down the way SIGTERM does."""
    from .app import build_apps

    router = await Router.create(cfg)
    app, _metrics_app = build_apps(router)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    real_port = site._server.sockets[0].getsockname()[1]
    return router, f"http://{host}:{real_port}", runner
