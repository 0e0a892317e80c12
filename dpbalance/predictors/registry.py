"""Every output-length predictor, by name (the ``predictor=`` option of ``brh`` and ``bfio``)."""

from __future__ import annotations

from ..core.specs import Entry, Registry
from ..core.workload import Workload
from .base import Predictor
from .empirical import ExactMatchConfig, ExactMatchPredictor, SurvivalPredictor
from .oracle import OracleConfig, OraclePredictor

PREDICTORS: Registry[Predictor] = Registry(
    "predictor",
    entries=[
        Entry("oracle", OraclePredictor, OracleConfig, "true remaining length (upper bound); optional noise δ"),
        Entry(
            "survival",
            SurvivalPredictor,
            None,
            "empirical output-length distribution of the training split, conditioned on age",
        ),
        Entry(
            "exact_match",
            ExactMatchPredictor,
            ExactMatchConfig,
            "per-prompt-key empirical distribution, falling back to survival",
        ),
    ],
)


def make_predictor(spec: str, train: Workload | None = None) -> Predictor:
    """Build a predictor from its spec (``survival``, ``oracle:noise=0.2``), fitted on ``train``."""
    entry, cfg = PREDICTORS.config_for(spec)
    return entry.factory(cfg, train=train)
