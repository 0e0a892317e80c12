"""``dpbalance engine-sim``: a barrier-synchronized emulator of one data-parallel engine group, speaking vLLM's
HTTP API, built on the engine model the simulator runs (``dpbalance.engine``).

The names below load their module on first use: the CLI imports the package for the typed ``EngineSimConfig``
its options come from, and need not load the HTTP server (aiohttp) to start."""

from __future__ import annotations

from ..core.lazy import lazy_exports

#: public name -> the module of this package that defines it
_LAZY = {
    "EngineServer": ".api",
    "start_group": ".api",
    "EngineGroup": ".group",
    "EngineSimConfig": ".group",
    "Rank": ".group",
    "SimRequest": ".group",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
