"""BalanceRoute (arXiv 2605.06113): BR-0 and BR-H — one driver, two scorers."""

from __future__ import annotations

from ...predictors import make_predictor
from ..base import PolicyContext
from .config import PRESETS, BR0Config, BRHConfig
from .driver import BalanceRoute
from .scorers import Br0Scorer, BrhScorer, Round, Scorer


def beta_of(cfg: BR0Config, ctx: PolicyContext) -> float:
    return float(cfg.beta if cfg.beta is not None else ctx.workers)


def brh_scorer(cfg: BRHConfig, ctx: PolicyContext) -> BrhScorer:
    """The horizon scorer with its predictor fitted on ``ctx.train``; BR-H and BF-IO share it."""
    spec = cfg.predictor + (f":noise={cfg.noise},seed={ctx.seed}" if cfg.predictor == "oracle" and cfg.noise else "")
    return BrhScorer(
        H=cfg.H,
        alpha=cfg.alpha,
        beta=beta_of(cfg, ctx),
        gamma=cfg.gamma,
        growth=cfg.growth,
        refill=cfg.refill,
        predictor=make_predictor(spec, train=ctx.train),
        workers=ctx.workers,
    )


def make_br0(cfg: BR0Config, ctx: PolicyContext) -> BalanceRoute:
    return BalanceRoute(cfg, ctx.workers, Br0Scorer(beta_of(cfg, ctx)))


def make_brh(cfg: BRHConfig, ctx: PolicyContext) -> BalanceRoute:
    return BalanceRoute(cfg, ctx.workers, brh_scorer(cfg, ctx))


__all__ = [
    "PRESETS",
    "BR0Config",
    "BRHConfig",
    "BalanceRoute",
    "Br0Scorer",
    "BrhScorer",
    "Round",
    "Scorer",
    "brh_scorer",
    "make_br0",
    "make_brh",
]
