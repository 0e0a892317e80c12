"""A request's state on its rank, and what one engine step reports (the engine model's small value types)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BLOCK = 16  # vLLM's block size, when the workload has none
NEW, WAITING, PREFILL, DECODE = 0, 1, 2, 3


class EngineError(ValueError):
    """The engine model cannot run with these settings (the message says what to change)."""


class Req:
    """A request on a rank, from admission to its end (the engine keeps one only while it is there)."""

    __slots__ = (
        "rid",
        "g",
        "prompt",
        "hashes",
        "state",
        "target",
        "computed",
        "acquired",
        "kv",
        "gen0",
        "dec_start",
        "left",
        "looked_up",
        "hit",
    )

    def __init__(self, rid: int, g: int, prompt: int, hashes: list[int] | None):
        self.rid, self.g, self.prompt, self.hashes = rid, g, prompt, hashes
        self.state = NEW
        self.target = prompt  # tokens to compute before the next token can be sampled (prompt + output so far)
        self.computed = 0  # tokens whose KV is computed
        self.acquired = 0  # prompt blocks it references in its rank's cache
        self.kv = 0  # KV tokens it holds outside cache blocks (decoding: as of ``dec_start``)
        self.gen0 = 0  # output tokens when it last started decoding
        self.dec_start = 0  # the engine step it last started decoding at
        self.left = 0  # its share of its rank's pending-prefill estimate
        self.looked_up = False
        self.hit = 0  # prompt tokens its rank's cache served at its first lookup


@dataclass
class StepOut:
    """What one engine step did."""

    tau: float  # seconds the step took (the slowest rank)
    busy: np.ndarray  # [G] seconds each rank worked
    generated: np.ndarray  # [G] tokens sampled per rank (decodes + completed prefills)
    started: list[int]  # requests that sampled a token this step but were not decoding the step before (a first
    #: token after their prefill or admission, or the next token after a preemption)
    preempted: list[int]  # requests that stopped decoding this step (preempted)
    stalled: list[int]  # requests placed on a rank that sampled nothing this step (waiting or prefilling)
    prefill_tokens: np.ndarray  # [G] prompt tokens computed this step
    decode_busy: np.ndarray  # [G] seconds of each rank's decode work alone
