"""``dpbalance serve``: an OpenAI-compatible proxy that admits requests to data-parallel decode ranks with the
same policy objects the simulator runs.

Flow of one request: validate (400/401/413) → 429 if the pool is full → prompt length from a rank's
``/tokenize`` (or an estimate) → wait in the pool → the dispatcher (every ``tick_ms`` and on every arrival
and finish) calls ``policy.dispatch(snapshot)`` → forward to the chosen rank with ``stream=true`` → count
tokens from the SSE stream into the live ``ClusterState`` (exact loads) → relay to the client.

Faults: a rank that refuses or fails before the first token is marked unhealthy (slot cap 0) and the request
re-queued with bounded exponential backoff; a stream that breaks mid-way ends with an error event and frees
the slot; a client that disconnects aborts the upstream stream and frees the slot; a health checker brings
ranks back. Every request ends exactly once as completed, failed (with a reason) or rejected, counted in
``/metrics``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

from ..core.apply import as_arrays
from ..core.snapshot import Snapshot
from ..core.state import ClusterState, Pool, StateError
from ..policies import PolicyContext, make_policy


@dataclass(frozen=True)
class RouterConfig:
    decode: tuple[str, ...]
    policy: str = "br0"
    slots: int = 72
    tick_ms: float = 5.0
    max_pending: int = 10_000
    max_body_bytes: int = 8 * 1024**2
    max_tokens_limit: int = 1_000_000
    api_key: str | None = None
    tokenize: str = "rank"  # rank | estimate
    chars_per_token: float = 4.0
    health_interval_s: float = 1.0
    max_retries: int = 3
    backoff_s: float = 0.05
    request_timeout_s: float = 3600.0
    model: str = "dpbalance"
    prefill: tuple[str, ...] = ()
    seed: int = 0
    dispatch_batch: int = 64  # pool prefix one policy call sees; bursts are placed in back-to-back calls


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None, etype: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.etype = status, param, etype


def error_body(message: str, etype: str = "invalid_request_error", param: str | None = None, code=None) -> dict:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


@dataclass
class Pending:
    rid: int
    body: dict
    chat: bool
    prompt_tokens: int
    max_tokens: int
    arrival: float
    assigned: asyncio.Future = field(default=None)
    attempts: int = 0


class Router:
    def __init__(self, cfg: RouterConfig):
        if not cfg.decode:
            raise ValueError("at least one decode rank (--decode URL) is needed")
        self.cfg = cfg
        self.G = len(cfg.decode)
        self.state = ClusterState(self.G, cfg.slots)
        self.pool = Pool()
        self.policy = make_policy(cfg.policy, PolicyContext(workers=self.G, slots=cfg.slots, seed=cfg.seed))
        self.pending: dict[int, Pending] = {}
        self.healthy = np.ones(self.G, dtype=bool)
        self.next_id = 0
        self.tokenizing = 0  # requests accepted but not yet in the pool (waiting for /tokenize)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.session: aiohttp.ClientSession | None = None
        self.dispatch_us: list[float] = []
        self.dispatch_cpu_us: list[float] = []
        self.outcomes = {"completed": 0, "failed": 0, "rejected": 0}
        reg = self.registry = CollectorRegistry()
        self.m_requests = Counter("dpbalance_requests", "Requests by final outcome", ["outcome", "reason"], registry=reg)
        self.m_tokens = Counter("dpbalance_generated_tokens", "Tokens relayed from decode ranks", ["rank"], registry=reg)
        self.m_dispatch = Histogram("dpbalance_dispatch_seconds", "Policy dispatch latency", registry=reg,
                                    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2))
        self.m_load = Gauge("dpbalance_rank_load_tokens", "KV tokens held per rank", ["rank"], registry=reg)
        self.m_active = Gauge("dpbalance_rank_active_requests", "Active requests per rank", ["rank"], registry=reg)
        self.m_free = Gauge("dpbalance_rank_free_slots", "Free slots per rank", ["rank"], registry=reg)
        self.m_healthy = Gauge("dpbalance_rank_healthy", "1 if the rank is in rotation", ["rank"], registry=reg)
        self.m_pool = Gauge("dpbalance_pool_size", "Requests waiting in the router pool", registry=reg)
        self.m_gap = Gauge("dpbalance_imbalance_gap_tokens", "G·max load − Σ load", registry=reg)
        self.m_maxmin = Gauge("dpbalance_imbalance_maxmin_tokens", "max load − min load", registry=reg)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._dispatch_loop()), loop.create_task(self._health_loop())]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        if self.session:
            await self.session.close()

    # ------------------------------------------------------------------ dispatcher
    def wake(self) -> None:
        self._wake.set()

    async def _dispatch_loop(self) -> None:
        tick = self.cfg.tick_ms / 1000.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=tick)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            # a burst is placed in bounded calls, yielding to the event loop (streams keep flowing) in between
            while self.dispatch_once() and len(self.pool) and self.state.free.sum():
                await asyncio.sleep(0)

    def dispatch_once(self) -> int:
        if len(self.pool) == 0 or self.state.free.sum() == 0:
            return 0
        snap = Snapshot(self.state, _PoolPrefix(self.pool, self.cfg.dispatch_batch), time.monotonic())
        c0 = time.thread_time_ns()
        t0 = time.perf_counter()
        asg = self.policy.dispatch(snap)
        dt = time.perf_counter() - t0
        self.m_dispatch.observe(dt)
        self.dispatch_us.append(dt * 1e6)
        self.dispatch_cpu_us.append((time.thread_time_ns() - c0) / 1e3)  # excludes time the OS took the CPU away
        if asg is None or len(asg) == 0:
            return 0
        rid_arr, ws = as_arrays(asg)  # a list of pairs, an Assignments batch or a pair of arrays
        rids = rid_arr.tolist()
        self.pool.remove(rids)
        for rid, g in zip(rids, ws.tolist()):
            p = self.pending.get(rid)
            slot = self.state.admit(rid, g, p.prompt_tokens, p.max_tokens)
            if not p.assigned.done():
                p.assigned.set_result((int(g), slot))
        return len(rids)

    def _requeue(self, p: Pending) -> None:
        p.assigned = asyncio.get_running_loop().create_future()
        self.pool.insert(p.rid, p.prompt_tokens, p.arrival)
        self.wake()

    def mark_unhealthy(self, g: int) -> None:
        if self.healthy[g]:
            self.healthy[g] = False
            self.state.set_cap(g, 0)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval_s)
            for g, url in enumerate(self.cfg.decode):
                ok = False
                try:
                    async with self.session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        ok = r.status == 200
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                if ok and not self.healthy[g]:
                    self.healthy[g] = True
                    self.state.set_cap(g, self.cfg.slots)
                    self.wake()
                elif not ok:
                    self.mark_unhealthy(g)

    # ------------------------------------------------------------------ accounting
    def finish(self, outcome: str, reason: str) -> None:
        self.outcomes[outcome] += 1
        self.m_requests.labels(outcome, reason).inc()

    def refresh_gauges(self) -> None:
        st = self.state
        for g in range(self.G):
            lbl = str(g)
            self.m_load.labels(lbl).set(int(st.loads[g]))
            self.m_active.labels(lbl).set(int(st.counts[g]))
            self.m_free.labels(lbl).set(int(st.free[g]))
            self.m_healthy.labels(lbl).set(int(self.healthy[g]))
        self.m_pool.set(len(self.pool))
        loads = st.loads
        self.m_gap.set(int(self.G * loads.max() - loads.sum()))
        self.m_maxmin.set(int(loads.max() - loads.min()))

    # ------------------------------------------------------------------ validation
    def validate(self, body, chat: bool) -> tuple[int, str]:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        if "model" in body and not isinstance(body["model"], str):
            raise BadRequest("'model' must be a string", param="model")
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise BadRequest("'messages' must be a non-empty list of {role, content} objects", param="messages")
            for m in msgs:
                if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
                    raise BadRequest("each message needs a string 'role' and a 'content'", param="messages")
            text = " ".join(str(m.get("content") or "") for m in msgs)
        else:
            if "prompt" not in body:
                raise BadRequest("missing required field 'prompt'", param="prompt")
            pr = body["prompt"]
            if isinstance(pr, str):
                text = pr
            elif isinstance(pr, list) and pr and all(isinstance(t, int) and not isinstance(t, bool) for t in pr):
                text = pr  # token ids
            else:
                raise BadRequest("'prompt' must be a string or a non-empty list of token ids", param="prompt")
        mt = body.get("max_tokens", body.get("max_completion_tokens", 16))
        if isinstance(mt, bool) or not isinstance(mt, int):
            raise BadRequest("'max_tokens' must be an integer", param="max_tokens")
        if mt < 1 or mt > self.cfg.max_tokens_limit:
            raise BadRequest(f"'max_tokens' must be between 1 and {self.cfg.max_tokens_limit}", param="max_tokens")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise BadRequest("'stream' must be a boolean", param="stream")
        for k in ("temperature", "top_p"):
            if k in body and (isinstance(body[k], bool) or not isinstance(body[k], (int, float))):
                raise BadRequest(f"'{k}' must be a number", param=k)
        return mt, text

    async def prompt_length(self, text) -> int:
        if isinstance(text, list):
            return len(text)
        if self.cfg.tokenize == "rank":
            for g in np.flatnonzero(self.healthy).tolist():
                try:
                    async with self.session.post(self.cfg.decode[g] + "/tokenize", json={"prompt": text},
                                                 timeout=aiohttp.ClientTimeout(total=5)) as r:
                        if r.status == 200:
                            return int((await r.json())["count"])
                except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError):
                    continue
        return max(1, int(len(text) / self.cfg.chars_per_token))

    async def prefill_probe(self, body: dict, chat: bool) -> dict | None:
        """PD mode (vLLM's disaggregated-prefill proxy protocol): run the prompt on a prefill instance with
        max_tokens=1 and kv_transfer_params asking for remote decode; return the handles it gives back."""
        self._prefill_rr = (getattr(self, "_prefill_rr", -1) + 1) % len(self.cfg.prefill)
        url = self.cfg.prefill[self._prefill_rr] + ("/v1/chat/completions" if chat else "/v1/completions")
        probe = dict(body, max_tokens=1, stream=False,
                     kv_transfer_params={"do_remote_decode": True, "do_remote_prefill": False,
                                         "remote_engine_id": None, "remote_block_ids": None,
                                         "remote_host": None, "remote_port": None})
        probe.pop("stream_options", None)
        if "max_completion_tokens" in probe:
            probe["max_completion_tokens"] = 1
        try:
            async with self.session.post(url, json=probe, timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)) as r:
                if r.status != 200:
                    raise _PrefillFailed(f"prefill {url} answered {r.status}")
                return (await r.json()).get("kv_transfer_params")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _PrefillFailed(f"prefill {url} failed: {exc}") from None

    # ------------------------------------------------------------------ HTTP handlers
    async def handle(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if self.cfg.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if not hmac.compare_digest(auth, f"Bearer {self.cfg.api_key}"):
                self.finish("rejected", "unauthorized")
                return web.json_response(error_body("invalid API key", "authentication_error"), status=401)
        try:
            if request.content_length is not None and request.content_length > self.cfg.max_body_bytes:
                raise BadRequest(f"request body is over the {self.cfg.max_body_bytes}-byte limit", status=413)
            raw = await request.read()
            if len(raw) > self.cfg.max_body_bytes:
                raise BadRequest(f"request body is over the {self.cfg.max_body_bytes}-byte limit", status=413)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(f"malformed JSON body: {exc}") from None
            max_tokens, text = self.validate(body, chat)
        except BadRequest as exc:
            self.finish("rejected", "bad_request" if exc.status == 400 else "too_large")
            return web.json_response(error_body(str(exc), exc.etype, exc.param), status=exc.status)
        except web.HTTPRequestEntityTooLarge:
            self.finish("rejected", "too_large")
            return web.json_response(error_body("request body too large"), status=413)
        if len(self.pool) + self.tokenizing >= self.cfg.max_pending:
            self.finish("rejected", "overloaded")
            return web.json_response(error_body("router pool is full, retry later", "rate_limit_error"), status=429,
                                     headers={"Retry-After": "1"})
        self.tokenizing += 1
        try:
            s = await self.prompt_length(text)
            kv = await self.prefill_probe(body, chat) if self.cfg.prefill else None
        except _PrefillFailed as exc:
            self.finish("failed", "prefill_failed")
            return web.json_response(error_body(str(exc), "server_error"), status=502)
        finally:
            self.tokenizing -= 1
        if kv is not None:
            body = dict(body, kv_transfer_params=kv)
        loop = asyncio.get_running_loop()
        rid = self.next_id
        self.next_id += 1
        p = Pending(rid, body, chat, s, max_tokens, time.monotonic(), loop.create_future())
        self.pending[rid] = p
        self.pool.push(rid, s, p.arrival)
        self.wake()
        try:
            return await self._serve(request, p)
        finally:
            self.pending.pop(rid, None)

    async def _serve(self, request: web.Request, p: Pending) -> web.StreamResponse:
        stream = bool(p.body.get("stream"))
        resp: web.StreamResponse | None = None
        while True:
            try:
                g, slot = await asyncio.wait_for(asyncio.shield(p.assigned), timeout=self.cfg.request_timeout_s)
            except asyncio.TimeoutError:
                self._drop_from_pool(p)
                self.finish("failed", "queue_timeout")
                return web.json_response(error_body("timed out waiting for a decode slot", "server_error"), status=504)
            except asyncio.CancelledError:
                self._drop_from_pool(p)
                self.finish("failed", "client_disconnect")
                raise
            url = self.cfg.decode[g] + ("/v1/chat/completions" if p.chat else "/v1/completions")
            up_body = dict(p.body, stream=True)
            up_body["model"] = p.body.get("model") or self.cfg.model
            # exact token counts even when the engine coalesces several tokens into one chunk (vLLM does)
            want_usage = bool((p.body.get("stream_options") or {}).get("include_usage"))
            up_body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
            started = False
            text_parts: list[str] = []
            n_tok = 0
            try:
                async with self.session.post(url, json=up_body) as up:
                    if up.status != 200:
                        detail = (await up.text())[:200]
                        raise _UpstreamRefused(f"rank {g} answered {up.status}: {detail}")
                    async for event in _sse_events(up.content):
                        if event == "[DONE]":
                            break
                        try:
                            chunk = json.loads(event)
                        except json.JSONDecodeError:
                            continue
                        usage = chunk.get("usage")
                        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                            toks = max(0, usage["completion_tokens"] - n_tok)
                        else:
                            toks = _chunk_tokens(chunk)
                        if not chunk.get("choices") and not want_usage:
                            continue  # a usage-only chunk the client did not ask for
                        if toks:
                            if not started:
                                started = True
                                if stream:
                                    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                                       "Cache-Control": "no-cache"})
                                    await _to_client(resp.prepare(request))
                            n_tok += toks
                            self.state.add_tokens(slot, toks)
                            self.m_tokens.labels(str(g)).inc(toks)
                        if stream and resp is not None:
                            await _to_client(resp.write(b"data: " + event.encode() + b"\n\n"))
                        elif not stream:
                            text_parts.append(_chunk_text(chunk))
                    else:
                        raise _UpstreamBroken(f"rank {g} closed the stream before [DONE]")
            except (asyncio.CancelledError, _ClientGone) as exc:  # client went away; leaving the block closed upstream
                self._release(slot)
                self.finish("failed", "client_disconnect")
                if isinstance(exc, _ClientGone) and resp is not None:
                    return resp
                raise
            except (_UpstreamRefused, aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError,
                    aiohttp.ClientPayloadError, aiohttp.ClientOSError, _UpstreamBroken) as exc:
                self._release(slot)
                if not started:  # nothing reached the client: retry elsewhere
                    self.mark_unhealthy(g)
                    p.attempts += 1
                    if p.attempts > self.cfg.max_retries:
                        self.finish("failed", "no_healthy_rank")
                        return web.json_response(error_body(f"decode ranks unavailable: {exc}", "server_error"),
                                                 status=503)
                    await asyncio.sleep(min(1.0, self.cfg.backoff_s * 2 ** (p.attempts - 1)))
                    self._requeue(p)
                    continue
                self.finish("failed", "upstream_broken")
                if stream and resp is not None:
                    err = error_body(f"decode stream broke after {n_tok} tokens: {exc}", "server_error")
                    try:
                        await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
                        await resp.write_eof()
                    except (ConnectionResetError, RuntimeError):
                        pass
                    return resp
                return web.json_response(error_body(f"decode stream broke after {n_tok} tokens", "server_error"),
                                         status=502)
            self._release(slot)
            self.finish("completed", "ok")
            if stream:
                if resp is None:  # zero-token answer
                    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                    await resp.prepare(request)
                await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
                return resp
            return web.json_response(_assemble(p, "".join(text_parts), n_tok))

    def _release(self, slot: int) -> None:
        self.state.release(slot)
        self.wake()

    def _drop_from_pool(self, p: Pending) -> None:
        try:
            self.pool.remove([p.rid])
        except StateError:  # already admitted (or re-queue pending): nothing waits in the pool
            pass

    # ------------------------------------------------------------------ app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes + 1024)

        async def models(_):
            return web.json_response({"object": "list", "data": [{"id": self.cfg.model, "object": "model",
                                                                  "owned_by": "dpbalance"}]})

        async def health(_):
            ok = bool(self.healthy.any())
            return web.json_response({"status": "ok" if ok else "no healthy decode rank",
                                      "healthy_ranks": int(self.healthy.sum()), "ranks": self.G},
                                     status=200 if ok else 503)

        async def metrics(_):
            self.refresh_gauges()
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def on_startup(_):
            await self.start()

        async def on_cleanup(_):
            await self.close()

        async def completions(r):
            return await self.handle(r, chat=False)

        async def chat_completions(r):
            return await self.handle(r, chat=True)

        app.router.add_post("/v1/completions", completions)
        app.router.add_post("/v1/chat/completions", chat_completions)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/health", health)
        async def dispatch_stats(_):
            d = np.asarray(self.dispatch_us[-100_000:])
            c = np.asarray(self.dispatch_cpu_us[-100_000:])
            q = lambda x, p: float(np.percentile(x, p)) if len(x) else None  # noqa: E731
            return web.json_response({"calls": int(len(d)), "p50_us": q(d, 50), "p99_us": q(d, 99),
                                      "cpu_p50_us": q(c, 50), "cpu_p99_us": q(c, 99), "outcomes": self.outcomes})

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/debug/dispatch", dispatch_stats)
        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)
        return app


class _PoolPrefix:
    """The first ``k`` waiting requests of a pool, as the snapshot's pool view (bounds one policy call)."""

    __slots__ = ("pool", "k")

    def __init__(self, pool: Pool, k: int):
        self.pool, self.k = pool, k

    def __len__(self) -> int:
        return min(self.k, len(self.pool))

    def view(self):
        return tuple(a[: self.k] for a in self.pool.view())


class _UpstreamRefused(Exception):
    pass


class _ClientGone(Exception):
    pass


class _PrefillFailed(Exception):
    pass


async def _to_client(coro) -> None:
    """Write to the client; a closed client connection becomes _ClientGone (not an upstream fault)."""
    try:
        await coro
    except (ConnectionResetError, RuntimeError) as exc:
        raise _ClientGone(str(exc)) from None


class _UpstreamBroken(Exception):
    pass


async def _sse_events(content: aiohttp.StreamReader):
    """Yield the data payload of each server-sent event."""
    buf = b""
    async for chunk in content.iter_any():
        buf += chunk
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            for line in raw.split(b"\n"):
                if line.startswith(b"data:"):
                    yield line[5:].strip().decode()


def _chunk_tokens(chunk: dict) -> int:
    """Tokens carried by one streamed chunk (vLLM streams one token per chunk; usage-only chunks carry none)."""
    n = 0
    for c in chunk.get("choices") or []:
        if c.get("text") or (c.get("delta") or {}).get("content"):
            n += 1
    return n


def _chunk_text(chunk: dict) -> str:
    out = []
    for c in chunk.get("choices") or []:
        out.append(c.get("text") or (c.get("delta") or {}).get("content") or "")
    return "".join(out)


def _assemble(p: Pending, text: str, n_tok: int) -> dict:
    usage = {"prompt_tokens": p.prompt_tokens, "completion_tokens": n_tok, "total_tokens": p.prompt_tokens + n_tok}
    model = p.body.get("model", "dpbalance")
    if p.chat:
        return {"id": f"chatcmpl-{p.rid}", "object": "chat.completion", "model": model, "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}]}
    return {"id": f"cmpl-{p.rid}", "object": "text_completion", "model": model, "usage": usage,
            "choices": [{"index": 0, "text": text, "finish_reason": "length"}]}


async def start_router(cfg: RouterConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[Router, str, web.AppRunner]:
    router = Router(cfg)
    runner = web.AppRunner(router.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    real_port = site._server.sockets[0].getsockname()[1]
    return router, f"http://{host}:{real_port}", runner
