"""``dpbalance epp``: the Gateway API Inference Extension's Endpoint Picker (an Envoy ext_proc service) over the
router's dispatcher and the same policy objects.

Rooms: ``config`` (settings: ``serve``'s plus the gateway's), ``protocol`` (the picker protocol on ext_proc
messages), ``picker`` (the ext_proc service, one stream per request), ``rankload`` (the ranks' own metrics:
the load other replicas put on them, and the step clock), ``envoy`` (the Envoy bootstrap), ``server`` (the
process: gRPC, health, metrics). ``config`` and ``envoy`` need no gRPC; the rest needs the ``gateway`` extra.
"""

from ..core.lazy import lazy_exports
from .config import EppConfig

#: loaded on first use: the gRPC side needs the ``gateway`` extra, and the Envoy bootstrap pulls in aiohttp, which
#: the CLI need not load to start
_LAZY = {"Epp": ".server", "start_epp": ".server", "bootstrap": ".envoy", "bootstrap_yaml": ".envoy"}

__all__ = ["EppConfig", *_LAZY]

__getattr__ = lazy_exports(__name__, _LAZY)
