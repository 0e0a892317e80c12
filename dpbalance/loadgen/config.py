"""The settings of ``dpbalance loadgen`` (a module of its own: the CLI builds its options from them without
loading the HTTP client)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.config import setting as _f

_SEND = "What to send"
_WHERE = "Where"


@dataclass(frozen=True)
class LoadgenConfig:
    """Every setting of ``dpbalance loadgen`` (its options are generated from these fields)."""

    target: str = _f(
        "", "Base URL of an OpenAI-compatible endpoint (the router or an engine), e.g. http://127.0.0.1:8000.", _WHERE
    )
    model: str | None = _f(None, "Model name sent in every request (default: the endpoint's default model).", _WHERE)
    api_key: str | None = _f(None, "Send 'Authorization: Bearer KEY'.", _WHERE, envvar="DPBALANCE_API_KEY")
    mode: Literal["replay", "qps"] = _f(
        "replay",
        "Arrivals: the trace's timestamps ('replay', scaled by "
        "--rate-scale) or Poisson at --qps ('qps'; implied by --qps).",
        _SEND,
    )
    qps: float | None = _f(None, "Poisson arrivals at this many requests per second.", _SEND, min=1e-6)
    rate_scale: float = _f(
        1.0, "Replay: divide the trace's arrival times by this (2 = twice as fast).", _SEND, min=1e-6
    )
    max_requests: int | None = _f(1000, "Send at most this many requests (the first ones of the trace).", _SEND, min=1)
    duration_s: float = _f(600.0, "Stop sending after this many seconds.", _SEND, flags=("--duration",), min=0.1)
    prompt_scale: float = _f(1.0, "Multiply prompt lengths (e.g. to fit a small model's context).", _SEND, min=1e-6)
    max_output: int | None = _f(None, "Cap output tokens per request.", _SEND, min=1)
    prompts: Literal["random", "repeat"] = _f(
        "random",
        "Prompt content: distinct random token ids per request "
        "('random': no shared prefix, so every prefill is paid as in real "
        "traffic) or one word repeated ('repeat').",
        _SEND,
    )
    seed: int = _f(0, "Seed of the Poisson arrivals and the random prompts.", _SEND)
    prompt_seed: int | None = _f(
        None,
        "Seed of the random prompts' content only (default: --seed). Give each run of "
        "the same requests its own, so an engine's prefix cache cannot serve a repeat.",
        _SEND,
    )
    request_timeout_s: float = _f(600.0, "Give up on a request after this many seconds.", _SEND, min=0.1)

    def __post_init__(self):
        if self.qps is not None and self.mode == "replay":
            object.__setattr__(self, "mode", "qps")
        if self.mode == "qps" and not self.qps:
            raise ValueError("--qps is required for Poisson arrivals")
        object.__setattr__(self, "target", self.target.rstrip("/"))
