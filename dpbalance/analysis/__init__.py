"""Offline analysis: the whole-trace lower bound and predictor evaluation (not used by any policy)."""

from .offline_bound import OfflineBound, offline_lower_bound
from .predictor_eval import auc, evaluate

__all__ = ["OfflineBound", "auc", "evaluate", "offline_lower_bound"]
