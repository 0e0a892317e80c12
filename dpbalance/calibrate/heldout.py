"""Which measured phases the fit holds out to score the models on: interpolated, never the extremes, decode and
mixed (prefill) phases each."""

from __future__ import annotations

import numpy as np

from .fit import Observations


def split_heldout_mixed(obs: Observations, every: int) -> np.ndarray:
    """Held-out mask over decode and mixed observations: ``split_heldout`` among the decode phases by max load and,
    separately, among the mixed (prefill) phases by their prefill tokens per step, so both kinds are scored."""
    mask = np.zeros(len(obs), dtype=bool)
    mixed = obs.mixed
    for sel, key in ((~mixed, obs.max_load), (mixed, None if obs.prefill is None else obs.prefill[:, 0])):
        idx = np.flatnonzero(sel)
        if len(idx) and key is not None:
            mask[idx] = split_heldout(key[idx], every)
    return mask


def split_heldout(max_load: np.ndarray, every: int) -> np.ndarray:
    """Mask of held-out observations: every ``every``-th by increasing max load, never the lightest or heaviest
    (held-out points are interpolated, not extrapolated). Empty when ``every`` is 0 or too few points remain."""
    n = len(max_load)
    mask = np.zeros(n, dtype=bool)
    if every <= 0 or n < 6:
        return mask
    order = np.argsort(max_load, kind="stable")
    for pos in range(every // 2 if every > 1 else 1, n - 1, every):
        if pos == 0:
            continue
        mask[order[pos]] = True
    if n - mask.sum() < 5:  # keep enough to fit three constants with residual degrees of freedom
        return np.zeros(n, dtype=bool)
    return mask
