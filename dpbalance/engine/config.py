"""The engine model's settings: what each data-parallel rank models beyond decode (prefill, the prefix cache, its
KV capacity) and how it schedules a step. One config, used by ``simulate`` (and every command that simulates) and
by ``engine-sim``.

With ``prefill`` and ``prefix_cache`` off and an unlimited ``kv_capacity`` the engine is the decode-only model of
the papers (a request decodes from the step it is admitted in and a step costs only its decode work): the right
model for the decode ranks of a prefill–decode disaggregated deployment, and bit-for-bit what dpbalance computed
before the engine model existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.config import setting

_ENGINE = "Engine model"
UNLIMITED = "unlimited"


@dataclass(frozen=True)
class EngineConfig:
    """Per-rank engine settings (see the module docstring)."""

    PANEL = _ENGINE

    prefill: bool = setting(
        False,
        "Model prefill at the barrier: a request's prompt is computed in chunks under the step's token budget "
        "(vLLM v1's scheduler: running requests first, then waiting ones), its first token comes with its last "
        "chunk, and each rank's step time adds the prefill work it did; every rank waits for the slowest.",
    )
    prefix_cache: bool = setting(
        False,
        "Model a prefix cache per rank with vLLM's semantics: full blocks only, chained block hashes (the trace's), "
        "LRU eviction of unreferenced blocks, the last prompt token always recomputed. Cached prompt tokens are not "
        "prefilled again.",
    )
    kv_capacity: int | Literal["unlimited"] = setting(
        UNLIMITED,
        "KV-cache capacity of one rank in tokens, or 'unlimited'. Cached blocks nobody uses are evicted first; "
        "when running requests need more, the most recently scheduled one is preempted and recomputed later "
        "(vLLM's recompute preemption).",
        min=1,
    )
    max_batched_tokens: int = setting(
        2048,
        "Token budget of one engine step per rank (vLLM's max_num_batched_tokens; 2048 is its default for an "
        "OpenAI server on most hardware). Decodes take one token each, prefill chunks the rest.",
        min=1,
    )
    max_num_seqs: int | None = setting(
        None,
        "Most requests one rank runs at once (vLLM's max_num_seqs); more wait in the rank's own queue. Default: "
        "none beyond --slots, for a router that sends a rank no more than it can run (dpbalance serve); set it "
        "with --slots above it to model a router that sends every request at once and lets the engine queue it "
        "(the Rust cache-aware routers). Needs --prefill.",
        min=1,
    )
    long_prefill_threshold: int = setting(
        0,
        "Most prompt tokens one request may prefill in a step while others wait (vLLM's "
        "long_prefill_token_threshold; 0: no cap).",
        min=0,
    )
    block_size: int | None = setting(
        None,
        "Tokens per prefix-cache block (default: the trace's block size, e.g. 512 for the Mooncake traces; 16, "
        "vLLM's, when the trace has none).",
        min=1,
    )
    prefill_interval: int = setting(
        1,
        "Mitigation from vLLM (--prefill-schedule-interval): ranks start prefill work only on every k-th step, "
        "so prefills of different ranks share steps (unless requests were left waiting at the last such step).",
        min=1,
    )
    adp_wait: int = setting(
        0,
        "Mitigation from TensorRT-LLM (attention-DP balance): new prefills start only when every rank has one to "
        "start, or after this many steps of waiting (0: off).",
        min=0,
    )
    prefill_delayer: int = setting(
        0,
        "Mitigation from SGLang (PrefillDelayer, max delay passes): while some ranks have prefill to start and "
        "others do not, delay it up to this many steps so prefills land in the same step (0: off).",
        min=0,
    )

    def __post_init__(self):
        if isinstance(self.kv_capacity, int) and self.kv_capacity < 1:
            raise ValueError("kv_capacity must be >= 1 token (or 'unlimited')")
        mitigations = [n for n in ("adp_wait", "prefill_delayer") if getattr(self, n)]
        if self.prefill_interval > 1:
            mitigations.append("prefill_interval")
        if len(mitigations) > 1:
            raise ValueError(f"choose one engine-side prefill mitigation, not {' and '.join(mitigations)}")
        if self.max_num_seqs is not None and not self.prefill:
            raise ValueError("max_num_seqs queues requests in the rank before their prefill, which needs --prefill")
        if mitigations and not self.prefill:
            raise ValueError(f"{mitigations[0]} delays prefill work, which needs --prefill")

    @property
    def active(self) -> bool:
        """True when the engine models more than decode (prefill, the prefix cache or a finite KV capacity)."""
        return self.prefill or self.prefix_cache or self.kv_capacity != UNLIMITED

    @property
    def capacity(self) -> int | None:
        """KV capacity per rank in tokens (None: unlimited)."""
        return None if self.kv_capacity == UNLIMITED else int(self.kv_capacity)
