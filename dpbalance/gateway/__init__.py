"""``dpbalance epp``: the Gateway API Inference Extension's Endpoint Picker (an Envoy ext_proc service) over the
router's dispatcher and the same policy objects.

Rooms: ``config`` (settings: ``serve``'s plus the gateway's), ``protocol`` (the picker protocol on ext_proc
messages), ``picker`` (the ext_proc service, one stream per request), ``rankload`` (the ranks' own metrics:
the load other replicas put on them, and the step clock), ``envoy`` (the Envoy bootstrap), ``server`` (the
process: gRPC, health, metrics). ``config`` and ``envoy`` need no gRPC; the rest needs the ``gateway`` extra.
"""

from .config import EppConfig
from .envoy import bootstrap, bootstrap_yaml

__all__ = ["Epp", "EppConfig", "bootstrap", "bootstrap_yaml", "start_epp"]


def __getattr__(name: str):
    if name in ("Epp", "start_epp"):  # the gRPC side, imported when used
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
