"""``dpbalance loadgen``: replay a trace as real streaming requests against an OpenAI-compatible endpoint.

``LoadgenConfig`` is light; the other names load the HTTP client (aiohttp) on first use."""

from __future__ import annotations

from ..core.lazy import lazy_exports
from .config import LoadgenConfig

_LAZY = {name: ".client" for name in ("Outcome", "prompt_ids", "run", "schedule", "summarize")}

__all__ = ["LoadgenConfig", *_LAZY]

__getattr__ = lazy_exports(__name__, _LAZY)
