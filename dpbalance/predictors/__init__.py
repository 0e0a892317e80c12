"""Output-length predictors for the look-ahead policies (BR-H, BF-IO); see ``base`` for the contract."""

from .base import Predictor, PredictorError, expected_steps, finish_stats
from .registry import PREDICTORS, make_predictor

__all__ = ["PREDICTORS", "Predictor", "PredictorError", "expected_steps", "finish_stats", "make_predictor"]
