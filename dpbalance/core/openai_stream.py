"""Reading an OpenAI-style streaming completion as a client (used by the load generator and the calibration).

The server sends Server-Sent Events whose ``data:`` lines hold one JSON chunk each and end with ``data: [DONE]``.
aiohttp splits the body into lines; this module turns those lines into parsed chunks and keeps the exact count of
generated tokens from the usage each chunk carries (``stream_options.continuous_usage_stats``), falling back to one
token per chunk with text when the server sends no usage. The router's own relay does not use this: it works on
raw bytes for speed (see the router's relay module).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp

#: ask the server to put the running token count in every chunk, and a final usage-only chunk
USAGE_OPTIONS = {"include_usage": True, "continuous_usage_stats": True}


class StreamError(Exception):
    """The stream sent something that is not a completion chunk, or an error event."""


async def chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[dict]:
    """Every JSON chunk of a streaming response, in order; returns at ``[DONE]``.

    Raises StreamError on a chunk that is not JSON or an ``error`` event, and when the body ends without
    ``[DONE]`` (the server stopped mid-stream).
    """
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, other SSE fields
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        try:
            obj = json.loads(data)
        except ValueError:
            raise StreamError(f"a chunk that is not JSON: {data[:120]!r}") from None
        if "error" in obj:
            raise StreamError(f"error event: {str(obj['error'])[:300]}")
        yield obj
    raise StreamError("the stream ended without [DONE]")


def tokens_after(chunk: dict, before: int) -> int:
    """Generated tokens after ``chunk``: its usage count when it has one, else ``before`` + 1 if it carries text."""
    usage = chunk.get("usage") or {}
    if usage.get("completion_tokens") is not None:
        return max(before, int(usage["completion_tokens"]))
    for c in chunk.get("choices") or ():
        if c.get("text") or (c.get("delta") or {}).get("content"):
            return before + 1
    return before
