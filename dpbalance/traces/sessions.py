"""Multi-turn sessions for the synthetic generator (``synthetic:sessions=S,turns=T,…``): prompts that grow with the
conversation, and the chained block hashes that say which prompts share which prefix."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..core.workload import NO_KEY, Blocks, Workload

_M = np.uint64((1 << 64) - 1)


def mix(*parts: np.ndarray | int) -> np.ndarray:
    """A 63-bit hash of integer columns (splitmix64 over each part in turn), vectorised."""
    with np.errstate(over="ignore"):
        h = np.uint64(0x9E3779B97F4A7C15)
        for p in parts:
            z = np.asarray(p).astype(np.uint64) + h + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = z ^ (z >> np.uint64(31))
        return (h >> np.uint64(1)).astype(np.int64)


def sessions(cfg, rng: np.random.Generator, draw: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> Workload:
    """The workload of ``cfg.sessions`` conversations (see ``synthetic``'s module docstring)."""
    S, T, bs = cfg.sessions, cfg.turns, cfg.block
    n = S * T
    user, output = draw(n)  # row s·T + j: session s, turn j
    user, output = user.reshape(S, T), output.reshape(S, T)
    group = rng.integers(0, cfg.system_prompts, size=S)
    # the conversation's token stream: system prompt, then message and answer of each turn; a turn's prompt is the
    # stream up to the end of its message
    done = np.concatenate([np.zeros((S, 1), np.int64), np.cumsum(user + output, axis=1)[:, :-1]], axis=1)
    prompt = cfg.system_prompt + done + user
    sess = np.repeat(np.arange(S, dtype=np.int64), T)
    full = (prompt // bs).ravel()
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(full, out=offsets[1:])
    block_idx = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], full)
    row_sess = np.repeat(sess, full)
    # a block wholly inside the system prompt is its group's; any later block is the conversation's own
    in_system = (block_idx + 1) * bs <= cfg.system_prompt
    owner = np.where(in_system, -1 - group[row_sess], row_sess)
    hashes = mix(cfg.seed, owner, block_idx)
    blocks = Blocks(hashes, offsets, bs)
    if cfg.qps is not None:
        start = np.cumsum(rng.exponential(T / cfg.qps, size=S))
        gaps = rng.exponential(cfg.think_s, size=(S, T)) if cfg.think_s > 0 else np.zeros((S, T))
        gaps[:, 0] = 0.0
        arrival = (start[:, None] + np.cumsum(gaps, axis=1)).ravel()
        has_ts = True
    else:  # turn j of every conversation before turn j + 1 of any
        arrival = np.tile(np.arange(T, dtype=np.float64), S)
        has_ts = False
    order = np.argsort(arrival, kind="stable")
    blocks = blocks.take(order)
    meta = {"format": "synthetic", "synthetic": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    w = Workload.from_arrays(
        arrival[order],
        prompt.ravel()[order],
        output.ravel()[order],
        np.full(n, NO_KEY),
        name="synthetic",
        has_timestamps=has_ts,
        meta=meta,
        blocks=blocks,
        session=sess[order],
    )
    if not has_ts:
        w = Workload(np.zeros(n), w.prompt, w.output, w.key, w.name, False, w.meta, w.blocks, w.session)
    return w
