"""Settings of the BalanceRoute policies (``br0``, ``brh``) and the published configurations (presets).

Every knob left unset (``None``) takes the value of the chosen ``preset``; ``resolved()`` fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

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
    preset: Literal["default", "bfio-code", "paper"] = field(
        default="default", metadata={"doc": "published configuration the unset knobs below come from"}
    )
    placement: Literal["load", "free"] | None = field(
        default=None,
        metadata={
            "doc": "first stage: each request goes to the worker with the highest F, ties lowest load ('load'); or the "
            "worker with most free slots takes its best request ('free')"
        },
    )
    hold_s: float = field(
        default=0.0,
        metadata={
            "doc": "while every waiting request fits, hold them up to this long to gather one per worker (0: off)"
        },
    )
    quota: Literal["free", "even", "off"] = field(
        default="free",
        metadata={
            "doc": "load placement: a worker takes at most its share of a dispatch's requests, in proportion to its "
            "free slots ('free') or equally ('even')"
        },
    )
    s_greedy: int | Literal["fit"] | None = field(
        default=None,
        metadata={
            "doc": "the first stage runs while more than this many slots are free ('fit': while every waiting request "
            "fits)"
        },
    )
    r_max: int | None = field(
        default=None,
        metadata={"doc": "second-stage candidates: the first r_max waiting requests (0: the whole pool, up to window)"},
    )
    window: int = field(default=1024, metadata={"doc": "most waiting requests a stage looks at"})
    worker_key: Literal["load", "free_margin"] | None = field(
        default=None, metadata={"doc": "second-stage worker order: lowest load, or most free slots then largest margin"}
    )
    subset_rule: Literal["max_count", "max_f"] | None = field(
        default=None,
        metadata={"doc": "second-stage subset: most requests within the target then the largest sum, or the highest F"},
    )
    beta: float | None = field(
        default=None, metadata={"doc": "overflow penalty β (default G, the exact one-step slope)"}
    )
    dp_buckets: int = field(default=4096, metadata={"doc": "subset-sum resolution in buckets of Δ* (0 = exact tokens)"})
    max_wait_s: float | Literal["off"] | None = field(
        default=None,
        metadata={
            "doc": "bounded overtaking: a request passed over by one that arrived this many seconds after it goes to "
            "the lightest worker as soon as it fits there (at the latest after as long again); 'off': none"
        },
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
    predictor: Literal["oracle", "survival", "exact_match"] = field(
        default="oracle", metadata={"doc": "output-length predictor: P(still decoding h steps ahead)", "label": True}
    )
    noise: float = field(default=0.0, metadata={"doc": "oracle only: multiplicative error δ"})
    H: int = field(default=8, metadata={"doc": "look-ahead horizon in decode steps"})
    alpha: float = field(default=1.0, metadata={"doc": "reward weight α"})
    gamma: float = field(default=0.8, metadata={"doc": "discount d_h = γ^h"})
    growth: bool = field(default=False, metadata={"doc": "projected loads grow +1 per step (w_i + h)"})
    refill: bool = field(
        default=True,
        metadata={"doc": "while requests wait, count the expected load of the requests that will refill freed slots"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.H < 0 or not 0 < self.gamma <= 1 or self.alpha <= 0:
            raise ValueError("need H >= 0, 0 < gamma <= 1, alpha > 0")
