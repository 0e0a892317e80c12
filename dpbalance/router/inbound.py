"""Client requests: reading the body safely, the checks the router itself needs, OpenAI-style error bodies.

The router checks only what it uses (the prompt for its length and key, the output budget, ``stream`` and
``stream_options``) plus a few cheap type checks; everything else goes to the rank, whose own 400/404 comes
back to the client unchanged. Every problem the router finds is a 400 (413 for a body too large, 408 for a
body that does not arrive) with ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass

from aiohttp import web

_MASK63 = (1 << 63) - 1
_DEFAULT_MAX_TOKENS = 16  # vLLM's completions default
_DEFAULT_CHAT_HINT = 4096  # chat without a budget runs to the context limit; the policy's length hint only


class BadRequest(Exception):
    def __init__(
        self,
        message: str,
        status: int = 400,
        param: str | None = None,
        etype: str = "invalid_request_error",
        reason: str = "bad_request",
    ):
        super().__init__(message)
        self.status, self.param, self.etype, self.reason = status, param, etype, reason


def error_body(message: str, etype: str = "invalid_request_error", param: str | None = None, code=None) -> dict:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def json_error(
    status: int,
    message: str,
    etype: str = "invalid_request_error",
    param: str | None = None,
    headers: dict | None = None,
) -> web.Response:
    return web.json_response(error_body(message, etype, param, status), status=status, headers=headers)


def authorized(header: str | None, api_key: str) -> bool:
    """``Authorization: Bearer KEY`` (scheme in any case); constant-time, safe for any bytes in the header."""
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    got = token.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(got, api_key.encode("utf-8"))


def prompt_key(prompt) -> int:
    """A stable 63-bit identity of a prompt (text, token ids or chat messages); equal prompts share a key."""
    h = hashlib.blake2b(
        json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"), digest_size=8
    )
    return int.from_bytes(h.digest(), "little") & _MASK63


async def read_json(request: web.Request, max_bytes: int, timeout_s: float):
    """The parsed JSON body; BadRequest (413/408/400) for bodies too large, too slow or not JSON."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadRequest(f"request body is over the {max_bytes}-byte limit", status=413, reason="too_large")
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise BadRequest(
            f"request body did not arrive within {timeout_s:g} s (shorter than its Content-Length?)",
            status=408,
            reason="body_timeout",
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(f"request body is over the {max_bytes}-byte limit", status=413, reason="too_large") from None
    if len(raw) > max_bytes:
        raise BadRequest(f"request body is over the {max_bytes}-byte limit", status=413, reason="too_large")
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadRequest("malformed JSON body: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints over Python's digit limit
        raise BadRequest(f"malformed JSON body: {str(exc)[:200]}") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class Parsed:
    body: dict
    chat: bool
    stream: bool
    limit: int  # output budget hint
    text: object  # what /tokenize gets: a string, or token ids (their count is the length)
    key: int
    want_usage: bool  # client asked stream_options.include_usage
    want_continuous: bool  # client asked stream_options.continuous_usage_stats


def parse(body, chat: bool, max_tokens_limit: int, allow_kv: bool) -> Parsed:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if "model" in body and not isinstance(body["model"], str):
        raise BadRequest("'model' must be a string", param="model")
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise BadRequest("'messages' must be a non-empty list of {role, content} objects", param="messages")
        parts = []
        for m in msgs:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise BadRequest("each message needs a string 'role'", param="messages")
            c = m.get("content")
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, list):  # content parts: the text ones count
                parts += [p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
            elif c is not None:
                raise BadRequest("message 'content' must be a string, a list of parts or null", param="messages")
        text, key_src = "\n".join(parts), msgs
    else:
        if "prompt" not in body:
            raise BadRequest("missing required field 'prompt'", param="prompt")
        pr = body["prompt"]
        if isinstance(pr, str):
            text = pr
        elif isinstance(pr, list) and pr and all(_is_int(t) for t in pr):
            text = pr
        elif isinstance(pr, list) and pr and all(isinstance(p, str) for p in pr):
            text = "\n".join(pr)  # a batch of prompts: one request, their lengths summed
        elif isinstance(pr, list) and pr and all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in pr):
            text = [t for p in pr for t in p]
        else:
            raise BadRequest(
                "'prompt' must be a string, a list of strings, a non-empty list of token ids, or a list of such lists",
                param="prompt",
            )
        key_src = pr
    budget = None
    for name in ("max_completion_tokens", "max_tokens"):  # vLLM: max_completion_tokens wins when both are given
        v = body.get(name)
        if v is None:
            continue
        if not _is_int(v):
            raise BadRequest(f"'{name}' must be an integer", param=name)
        if v < 1 or v > max_tokens_limit:
            raise BadRequest(f"'{name}' must be between 1 and {max_tokens_limit}", param=name)
        if budget is None:
            budget = v
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise BadRequest("'stream_options' must be an object", param="stream_options")
    so = so or {}
    for k in ("include_usage", "continuous_usage_stats"):
        if k in so and so[k] is not None and not isinstance(so[k], bool):
            raise BadRequest(f"'stream_options.{k}' must be a boolean", param="stream_options")
    for k in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if k in body and body[k] is not None and not _is_num(body[k]):
            raise BadRequest(f"'{k}' must be a number", param=k)
    if "n" in body and body["n"] is not None and (not _is_int(body["n"]) or body["n"] < 1):
        raise BadRequest("'n' must be a positive integer", param="n")
    if "kv_transfer_params" in body and not allow_kv:
        body = {k: v for k, v in body.items() if k != "kv_transfer_params"}
    stream = bool(body.get("stream"))
    return Parsed(
        body=body,
        chat=chat,
        stream=stream,
        limit=budget or (_DEFAULT_CHAT_HINT if chat else _DEFAULT_MAX_TOKENS),
        text=text,
        key=prompt_key(key_src),
        want_usage=bool(so.get("include_usage")),
        want_continuous=bool(so.get("include_usage") and so.get("continuous_usage_stats")),
    )
