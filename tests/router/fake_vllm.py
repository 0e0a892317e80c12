"""A strict vLLM-like rank for tests: answers errors the way vLLM's OpenAI server does and returns rich
non-stream bodies (several choices, finish_reason "stop", logprobs, tool calls, extra fields), so the router
can be checked for passing them through unchanged.

- unknown ``model`` → 404 ``NotFoundError``; ``kv_transfer_params`` that is not an object, ``stream_options``
  without ``stream``, a non-integer ``max_tokens`` → 400 ``BadRequestError`` (vLLM's body shape);
- streams honour ``include_usage`` / ``continuous_usage_stats`` like vLLM (usage in every chunk only when
  both are set; a final usage-only chunk when ``include_usage``); ``"stall": true`` in the body makes the rank
  send one token and then nothing (a stalled engine);
- ``running`` counts requests in progress (it must be 0 after every test), ``seen`` keeps request bodies.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

MODEL = "fake-model"


def _err(status: int, message: str, etype: str, param=None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": etype, "param": param, "code": status}}, status=status
    )


class FakeRank:
    def __init__(self, tokens_per_s: float = 200.0):
        self.delay = 1.0 / tokens_per_s
        self.running = 0
        self.seen: list[dict] = []
        self.headers: list[dict] = []
        self.completed = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    def body_for(self, req: dict, chat: bool) -> dict:
        n = req.get("n") or 1
        if chat:
            choices = [
                {
                    "index": i,
                    "message": {
                        "role": "assistant",
                        "content": f"answer {i}",
                        "reasoning_content": None,
                        "tool_calls": [
                            {"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                    "logprobs": {"content": [{"token": "answer", "logprob": -0.5, "bytes": [97], "top_logprobs": []}]},
                    "finish_reason": "tool_calls" if i else "stop",
                    "stop_reason": None,
                }
                for i in range(n)
            ]
            obj, rid = "chat.completion", "chatcmpl-fake-1234"
        else:
            choices = [
                {
                    "index": i,
                    "text": f" text {i}",
                    "logprobs": {
                        "tokens": [" text"],
                        "token_logprobs": [-0.1],
                        "top_logprobs": [None],
                        "text_offset": [0],
                    },
                    "finish_reason": "stop",
                    "stop_reason": 42,
                }
                for i in range(n)
            ]
            obj, rid = "text_completion", "cmpl-fake-1234"
        return {
            "id": rid,
            "object": obj,
            "created": 1700000000,
            "model": MODEL,
            "choices": choices,
            "usage": {
                "prompt_tokens": 3,
                "total_tokens": 3 + 2 * n,
                "completion_tokens": 2 * n,
                "prompt_tokens_details": None,
            },
            "system_fingerprint": "fp-fake",
            "service_tier": None,
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }

    def check(self, req) -> web.Response | None:
        if not isinstance(req, dict):
            return _err(400, "body must be an object", "BadRequestError")
        if req.get("model") not in (None, MODEL):
            return _err(404, f"The model `{req['model']}` does not exist.", "NotFoundError", "model")
        kv = req.get("kv_transfer_params")
        if kv is not None and not isinstance(kv, dict):
            return _err(
                400, "1 validation error: kv_transfer_params: Input should be a valid dictionary", "BadRequestError"
            )
        if req.get("stream_options") is not None and not req.get("stream"):
            return _err(400, "Stream options can only be defined when `stream=True`.", "BadRequestError")
        mt = req.get("max_tokens", 16)
        if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
            return _err(400, f"max_tokens must be at least 1, got {mt}.", "BadRequestError")
        return None

    async def handle(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            req = await request.json()
        except ValueError:
            return _err(400, "invalid JSON", "BadRequestError")
        self.headers.append(dict(request.headers))
        bad = self.check(req)
        if bad is not None:
            return bad
        self.seen.append(req)
        self.running += 1
        try:
            if not req.get("stream"):
                await asyncio.sleep(self.delay * (req.get("max_tokens") or 16))
                self.completed += 1
                return web.json_response(self.body_for(req, chat))
            return await self._stream(request, req, chat)
        finally:
            self.running -= 1

    async def _stream(self, request: web.Request, req: dict, chat: bool) -> web.StreamResponse:
        so = req.get("stream_options") or {}
        usage_each = so.get("include_usage") and so.get("continuous_usage_stats")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = req.get("max_tokens") or 16
        obj = "chat.completion.chunk" if chat else "text_completion"
        for i in range(1, n + 1):
            if chat:
                choice = {
                    "index": 0,
                    "delta": {"content": f" t{i}"},
                    "logprobs": None,
                    "finish_reason": "stop" if i == n else None,
                }
            else:
                choice = {
                    "index": 0,
                    "text": f" t{i}",
                    "logprobs": None,
                    "finish_reason": "stop" if i == n else None,
                    "stop_reason": None,
                }
            ev = {"id": "cmpl-fake-1234", "object": obj, "created": 1700000000, "model": MODEL, "choices": [choice]}
            if usage_each:
                ev["usage"] = {"prompt_tokens": 3, "total_tokens": 3 + i, "completion_tokens": i}
            await resp.write(b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n")
            if req.get("stall") and i == 1:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.delay)
        if so.get("include_usage"):
            ev = {
                "id": "cmpl-fake-1234",
                "object": obj,
                "created": 1700000000,
                "model": MODEL,
                "choices": [],
                "usage": {"prompt_tokens": 3, "total_tokens": 3 + n, "completion_tokens": n},
            }
            await resp.write(b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.completed += 1
        return resp

    def app(self) -> web.Application:
        app = web.Application()

        async def completions(r):
            return await self.handle(r, False)

        async def chat(r):
            return await self.handle(r, True)

        async def health(_):
            return web.Response(text="")

        async def models(_):
            return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "vllm"}]})

        async def tokenize(r):
            return web.json_response({"count": 3, "max_model_len": 2048, "tokens": [1, 2, 3]})

        app.router.add_post("/v1/completions", completions)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/health", health)
        app.router.add_get("/v1/models", models)
        app.router.add_post("/tokenize", tokenize)
        return app

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
