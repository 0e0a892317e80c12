"""The vLLM-like HTTP API of ``engine-sim``: one app per rank, and optionally one DP endpoint for the group.

Each rank speaks the OpenAI subset a router needs, with vLLM's conventions: ``/v1/completions`` and
``/v1/chat/completions`` (stream or not, ``max_tokens``/``max_completion_tokens``, ``ignore_eos``,
``stream_options`` with ``include_usage`` and ``continuous_usage_stats``), ``/tokenize`` (a prompt of s
whitespace-separated words is s tokens), ``/detokenize``, ``/version``, ``/v1/models``, ``/health``,
``/server_info?config_format=json`` (``max_num_seqs`` and the DP size, as vLLM serves it in dev mode) and
``/metrics`` with vLLM's names. Errors look like vLLM's: 404 for an unknown model, 400 for a bad parameter,
``{"error": {"message", "type", "param", "code"}}``. On the DP endpoint the ``X-data-parallel-rank`` header
(an integer) pins the request to a rank; out of range is a 400, a non-integer is ignored.

Failure injection: ``POST /admin/fail|revive|break|pause|resume?rank=r``; ``EngineServer.kill(r)`` and
``revive(r)`` stop and restart a rank's listener (connection refused in between).
"""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib

from aiohttp import web

from ..core.constants import DP_RANK_HEADER  # noqa: E402
from ..engine.hashing import block_hashes
from .group import EngineGroup, Rank, SimRequest

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def _err(status: int, message: str, etype: str, param: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": etype, "param": param, "code": status}}, status=status
    )


def _bad(message: str, param: str | None = None) -> web.Response:
    return _err(400, message, "BadRequestError", param)


