"""Offline analysis: the whole-trace lower bound and predictor evaluation (not used by any policy). The names
load their module on first use (the bound needs scipy, which the CLI should not load just to start)."""

from __future__ import annotations

from ..core.lazy import lazy_exports

_LAZY = {
    "OfflineBound": ".offline_bound",
    "offline_lower_bound": ".offline_bound",
    "auc": ".predictor_eval",
    "evaluate": ".predictor_eval",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
