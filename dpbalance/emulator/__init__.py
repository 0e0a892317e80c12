"""``dpbalance engine-sim``: a barrier-synchronized emulator of one data-parallel engine group, speaking vLLM's
HTTP API, built on the engine model the simulator runs (``dpbalance.engine``)."""

from .api import EngineServer, start_group
from .group import EngineGroup, EngineSimConfig, Rank, SimRequest

__all__ = ["EngineGroup", "EngineServer", "EngineSimConfig", "Rank", "SimRequest", "start_group"]