def prompt_token_list(prompt) -> list:
    """The prompt as the emulator tokenizes it: token ids as given, else whitespace-separated words (chat: the
    messages' contents in order)."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return prompt.split()
    if isinstance(prompt, list):
        if prompt and isinstance(prompt[0], int):
            return prompt
        if prompt and isinstance(prompt[0], dict):  # chat messages
            return [w for m in prompt for w in str(m.get("content") or "").split()]
        return [t for p in prompt for t in prompt_token_list(p)]
    return str(prompt).split()


def count_tokens(prompt) -> int:
    return len(prompt_token_list(prompt))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_params(body, chat: bool, model: str):
    """(max_tokens, stream, stream_options) or an error response, as vLLM would answer."""
    if not isinstance(body, dict):
        return _bad("request body must be a JSON object")
    if body.get("model") not in (None, model):
        return _err(404, f"The model `{body['model']}` does not exist.", "NotFoundError", "model")
    if chat:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _bad("'messages' must be a non-empty list", "messages")
    elif not isinstance(body.get("prompt"), (str, list)) or not body["prompt"]:
        return _bad("'prompt' must be a string or a list", "prompt")
    mt = (
        body.get("max_completion_tokens")
        if chat and body.get("max_completion_tokens") is not None
        else body.get("max_tokens")
    )
    if mt is None:
        mt = 16
    if not _is_int(mt) or mt < 1:
        return _bad(f"max_tokens must be at least 1, got {mt}.", "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        return _bad("'stream' must be a boolean", "stream")
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            return _bad("'stream_options' must be an object", "stream_options")
        if not stream:
            return _bad("Stream options can only be defined when `stream=True`.", "stream_options")
    kv = body.get("kv_transfer_params")
    if kv is not None and not isinstance(kv, dict):
        return _bad("'kv_transfer_params' must be an object", "kv_transfer_params")
    for k in ("temperature", "top_p"):
        v = body.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return _bad(f"'{k}' must be a number", k)
    n = body.get("n", 1)
    if n not in (None, 1):
        return _bad("engine-sim emulates n=1 only", "n")
    return mt, stream, so or {}


class _Emitter:
    """Writes one SSE event per token straight to the connection (HTTP chunked framing)."""

    __slots__ = ("tr", "head", "tok", "last", "usage", "prompt")

    def __init__(self, tr, req: SimRequest, so: dict):
        self.tr = tr
        obj = "chat.completion.chunk" if req.chat else "text_completion"
        self.head = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[' % (
            req.rid.encode(),
            obj.encode(),
            req.created,
            _DUMPS(req.model).encode(),
        )
        if req.chat:
            self.tok = b'{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]'
            self.last = b'{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":"length"}]'
        else:
            self.tok = b'{"index":0,"text":" tok","logprobs":null,"finish_reason":null,"stop_reason":null}]'
            self.last = b'{"index":0,"text":" tok","logprobs":null,"finish_reason":"length","stop_reason":null}]'
        self.usage = bool(so.get("include_usage") and so.get("continuous_usage_stats"))
        self.prompt = req.prompt_tokens

    def usage_bytes(self, n: int) -> bytes:
        return b',"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}' % (
            self.prompt,
            self.prompt + n,
            n,
        )

    def write(self, ev: bytes) -> None:
        if not self.tr.is_closing():
            self.tr.write(b"%x\r\n%s\r\n" % (len(ev), ev))

    def __call__(self, req: SimRequest, last: bool) -> None:
        ev = self.head + (self.last if last else self.tok)
        if self.usage:
            ev += self.usage_bytes(req.generated)
        self.write(ev + b"}\n\n")


def _full_response(req: SimRequest, body: dict) -> dict:
    usage = {
        "prompt_tokens": req.prompt_tokens,
        "total_tokens": req.prompt_tokens + req.generated,
        "completion_tokens": req.generated,
        "prompt_tokens_details": None,
    }
    text = " tok" * req.generated
    if req.chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "tool_calls": []},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
        out = {
            "id": req.rid,
            "object": "chat.completion",
            "created": req.created,
            "model": req.model,
            "choices": [choice],
            "usage": usage,
        }
    else:
        out = {
            "id": req.rid,
            "object": "text_completion",
            "created": req.created,
            "model": req.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None}],
            "usage": usage,
        }
    out["system_fingerprint"] = None
    out["kv_transfer_params"] = (
        {"remote_engine_id": "sim", "remote_block_ids": [0], "do_remote_prefill": True}
        if body.get("kv_transfer_params")
        else None
    )
    return out


class EngineServer:
    def __init__(self, group: EngineGroup, host: str = "127.0.0.1"):
        self.group, self.host = group, host
        self.runners: list[web.AppRunner] = []
        self.ports: list[int] = []
        self.urls: list[str] = []
        self.dp_url: str | None = None
        self._dp_runner: web.AppRunner | None = None

    async def _serve(self, app: web.Application, port: int) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]

    async def start(self, base_port: int = 0, dp_port: int | None = None) -> None:
        for i in range(len(self.group.ranks)):
            runner, port = await self._serve(self.app(i), base_port + i if base_port else 0)
            self.runners.append(runner)
            self.ports.append(port)
            self.urls.append(f"http://{self.host}:{port}")
        if dp_port is not None:
            self._dp_runner, p = await self._serve(self.app(None), dp_port)
            self.dp_url = f"http://{self.host}:{p}"

    async def kill(self, i: int) -> None:
        """Rank i's server goes away: its streams are cut and new connections are refused."""
        self.group.break_streams(self.group.ranks[i])
        await self.runners[i].cleanup()

    async def revive(self, i: int) -> None:
        self.group.ranks[i].healthy = True
        self.runners[i], _ = await self._serve(self.app(i), self.ports[i])

    async def close(self) -> None:
        for r in self.runners + ([self._dp_runner] if self._dp_runner else []):
            await r.cleanup()

    # ------------------------------------------------------------------ the apps
    def app(self, idx: int | None) -> web.Application:
        """Rank ``idx``'s app, or the DP endpoint's (``None``)."""
        app = web.Application(client_max_size=64 * 1024**2)
        h = RankHandlers(self.group, idx)
        app.router.add_get("/health", h.health)
        app.router.add_get("/v1/models", h.models)
        app.router.add_get("/version", h.version)
        app.router.add_get("/server_info", h.server_info)
        app.router.add_post("/tokenize", h.tokenize)
        app.router.add_post("/detokenize", h.detokenize)
        app.router.add_get("/metrics", h.metrics)
        app.router.add_post("/v1/completions", h.completions)
        app.router.add_post("/v1/chat/completions", h.chat)
        app.router.add_post("/admin/{action:fail|revive|break|pause|resume}", h.admin)
        app.router.add_get("/admin/stats", h.stats)
        app.router.add_post("/admin/reset_stats", h.reset)
        return app


