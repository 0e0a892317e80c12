"""The gateway tests need the ``gateway`` extra (gRPC, the Envoy protos, Envoy itself); ``make test`` installs
it. Without it they are not collected (the rest of the suite still runs)."""

import importlib.util

_NEEDED = ("grpc", "grpc_health", "envoy.service")


def _have(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        return False


collect_ignore_glob = [] if all(_have(m) for m in _NEEDED) else ["test_*.py"]
