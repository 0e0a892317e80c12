"""One upstream call to a rank and the relay of its answer to the client.

Streams: upstream always gets ``stream_options = {include_usage, continuous_usage_stats}`` so every chunk
carries the cumulative ``completion_tokens`` (exact loads even when vLLM puts several tokens in one chunk).
The relay works on whole SSE events as bytes: per read it finds the last ``"completion_tokens":N`` (one
``rfind``), strips the ``usage`` the client did not ask for (one regex substitution) and writes the events
through unchanged otherwise. A non-stream request is relayed as the rank's own answer (status, body, content
type) from a non-stream upstream call; its load is estimated while the call runs (see ``dispatcher``).

Errors: a rank's 4xx goes back unchanged (the rank is working); connection errors, timeouts and 5xx raise
``RankFailed`` while nothing has reached the client (the caller counts it against the rank and places the
request again). A stream that breaks or stalls after it started ends with an error event. A client that
vanishes, or accepts nothing for ``client_timeout_s``, raises ``ClientGone``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
from aiohttp import web
from yarl import URL

from .dispatcher import Ticket
from .inbound import error_body

_TOKENS = b'"completion_tokens":'
_INT = re.compile(rb"\s*(\d+)")
_USAGE = re.compile(rb',\s*"usage":\s*\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}')
_USAGE_COMPACT = re.compile(rb',"usage":\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}')  # literal prefix: a fast scan
_EMPTY_CHOICES = re.compile(rb'"choices":\s*\[\s*\]')
_DONE = b"data: [DONE]"
_ERROR_EVENT = b'data: {"error"'
_UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_HIGH_WATER = 256 * 1024  # bytes queued for a client above which the relay waits for it
_MAX_EVENT = 4 * 1024**2  # longest SSE event accepted from a rank


class RankFailed(Exception):
    """The rank failed before anything reached the client (count it against the rank; place again)."""

    def __init__(
        self,
        kind: str,
        message: str,
        status: int | None = None,
        body: bytes = b"",
        content_type: str = "application/json",
    ):
        super().__init__(message)
        self.kind, self.status, self.body, self.content_type = kind, status, body, content_type


class ClientGone(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _kind(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    return "broken"


def _fallback_count(block: bytes) -> int:
    """Tokens in events without usage (a rank that ignores continuous_usage_stats): one per non-empty delta."""
    return (
        block.count(b'"text":"')
        - block.count(b'"text":""')
        + block.count(b'"content":"')
        - block.count(b'"content":""')
    )


def new_tokens(block: bytes, seen: int) -> int:
    """Tokens a block of whole SSE events adds to the ``seen`` ones: from the last cumulative
    ``completion_tokens`` when the events carry usage, else one per non-empty delta (the relay inlines this)."""
    i = block.rfind(_TOKENS)
    if i < 0:
        return _fallback_count(block)
    m = _INT.match(block, i + len(_TOKENS))
    return int(m.group(1)) - seen if m else 0


def _strip_usage(block: bytes) -> bytes:
    out = _USAGE_COMPACT.sub(b"", block)  # vLLM's compact JSON; any other spacing falls to the general pattern
    return _USAGE.sub(b"", out) if b'"usage":' in out else out


def _strip(block: bytes, want_usage: bool) -> bytes:
    """Remove the usage the client did not ask for: per-chunk usage always, the final usage-only chunk unless
    it asked for ``include_usage``."""
    if b"[]" not in block and b"[ ]" not in block:  # no event with empty choices: the common case
        return _strip_usage(block)
    out = []
    for e in block.split(b"\n\n"):
        if _EMPTY_CHOICES.search(e) and b'"usage"' in e:
            if want_usage:
                out.append(e)
        else:
            out.append(_strip_usage(e))
    return b"\n\n".join(out) if any(out) else b""


class Relay:
    def __init__(self, router):
        self.r = router  # Router: cfg, session, targets, dispatcher, metrics, breaker
        self.watched: dict[Ticket, aiohttp.ClientResponse] = {}  # running streams, for the stall watchdog
        # per rank, per (completion, chat): the parsed URL and headers, built once
        self._urls = [
            {
                c: (
                    URL(tgt.url + ("/v1/chat/completions" if c else "/v1/completions")),
                    {"Content-Type": "application/json", **tgt.headers},
                )
                for c in (False, True)
            }
            for tgt in router.targets
        ]

    async def watchdog(self) -> None:
        """Close the upstream of any stream that has received nothing for ``upstream_read_timeout_s``."""
        limit = self.r.cfg.upstream_read_timeout_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = loop.time()
            for t, up in list(self.watched.items()):
                if now - t.last_io > limit:
                    t.stalled = True
                    self.watched.pop(t, None)
                    up.close()  # its pending read fails; the relay reports a timeout

    # ------------------------------------------------------------------ request bodies
    def upstream_payload(self, t: Ticket) -> bytes:
        body = t.body
        if t.stream:
            body = dict(body, stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
        if not body.get("model") and self.r.cfg.model:
            body = dict(body, model=self.r.cfg.model)
        return json.dumps(body, separators=(",", ":")).encode()

    def _post(self, g: int, t: Ticket, timeout: aiohttp.ClientTimeout):
        url, headers = self._urls[g][t.chat]
        return self.r.session.post(url, data=self.upstream_payload(t), headers=headers, timeout=timeout)

    def _count_status(self, g: int, status: int) -> None:
        self.r.metrics.upstream.labels(str(g), str(status)).inc()

    async def _refusal(self, g: int, up: aiohttp.ClientResponse, t: Ticket):
        """A non-200 answer: 4xx → the rank's own response (rank still fine); 5xx → RankFailed."""
        body = await up.read()
        ctype = up.headers.get("Content-Type", "application/json")
        if up.status >= 500:
            raise RankFailed("http_5xx", f"rank {g} answered {up.status}", up.status, body, ctype)
        self.r.breaker.success(g)
        self.r.finish(t, "rejected", f"rank_{up.status}")
        return web.Response(status=up.status, body=body, headers={"Content-Type": ctype})

    # ------------------------------------------------------------------ non-stream
    async def nonstream(self, request: web.Request, t: Ticket, g: int) -> web.StreamResponse:
        cfg = self.r.cfg
        timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s, sock_connect=min(5.0, cfg.request_timeout_s))
        self.r.dispatcher.start_nonstream(t)
        try:
            async with self._post(g, t, timeout) as up:
                self._count_status(g, up.status)
                if up.status != 200:
                    return await self._refusal(g, up, t)
                body = await up.read()
                ctype = up.headers.get("Content-Type", "application/json")
        except _UPSTREAM_ERRORS as exc:
            raise RankFailed(_kind(exc), f"rank {g}: {type(exc).__name__}: {exc}") from None
        try:
            n = int((json.loads(body).get("usage") or {}).get("completion_tokens") or 0)
        except (ValueError, AttributeError, TypeError):
            n = 0
        self.r.metrics.tokens[g] += n
        t.tokens = n
        self.r.breaker.success(g)
        self.r.finish(t, "completed", "ok")
        return web.Response(status=200, body=body, headers={"Content-Type": ctype})

    # ------------------------------------------------------------------ stream
    async def _write_raw(self, request: web.Request, data: bytes) -> None:
        """One chunk of a chunked HTTP/1.1 body straight to the socket (the relay's hot path; aiohttp's writer
        sent the headers at prepare and writes the last chunk at write_eof). A client that is behind is waited
        for, at most ``client_timeout_s``."""
        tr = request.transport
        if tr is None or tr.is_closing():
            raise ClientGone("client_disconnect")
        tr.write(b"%x\r\n%s\r\n" % (len(data), data))
        if tr.get_write_buffer_size() > _HIGH_WATER:
            try:
                async with asyncio.timeout(self.r.cfg.client_timeout_s):
                    while tr.get_write_buffer_size() > _HIGH_WATER // 4:
                        if tr.is_closing():
                            raise ClientGone("client_disconnect")
                        await asyncio.sleep(0.005)
            except TimeoutError:
                tr.close()
                raise ClientGone("client_timeout") from None

    async def _write(self, request: web.Request, resp: web.StreamResponse, data: bytes) -> None:
        tr = request.transport
        try:
            if tr is not None and tr.get_write_buffer_size() > 0:  # client is behind: bound the wait
                async with asyncio.timeout(self.r.cfg.client_timeout_s):
                    await resp.write(data)
            else:
                await resp.write(data)
        except TimeoutError:
            if tr is not None:
                tr.close()
            raise ClientGone("client_timeout") from None
        except (ConnectionError, RuntimeError):
            raise ClientGone("client_disconnect") from None

    async def stream(self, request: web.Request, t: Ticket, g: int) -> web.StreamResponse:
        cfg, d = self.r.cfg, self.r.dispatcher
        # the per-read timeout is the watchdog's (one timestamp per read, not a timer per read)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(5.0, cfg.upstream_read_timeout_s))
        strip = not t.extra.get("want_continuous")
        want_usage = bool(t.extra.get("want_usage"))
        resp: web.StreamResponse | None = None
        t.started = time.monotonic()
        try:
            async with asyncio.timeout(cfg.upstream_read_timeout_s):  # until the answer's headers
                up = await self._post(g, t, timeout)
        except _UPSTREAM_ERRORS as exc:
            raise RankFailed(_kind(exc), f"rank {g}: {type(exc).__name__}: {exc}") from None
        done = errored = False
        loop_time = asyncio.get_running_loop().time
        t.last_io = loop_time()
        self.watched[t] = up
        try:
            self._count_status(g, up.status)
            if up.status != 200:
                try:
                    out = await self._refusal(g, up, t)
                except _UPSTREAM_ERRORS as exc:
                    raise RankFailed(_kind(exc), f"rank {g}: {exc}") from None
                done = True
                return out
            content = up.content
            buf = b""
            while not done:
                try:
                    data = await content.readany()
                except _UPSTREAM_ERRORS as exc:
                    return await self._broken(request, resp, t, g, "timeout" if t.stalled else _kind(exc), exc)
                if not data:
                    kind = "timeout" if t.stalled else "broken"
                    return await self._broken(request, resp, t, g, kind, "closed the stream before [DONE]")
                t.last_io = loop_time()
                if buf:
                    data = buf + data
                end = data.rfind(b"\n\n")
                if end < 0:
                    if len(data) > _MAX_EVENT:  # not an SSE stream (or one absurd event): do not buffer forever
                        return await self._broken(
                            request, resp, t, g, "broken", f"sent no event boundary in {len(data)} bytes"
                        )
                    buf = data
                    continue
                if end + 2 == len(data):  # the usual case: whole events, no copy
                    block, buf = data, b""
                else:
                    block, buf = data[: end + 2], data[end + 2 :]
                i = block.rfind(_TOKENS)
                if i >= 0:
                    m = _INT.match(block, i + len(_TOKENS))
                    n = int(m.group(1)) - t.tokens if m else 0
                else:
                    n = _fallback_count(block)
                if strip:
                    block = _strip(block, want_usage)
                done = _DONE in block
                if _ERROR_EVENT in block:
                    errored = True
                if resp is None:
                    resp = web.StreamResponse(
                        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                    )
                    raw = request.version >= (1, 1)
                    if raw:
                        resp.enable_chunked_encoding()
                    t.extra["resp"] = resp
                    try:
                        await resp.prepare(request)
                    except (ConnectionError, RuntimeError):
                        raise ClientGone("client_disconnect") from None
                if n > 0:
                    if t.tokens == 0:
                        t.first_token = time.monotonic()
                        self.r.metrics.ttft.observe(t.first_token - t.arrival)
                    d.add_tokens(t, n)
                if block:
                    if raw:
                        await self._write_raw(request, block)
                    else:
                        await self._write(request, resp, block)
                    if done and not errored:  # the client has the whole answer: it is complete, whatever follows
                        self.r.breaker.success(g)
                        self.r.finish(t, "completed", "ok")
            if not content.at_eof():  # read the end of the body so the connection goes back to the pool
                try:
                    async with asyncio.timeout(1.0):
                        await content.read()
                except (TimeoutError, *_UPSTREAM_ERRORS):
                    done = False
        finally:
            self.watched.pop(t, None)
            if done:
                up.release()
            else:
                up.close()  # an unfinished answer: closing the connection makes the rank abort the request
        if errored:  # otherwise the request was counted complete when its last event reached the client
            self.r.breaker.failure(g, "stream_error")
            self.r.finish(t, "failed", "upstream_error")
        try:
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def _broken(self, request, resp, t: Ticket, g: int, kind: str, exc) -> web.StreamResponse:
        if resp is None:  # nothing reached the client: another rank may serve it
            raise RankFailed(kind, f"rank {g}: {exc}")
        self.r.breaker.failure(g, kind)
        reason = "upstream_timeout" if kind == "timeout" else "upstream_broken"
        self.r.finish(t, "failed", reason)
        msg = (
            f"rank {g} sent nothing for {self.r.cfg.upstream_read_timeout_s:g} s"
            if kind == "timeout"
            else f"rank {g} stream broke: {exc}"
        )
        err = error_body(f"{msg} (after {t.tokens} tokens)", "server_error", code=502)
        try:
            await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return resp