class RankHandlers:
    """The HTTP handlers of one rank's port (``idx``), or of the DP endpoint (``idx`` None: the
    X-data-parallel-rank header picks the rank, else vLLM's own rule)."""

    def __init__(self, group: EngineGroup, idx: int | None):
        self.g, self.idx = group, idx

    def rank_of(self, request) -> Rank | web.Response:
        if self.idx is not None:
            return self.g.ranks[self.idx]
        raw = request.headers.get(DP_RANK_HEADER)
        try:
            r = int(raw) if raw is not None else None
        except ValueError:
            r = None  # vLLM ignores a header that is not an integer
        if r is None:
            return self.g.pick_rank()
        if not 0 <= r < len(self.g.ranks):
            return _bad(f"data_parallel_rank {r} is out of range [0, {len(self.g.ranks)}).")
        return self.g.ranks[r]

    async def health(self, _):
        ok = all(rk.healthy for rk in self.g.ranks) if self.idx is None else self.g.ranks[self.idx].healthy
        return web.Response(status=200 if ok else 503)

    async def models(self, _):
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.g.model,
                        "object": "model",
                        "created": 0,
                        "owned_by": "vllm",
                        "root": self.g.model,
                        "parent": None,
                        "max_model_len": 1_000_000_000,
                    }
                ],
            }
        )

    async def version(self, _):
        return web.json_response({"version": "engine-sim"})

    async def server_info(self, request):
        par = {"data_parallel_size": len(self.g.ranks)}
        if self.idx is not None:
            par["data_parallel_rank"] = self.idx
        return web.json_response(
            {"vllm_config": {"scheduler_config": {"max_num_seqs": self.g.slots}, "parallel_config": par}}
        )

    async def tokenize(self, request):
        try:
            body = await request.json()
        except ValueError:
            return _bad("invalid JSON")
        if not isinstance(body, dict):
            return _bad("request body must be a JSON object")
        toks = prompt_token_list(body.get("prompt", body.get("messages", "")))
        ids = [t if isinstance(t, int) else zlib.crc32(t.encode()) & 0xFFFF for t in toks]  # equal words, equal ids
        return web.json_response({"count": len(ids), "max_model_len": 1_000_000_000, "tokens": ids, "token_strs": None})

    async def detokenize(self, request):
        try:
            body = await request.json()
            toks = body["tokens"]
            assert isinstance(toks, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return _bad("'tokens' must be a list of token ids", "tokens")
        return web.json_response({"prompt": " ".join("w" for _ in toks)})

    async def metrics(self, _):
        lines = []
        for rk in self.g.ranks if self.idx is None else [self.g.ranks[self.idx]]:
            lbl = f'{{engine="{rk.idx}",model_name="{self.g.model}"}}'
            for name, kind, value in (
                ("vllm:num_requests_running", "gauge", len(rk.running)),
                ("vllm:num_requests_waiting", "gauge", len(rk.waiting)),
                ("vllm:kv_cache_usage_perc", "gauge", min(1.0, rk.load() / self.g.kv_capacity)),
                ("vllm:generation_tokens_total", "counter", rk.generation_tokens),
                ("vllm:prompt_tokens_total", "counter", rk.prompt_tokens),
                ("vllm:request_success_total", "counter", rk.requests_ok),
                ("vllm:prefix_cache_queries_total", "counter", self.g.cache_stats(rk)[0]),
                ("vllm:prefix_cache_hits_total", "counter", self.g.cache_stats(rk)[1]),
            ):
                lines += [f"# TYPE {name} {kind}", f"{name}{lbl} {value}"]
            bs = self.g.block_size  # its engine's KV block (capacity = num_gpu_blocks × block_size, as vLLM says)
            cache = f'{lbl[:-1]},block_size="{bs}",num_gpu_blocks="{self.g.kv_capacity // bs}"}}'
            lines += ["# TYPE vllm:cache_config_info gauge", f"vllm:cache_config_info{cache} 1"]
            for name, total, count in (
                ("vllm:inter_token_latency_seconds", rk.itl_sum, rk.itl_count),
                ("vllm:iteration_tokens_total", rk.iteration_tokens, rk.iterations),
            ):
                lines += [
                    f"# TYPE {name} histogram",
                    f'{name}_bucket{lbl[:-1]},le="+Inf"}} {count}',
                    f"{name}_sum{lbl} {total}",
                    f"{name}_count{lbl} {count}",
                ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def completions(self, request, chat: bool = False):
        rk = self.rank_of(request)
        if isinstance(rk, web.Response):
            return rk
        if not rk.healthy:
            return _err(503, "rank unavailable", "ServiceUnavailableError")
        try:
            body = await request.json()
        except ValueError:
            return _bad("invalid JSON body")
        checked = check_params(body, chat, self.g.model)
        if isinstance(checked, web.Response):
            return checked
        max_tokens, stream, so = checked
        toks = prompt_token_list(body.get("messages") if chat else body.get("prompt"))
        req = SimRequest(
            rid=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}",
            prompt_tokens=len(toks),
            hashes=block_hashes(toks, self.g.block_size) if self.g.wants_hashes else None,
            max_tokens=max_tokens,
            chat=chat,
            model=body.get("model") or self.g.model,
            done=asyncio.get_running_loop().create_future(),
            kv=body.get("kv_transfer_params"),
        )
        if (req.kv or {}).get("do_remote_decode"):  # PD prefill call: one token, hand back KV handles
            req.max_tokens = 1
        try:
            if stream:
                return await _stream(request, self.g, rk, req, so)
            req.gone = lambda: request.transport is None or request.transport.is_closing()
            self.g.submit(rk, req)
            if await req.done != "ok":
                return _err(500, "engine stream broken", "InternalServerError")
            return web.json_response(_full_response(req, body), dumps=_DUMPS)
        finally:
            self.g.forget(rk, req)

    async def chat(self, r):
        return await self.completions(r, chat=True)

    async def admin(self, request):
        try:
            rk = self.g.ranks[int(request.query.get("rank", self.idx if self.idx is not None else 0))]
        except (ValueError, IndexError):
            return _bad("bad rank")
        action = request.match_info["action"]
        if action in ("fail", "break"):
            n = self.g.break_streams(rk)
            if action == "fail":
                rk.healthy = False
            return web.json_response({"rank": rk.idx, "healthy": rk.healthy, "broken_streams": n})
        if action in ("pause", "resume"):
            rk.paused = action == "pause"
            return web.json_response({"rank": rk.idx, "paused": rk.paused})
        rk.healthy, rk.paused = True, False
        return web.json_response({"rank": rk.idx, "healthy": True})

    async def stats(self, _):
        return web.json_response(self.g.stats())

    async def reset(self, _):
        self.g.reset_stats()
        return web.json_response({"ok": True})


async def _stream(request: web.Request, g: EngineGroup, rk: Rank, req: SimRequest, so: dict) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    tr = request.transport
    if tr is None:
        return resp
    em = _Emitter(tr, req, so)
    req.emit = em
    req.gone = tr.is_closing
    if req.chat:  # vLLM's first chat chunk: the role
        ev = em.head + b'{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
        em.write(ev + (em.usage_bytes(0) if em.usage else b"") + b"}\n\n")
    g.submit(rk, req)
    how = await req.done
    if how == "break":  # a dying engine: the connection is cut without [DONE]
        tr.close()
        return resp
    if how != "ok":
        return resp
    if so.get("include_usage"):
        em.write(em.head + b"]" + em.usage_bytes(req.generated) + b"}\n\n")
    em.write(b"data: [DONE]\n\n")
    try:
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    return resp


async def start_group(ranks: int, base_port: int = 0, host: str = "127.0.0.1", dp_port: int | None = None, **kw):
    """Start the group and its servers; ``base_port=0`` picks free ports. Returns (group, base URLs, runners);
    the group's ``server`` attribute (``EngineServer``) can kill and revive ranks and gives
    ``dp_url`` when ``dp_port`` is set (0 = a free port)."""
    group = EngineGroup(ranks, **kw)
    group.start()
    server = EngineServer(group, host)
    await server.start(base_port, dp_port)
    group.server = server
    return group, server.urls, server.runners
