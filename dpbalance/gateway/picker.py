"""The ext_proc service: one gRPC stream per HTTP request, placed by the router's dispatcher and policy.

Per request (Envoy sends the request headers, the buffered body, the response headers and, in streamed mode,
the response body chunks):

1. request headers: the path and the API key are checked; a generation path waits for its body, any other
   path (``/v1/models``, ...) goes to a rank in rotation at once, with no accounting.
2. request body: parsed and checked as ``serve`` does (400/413), 429 when too many wait (shed), 503 when no
   rank is ready (or none of the proxy's subset hint is); else a ``Ticket`` waits in the dispatcher's pool
   and the policy places it. The answer names the rank's ``ip:port`` in the destination header and the
   ``envoy.lb`` metadata (plus ``X-data-parallel-rank`` behind one DP endpoint).
3. response headers: a 4xx is the client's (rejected, the rank is fine), a 5xx counts against the rank.
4. response body (streamed mode): tokens counted into the live loads; the request completes with its last
   chunk. In decision-only mode the request's progress is estimated (``rankload``) and it completes when
   Envoy closes the stream after a 200.

Whatever happens (client gone, Envoy or the picker stopping, a rank failing), the ticket gets exactly one
outcome and its slot is released in ``_Exchange.close``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time

import numpy as np
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from ..router.dispatcher import QueueTimeout, Ticket
from ..router.inbound import BadRequest, authorized, parse
from ..router.ranks import DP_RANK_HEADER
from ..router.relay import new_tokens
from . import protocol as P
from .config import EppConfig, endpoint_of

log = logging.getLogger("dpbalance.gateway")
GENERATION = {"/v1/completions": False, "/v1/chat/completions": True}
_DONE = b"data: [DONE]"
_ERROR_EVENT = b'data: {"error"'
_MAX_NONSTREAM = 16 * 1024**2  # a non-stream answer is kept (to read its usage) up to this size


class Picker(pb_grpc.ExternalProcessorServicer):
    def __init__(self, router, cfg: EppConfig):
        self.r, self.cfg = router, cfg
        self.endpoints = [endpoint_of(t.url) for t in router.targets]
        self.dp = bool(cfg.dp_endpoint)
        self._rr = 0
        self.pick_us: collections.deque = collections.deque(maxlen=100_000)
        self.streams = 0  # open ext_proc streams
        self.loads = None  # the RankLoads of this picker (set by the server)

    def eligible(self, subset: list[str] | None) -> np.ndarray:
        """Ranks in rotation that the subset hint (if any) allows."""
        ok = self.r.dispatcher.in_rotation.copy()
        if subset is not None:
            allowed = set(subset)
            ok &= np.array([e in allowed for e in self.endpoints], dtype=bool)
        return ok

    def route(self, g: int, on_body: bool):
        extra = {DP_RANK_HEADER: str(g)} if self.dp else None
        return (P.route_on_body if on_body else P.route_on_headers)(self.endpoints[g], extra)

    def any_rank(self, subset: list[str] | None) -> int | None:
        ok = np.flatnonzero(self.eligible(subset))
        if not len(ok):
            return None
        self._rr += 1
        return int(ok[self._rr % len(ok)])

    async def Process(self, request_iterator, context):  # noqa: N802 - the gRPC method name
        ex = _Exchange(self)
        self.streams += 1
        try:
            async for req in request_iterator:
                resp = await ex.on(req)
                if resp is not None:
                    yield resp
        finally:
            self.streams -= 1
            ex.close()


class _Exchange:
    """One HTTP request's ext_proc stream."""

    def __init__(self, picker: Picker):
        self.p, self.r = picker, picker.r
        self.chat = False
        self.subset: list[str] | None = None
        self.body = bytearray()
        self.t: Ticket | None = None
        self.status = 0
        self.carry = b""
        self.answer = bytearray()  # a non-stream answer (streamed mode)
        self.saw_done = self.errored = False
        self.passthrough = False  # not a generation request: routed on its headers, not accounted

    async def on(self, req):
        kind = req.WhichOneof("request")
        if self.subset is None:
            self.subset = P.subset_hint(req)
        if kind == "request_headers":
            return self._request_headers(req.request_headers)
        if kind == "request_body":
            if self.passthrough:
                return P.CONTINUE_REQUEST_BODY
            if len(self.body) + len(req.request_body.body) > self.r.cfg.max_body_bytes:
                return self._reject(413, "body_too_large", f"request body over {self.r.cfg.max_body_bytes} bytes")
            self.body += req.request_body.body
            if not req.request_body.end_of_stream:
                return P.CONTINUE_REQUEST_BODY
            return await self._pick()
        if kind == "response_headers":
            return self._response_headers(req)
        if kind == "response_body":
            self._response_body(req.response_body.body, req.response_body.end_of_stream)
            return P.CONTINUE_RESPONSE_BODY
        if kind == "request_trailers":
            return P.pb.ProcessingResponse(request_trailers=P.pb.TrailersResponse())
        if kind == "response_trailers":
            return P.pb.ProcessingResponse(response_trailers=P.pb.TrailersResponse())
        return None

    # ------------------------------------------------------------------ request side
    def _reject(self, status: int, reason: str, message: str, etype: str = "invalid_request_error", **kw):
        self.r.metrics.finish("rejected", reason, 0.0)
        return P.immediate(status, message, etype, **kw)

    def _request_headers(self, msg):
        h = P.headers_of(msg)
        path = h.get(":path", "").split("?", 1)[0]
        cfg = self.r.cfg
        generation = path in GENERATION and h.get(":method", "POST") == "POST"
        if not generation:  # /v1/models, /tokenize, ...: a rank in rotation answers (the key as serve wants it)
            if cfg.api_key is not None and path != "/health" and not authorized(h.get("authorization"), cfg.api_key):
                return P.immediate(
                    401, "invalid or missing API key (Authorization: Bearer KEY)", "authentication_error"
                )
            g = self.p.any_rank(self.subset)
            if g is None:
                return P.immediate(503, "no model server endpoint is ready", "server_error")
            self.passthrough = True
            return self.p.route(g, on_body=False)
        if cfg.api_key is not None and not authorized(h.get("authorization"), cfg.api_key):
            return self._reject(
                401, "unauthorized", "invalid or missing API key (Authorization: Bearer KEY)", "authentication_error"
            )
        if self.r.stopping:
            return self._reject(503, "shutting_down", "the endpoint picker is shutting down", "server_error")
        if msg.end_of_stream:
            return self._reject(400, "bad_json", "request body must be a JSON object")
        self.chat = GENERATION[path]
        return P.CONTINUE_REQUEST_HEADERS

    def _parse(self):
        cfg = self.r.cfg
        try:
            body = json.loads(bytes(self.body))
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("malformed JSON body") from None
        p = parse(body, self.chat, cfg.max_tokens_limit, cfg.allow_kv_transfer_params)
        if not p.body.get("model") and cfg.model:
            p.body = dict(p.body, model=cfg.model)
        return p, p.body is not body

    async def _pick(self):
        r, d, cfg = self.r, self.r.dispatcher, self.r.cfg
        t0 = time.perf_counter()
        try:
            p, changed = self._parse()
        except BadRequest as exc:
            return self._reject(exc.status, exc.reason, str(exc), exc.etype, param=exc.param)
        ok = self.p.eligible(self.subset)
        if not ok.any():
            why = "none of the subset hint's endpoints is ready" if self.subset is not None else "no rank is ready"
            return self._reject(
                503, "no_rank_in_rotation", f"no model server endpoint is ready ({why})", "server_error"
            )
        if len(d.pool) + r.tokenizing >= cfg.max_pending:
            return self._reject(
                429, "overloaded", "too many requests are waiting, retry later", "rate_limit_error",
                headers={"retry-after": "1"},
            )  # fmt: skip
        t = self.t = Ticket(
            rid=d.new_id(), body=p.body, chat=self.chat, stream=p.stream, prompt_tokens=0, limit=p.limit,
            arrival=time.monotonic(), key=p.key,
        )  # fmt: skip
        r.tokenizing += 1
        try:
            t.prompt_tokens, ids = await r.prompt_length(p.text, p.body if self.chat else None)
            if r.dispatcher.prefix is not None:  # cache-aware policies: the prompt's blocks, as serve keeps them
                r.dispatcher.prefix.arrive(t.rid, ids if ids is not None else p.text, t.prompt_tokens)
        finally:
            r.tokenizing -= 1
        try:
            g = await (self._place_subset(t, ok) if not ok.all() else self._place(t))
        except QueueTimeout as exc:
            r.finish(t, "failed", exc.reason)
            if exc.reason == "no_rank_in_rotation":
                return P.immediate(503, "no model server endpoint is ready", "server_error")
            return P.immediate(504, f"no decode slot within {cfg.max_wait_s:g} s", "server_error")
        if not (cfg.streamed and t.stream):
            self.p.loads.track(t)  # progress estimated (see rankload); streamed answers are counted
        out = self.p.route(g, on_body=True)
        if changed:
            raw = json.dumps(p.body, separators=(",", ":")).encode()
            out.request_body.response.body_mutation.body = raw
            hdr = out.request_body.response.header_mutation.set_headers.add()
            hdr.header.key, hdr.header.raw_value = "content-length", str(len(raw)).encode()
            hdr.append_action = hdr.OVERWRITE_IF_EXISTS_OR_ADD
        self.p.pick_us.append((time.perf_counter() - t0) * 1e6)
        return out

    async def _place(self, t: Ticket) -> int:
        d = self.r.dispatcher
        d.submit(t)
        g, _slot = await t.assigned
        return g

    async def _place_subset(self, t: Ticket, ok: np.ndarray) -> int:
        """The proxy allows only some ranks: the least-loaded of them with a free slot (the policy places the
        requests free to go anywhere; it has no per-request rank filter)."""
        d, st = self.r.dispatcher, self.r.dispatcher.state
        while True:
            room = ok & (st.free > 0) & d.in_rotation
            if room.any():
                d.flush()
                cand = np.flatnonzero(room)
                g = int(cand[np.argmin(st.loads[cand])])
                t.slot, t.rank = st.admit(t.rid, g, t.prompt_tokens, t.limit, t.key), g
                self.r.metrics.queue_wait.observe(time.monotonic() - t.arrival)
                return g
            if not (ok & d.in_rotation).any():
                raise QueueTimeout("no_rank_in_rotation")
            if time.monotonic() - t.arrival > self.r.cfg.max_wait_s:
                raise QueueTimeout("max_wait")
            await asyncio.sleep(self.r.cfg.tick_ms / 1000.0)

    # ------------------------------------------------------------------ response side
    def _response_headers(self, req):
        t = self.t
        if t is None:
            return P.CONTINUE_RESPONSE_HEADERS
        h = P.headers_of(req.response_headers)
        try:
            self.status = int(h.get(":status", "0"))
        except ValueError:
            self.status = 0
        served = P.served_endpoint(req)
        if served is not None and served != self.p.endpoints[t.rank]:
            log.warning("request %d picked %s but was served by %s", t.rid, self.p.endpoints[t.rank], served)
        g = t.rank
        self.r.metrics.upstream.labels(str(g), str(self.status)).inc()
        if 400 <= self.status < 500:
            self.r.breaker.success(g)
            self.r.finish(t, "rejected", f"rank_{self.status}")
        elif self.status != 200:
            self.r.breaker.failure(g, "http_5xx" if self.status >= 500 else "broken")
            self.r.finish(t, "failed", "rank_unavailable")
        if t.outcome is not None:
            self.p.loads.untrack(t)
            self.r.dispatcher.release(t)
        return P.CONTINUE_RESPONSE_HEADERS

    def _response_body(self, data: bytes, end: bool) -> None:
        t = self.t
        if t is None or t.outcome is not None:
            return
        if not t.stream:
            if len(self.answer) + len(data) <= _MAX_NONSTREAM:
                self.answer += data
            if end:
                self._nonstream_done()
            return
        block = self.carry + data if self.carry else data
        cut = block.rfind(b"\n\n") + 2
        block, self.carry = (block[:cut], block[cut:]) if cut < len(block) else (block, b"")
        if block:
            n = new_tokens(block, t.tokens)
            if n > 0:
                if t.tokens == 0:
                    t.first_token = time.monotonic()
                    self.r.metrics.ttft.observe(t.first_token - t.arrival)
                self.r.dispatcher.add_tokens(t, n)
            self.saw_done = self.saw_done or _DONE in block
            self.errored = self.errored or _ERROR_EVENT in block
        if end:
            if self.saw_done and not self.errored:
                self.r.breaker.success(t.rank)
                self.r.finish(t, "completed", "ok")
            else:
                self.r.breaker.failure(t.rank, "stream_error" if self.errored else "broken")
                self.r.finish(t, "failed", "upstream_error" if self.errored else "upstream_broken")

    def _nonstream_done(self) -> None:
        t = self.t
        try:
            n = int((json.loads(bytes(self.answer)).get("usage") or {}).get("completion_tokens") or 0)
        except (ValueError, AttributeError, TypeError, UnicodeDecodeError):
            n = 0
        self.r.metrics.tokens[t.rank] += n
        t.tokens = n
        self.r.breaker.success(t.rank)
        self.r.finish(t, "completed", "ok")

    # ------------------------------------------------------------------ the end of the stream
    def close(self) -> None:
        """The stream ended (Envoy half-closes it, or resets it once the HTTP exchange is over, or the client or
        this picker went away): the ticket's one outcome, and its slot released.

        Decision-only mode never sees the body: a request the rank answered with 200 counts as completed when
        its stream ends, whether the client read it all or left (the rank aborts it either way)."""
        t, r = self.t, self.r
        if t is None:
            return
        if t.outcome is None:
            if self.status == 200 and not r.cfg.streamed and not r.stopping:
                self.p.loads.progress_one(t)
                t.tokens = max(t.tokens, t.est_tokens)
                r.metrics.tokens[t.rank] += t.tokens
                r.breaker.success(t.rank)
                r.finish(t, "completed", "ok")
            else:
                r.finish(t, "failed", "shutdown" if r.stopping else "client_disconnect")
        self.p.loads.untrack(t)
        r.dispatcher.release(t)
        r.dispatcher.drop(t)
