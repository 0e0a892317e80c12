"""Settings of the BalanceRoute policies (``br0``, ``brh``) and the published configurations (presets).

Every knob left unset (``None``) takes the value of the chosen ``preset``; ``resolved()`` fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ...core.config import setting

#: the value an unset knob takes under each preset
PRESETS: dict[str, dict] = {
    # dpbalance's default: load-aware placement with quotas while every waiting request fits, the whole pool as
    # candidates when slots are scarce, bounded overtaking (chosen on the training cells of the regime matrix)
    "default": {
        "placement": "load",
        "s_greedy": "fit",
        "r_max": 0,
        "worker_key": "load",
        "subset_rule": "max_count",
        "max_wait_s": 120.0,
    },
    # the BF-IO authors' H0 strategy (their public simulator): most-free-slots greedy while more than 7 slots are
    # free, then lowest-load workers take the max-count subset of the whole visible pool
    "bfio-code": {
        "placement": "free",
        "s_greedy": 7,
        "r_max": 0,
        "worker_key": "load",
        "subset_rule": "max_count",
        "max_wait_s": "off",
    },
    # BalanceRoute as published: 4 candidates (16 subsets), workers by (free slots, margin), highest-F subset
    "paper": {
        "placement": "free",
        "s_greedy": 7,
        "r_max": 4,
        "worker_key": "free_margin",
        "subset_rule": "max_f",
        "max_wait_s": "off",
    },
}
_PRESET_KNOBS = ("placement", "s_greedy", "r_max", "worker_key", "subset_rule", "max_wait_s")


@dataclass(frozen=True)
class BR0Config:
    preset: Literal["default", "bfio-code", "paper"] = setting(
        "default", "published configuration the unset knobs below come from"
    )
    placement: Literal["load", "free"] | None = setting(
        None,
        "first stage: each request goes to the worker with the highest F, ties lowest load ('load'); or the "
        "worker with most free slots takes its best request ('free')",
    )
    hold_s: float = setting(
        0.0, "while every waiting request fits, hold them up to this long to gather one per worker (0: off)"
    )
    quota: Literal["free", "even", "off"] = setting(
        "free",
        "load placement: a worker takes at most its share of a dispatch's requests, in proportion to its "
        "free slots ('free') or equally ('even')",
    )
    s_greedy: int | Literal["fit"] | None = setting(
        None, "the first stage runs while more than this many slots are free ('fit': while every waiting request fits)"
    )
    r_max: int | None = setting(
        None, "second-stage candidates: the first r_max waiting requests (0: the whole pool, up to window)"
    )
    window: int = setting(1024, "most waiting requests a stage looks at")
    worker_key: Literal["load", "free_margin"] | None = setting(
        None, "second-stage worker order: lowest load, or most free slots then largest margin"
    )
    subset_rule: Literal["max_count", "max_f"] | None = setting(
        None, "second-stage subset: most requests within the target then the largest sum, or the highest F"
    )
    beta: float | None = setting(None, "overflow penalty β (default G, the exact one-step slope)")
    dp_buckets: int = setting(4096, "subset-sum resolution in buckets of Δ* (0 = exact tokens)")
    max_wait_s: float | Literal["off"] | None = setting(
        None,
        "bounded overtaking: a request passed over by one that arrived this many seconds after it goes to "
        "the lightest worker as soon as it fits there (at the latest after as long again); 'off': none",
    )

    def __post_init__(self):
        if isinstance(self.s_greedy, int) and self.s_greedy < 0:
            raise ValueError("s_greedy must be >= 0 or 'fit'")
        if self.window < 1 or (self.r_max is not None and self.r_max < 0):
            raise ValueError("need window >= 1 and r_max >= 0")
        if self.beta is not None and self.beta < 0:
            raise ValueError("beta must be >= 0")
        if self.dp_buckets < 0:
            raise ValueError("dp_buckets must be >= 0")
        if isinstance(self.max_wait_s, (int, float)) and self.max_wait_s <= 0:
            raise ValueError("max_wait_s must be > 0 (or 'off')")

    def resolved(self) -> BR0Config:
        """A copy with every unset knob taken from the preset."""
        p = PRESETS[self.preset]
        return replace(self, **{k: p[k] for k in _PRESET_KNOBS if getattr(self, k) is None})


@dataclass(frozen=True)
class BRHConfig(BR0Config):
    predictor: Literal["oracle", "survival", "exact_match"] = setting(
        "oracle", "output-length predictor: P(still decoding h steps ahead)", label=True
    )
    noise: float = setting(0.0, "oracle only: multiplicative error δ")
    H: int = setting(8, "look-ahead horizon in decode steps")
    alpha: float = setting(1.0, "reward weight α")
    gamma: float = setting(0.8, "discount d_h = γ^h")
    growth: bool = setting(False, "projected loads grow +1 per step (w_i + h)")
    refill: bool = setting(
        True, "while requests wait, count the expected load of the requests that will refill freed slots"
    )

    def __post_init__(self):
        super().__post_init__()
        if self.H < 0 or not 0 < self.gamma <= 1 or self.alpha <= 0:
            raise ValueError("need H >= 0, 0 < gamma <= 1, alpha > 0")
