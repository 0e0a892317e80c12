"""What a step costs on the deployment's ranks, as far as a routing policy may know it.

The engine's step-time models (``dpbalance.engine.step_time``) say how long a step takes; a policy that weighs a
prefill against decode load needs only their marginal prices, which it gets as a ``StepCosts`` through its
``PolicyContext``: the simulator derives it from ``--step-time``, the router from ``serve --step-time`` (a spec or
a file written by ``dpbalance calibrate``). The defaults here are the default step-time model's, defined once.
"""

from __future__ import annotations

from dataclasses import dataclass

#: seconds per KV token of the busiest rank: a DeepSeek-V3-like MLA decode (576 cached values per token in each of
#: 61 layers, read at 1.5 bytes each, twice, at about 1 TB/s)
T_TOK_DEFAULT = 1.5 * 2 * 576 * 61e-6 / 2**20
#: seconds per prefill token (projections and experts): a DeepSeek-V3-like rank prefills about 10,000 tokens/s
PREFILL_TOK_DEFAULT = 1.0e-4
#: seconds per prefill token per token of context it attends to (MLA attention, 61 layers, ~400 TFLOP/s)
PREFILL_ATTN_DEFAULT = 2.5e-8


@dataclass(frozen=True)
class StepCosts:
    """Marginal prices of a step, in seconds.

    ``t_tok``: what one more KV token on the busiest rank adds to every rank's step (the barrier's price of decode
    load); ``prefill_tok``: per prompt token a rank prefills; ``prefill_attn``: per prompt token per token of context
    it attends to (its cached prefix and the chunk before it). A prefill of ``m`` new tokens after ``h`` cached ones
    costs ``prefill_tok·m + prefill_attn·m·(h + m/2)``."""

    t_tok: float = T_TOK_DEFAULT
    prefill_tok: float = PREFILL_TOK_DEFAULT
    prefill_attn: float = PREFILL_ATTN_DEFAULT

    def __post_init__(self):
        if not self.t_tok > 0:
            raise ValueError(f"t_tok must be > 0 seconds per token, got {self.t_tok}")
        if self.prefill_tok < 0 or self.prefill_attn < 0:
            raise ValueError("prefill_tok and prefill_attn must be >= 0")

    def prefill_s(self, miss, hit):
        """Seconds to prefill ``miss`` new prompt tokens after ``hit`` cached ones (numbers or numpy arrays)."""
        return self.prefill_tok * miss + self.prefill_attn * miss * (hit + 0.5 * miss)


#: the default step-time model's prices
DEFAULT_COSTS = StepCosts()
