"""Settings of one calibration run (each field documents itself; the command-line options are generated from
them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..core.config import setting
from ..engine.step_time import STEP_TIME_FILE_SUFFIXES

DEFAULT_RANK_HEADER = "X-data-parallel-rank"
_DEPLOY = "Deployment"
_GRID = "Load grid"
_OUT = "Measurement and output"


@dataclass(frozen=True)
class CalibrateConfig:
    worker_urls: tuple[str, ...] = setting(
        (),
        "base URL of one data-parallel rank's OpenAI server, e.g. http://127.0.0.1:8001 (repeat the option "
        "once per rank, or give them comma-separated)",
        flags=("--worker-urls", "--worker-url"),
        panel=_DEPLOY,
    )
    dp_endpoint: str | None = setting(
        None,
        "instead of --worker-urls: one OpenAI server in front of all data-parallel ranks, which sends a "
        "request to the rank named in its rank header (needs --dp-size)",
        panel=_DEPLOY,
    )
    dp_size: int | None = setting(None, "number of data-parallel ranks behind --dp-endpoint", min=1, panel=_DEPLOY)
    rank_header: str = setting(
        DEFAULT_RANK_HEADER, "request header that picks the rank at --dp-endpoint", panel=_DEPLOY
    )
    model: str | None = setting(
        None,
        "model name sent with every request (default: the first model the server lists at /v1/models)",
        panel=_DEPLOY,
    )
    api_key: str | None = setting(
        None, "sent as 'Authorization: Bearer KEY'", envvar="DPBALANCE_API_KEY", panel=_DEPLOY
    )

    prompt_lens: tuple[int, ...] = setting(
        (128, 512, 1536),
        "prompt lengths in tokens of the load grid (repeat the option for each value)",
        min=1,
        panel=_GRID,
    )
    concurrency: tuple[int, ...] = setting(
        (1, 4, 16),
        "concurrent streams per rank of the load grid (repeat the option for each value; keep them within "
        "the engine's max-num-seqs, and the largest below it when --prefill-lens is given: a prefill phase adds "
        "one prompt to it)",
        min=1,
        panel=_GRID,
    )
    unequal: bool = setting(
        True,
        "also measure unequal loads (one rank at a grid level, the others at the lightest) so that max and "
        "mean load separate and the mean-load term can be fitted",
        panel=_GRID,
    )
    warmup_tokens: int = setting(
        4,
        "tokens every stream of a phase must have received before measuring starts (prefills done)",
        min=1,
        panel=_GRID,
    )
    measure_steps: int = setting(
        32, "decode steps measured per phase (more: less noise, longer run)", min=3, panel=_GRID
    )
    seed: int = setting(0, "seeds the phase order and the prompts", panel=_GRID)
    prefill_lens: tuple[int, ...] = setting(
        (),
        "prompt lengths of the prefill phases (repeat the option for each value; none: decode phases only, and "
        "the step-time file has no prefill terms). In each, one rank admits prompts one after another while every "
        "rank decodes streams of the lightest grid level; prefill_tok and prefill_attn are fitted with the decode "
        "terms. Include one short length (32) so the fit can tell a request's own cost from its tokens'",
        min=2,
        panel=_GRID,
    )
    prefill_hits: tuple[float, ...] = setting(
        (0.0, 0.75),
        "prefill phases: fractions of each prompt served by the rank's prefix cache (a shared prefix sent to "
        "the same rank first; 0: no hit)",
        min=0.0,
        max=0.95,
        panel=_GRID,
    )
    prefill_requests: int = setting(6, "prompts admitted in the window of a prefill phase", min=1, panel=_GRID)
    prefill_together: bool = setting(
        True,
        "also run each prefill phase with every rank prefilling at once, so the fit can tell prefill work the "
        "ranks share (prefill_shared: experts under expert parallelism, one host's cores and memory bandwidth) "
        "from each rank's own",
        panel=_GRID,
    )
    block_size: int = setting(16, "prefix-cache block size of the engine (vLLM: 16)", min=1, panel=_GRID)

    time_budget_s: float = setting(
        600.0,
        "stop driving load after this many seconds and fit what was measured",
        flags=("--time-budget",),
        min=1.0,
        panel=_OUT,
    )
    source: Literal["window", "stream", "itl", "steps"] = setting(
        "window",
        "the step time the fit uses: window (the measuring window's length / tokens each stream received "
        "in it: the mean time per output token, stalls included, as TPOT counts it) | stream (median gap "
        "between tokens seen by the client; robust to client stalls, blind to the engine's) | itl (the "
        "engine's mean inter-token latency from /metrics) | steps (measuring window / engine steps counted "
        "in /metrics); falls back to stream when the engine does not expose the metric",
        panel=_OUT,
    )
    holdout_every: int = setting(
        4,
        "hold every k-th load level (by max load, never the lightest or heaviest) out of the fit and report "
        "the prediction error on them; 0: hold none out",
        min=0,
        panel=_OUT,
    )
    time_scale: float = setting(
        1.0,
        "the deployment runs k times faster than the hardware it stands for (engine-sim --time-scale); "
        "measured times are multiplied by k",
        min=1e-9,
        panel=_OUT,
    )
    out: Path = setting(
        Path("step_time.yaml"),
        "step-time file to write (.yaml, .yml or .json); use it as --step-time FILE",
        flags=("--out", "-o"),
        panel=_OUT,
    )
    retries: int = setting(
        1,
        "measure a phase again (this many times at most) when a stall disturbed it: its median token gap "
        "and its mean step over the window disagree by more than 25%",
        min=0,
        panel=_OUT,
    )
    settle_s: float = setting(
        10.0, "longest wait for the ranks to go idle between phases", flags=("--settle",), min=0.0, panel=_OUT
    )
    request_timeout_s: float = setting(600.0, "timeout of one request", cli=False)

    def __post_init__(self):
        urls = tuple(u.strip().rstrip("/") for item in self.worker_urls for u in str(item).split(",") if u.strip())
        object.__setattr__(self, "worker_urls", urls)
        if urls and self.dp_endpoint:
            raise ValueError("give either --worker-urls (one per rank) or --dp-endpoint with --dp-size, not both")
        if not urls and not self.dp_endpoint:
            raise ValueError("give the ranks: --worker-urls URL (once per rank) or --dp-endpoint URL --dp-size N")
        if self.dp_endpoint and not self.dp_size:
            raise ValueError("--dp-endpoint needs --dp-size (how many data-parallel ranks it fronts)")
        if self.dp_size is not None and not self.dp_endpoint:
            raise ValueError("--dp-size goes with --dp-endpoint; with --worker-urls the rank count is the URL count")
        object.__setattr__(self, "prefill_lens", tuple(sorted({int(v) for v in self.prefill_lens})))
        object.__setattr__(self, "prefill_hits", tuple(sorted({float(v) for v in self.prefill_hits})) or (0.0,))
        for name in ("prompt_lens", "concurrency"):
            vals = getattr(self, name)
            if not vals or any(int(v) < 1 for v in vals):
                raise ValueError(f"{name} must list at least one value, each >= 1 (got {list(vals)})")
            object.__setattr__(self, name, tuple(sorted({int(v) for v in vals})))
        if self.holdout_every == 1:
            raise ValueError("holdout_every must be 0 (none) or >= 2 (1 would hold out every level)")
        if self.time_scale <= 0 or self.time_budget_s <= 0:
            raise ValueError("time_scale and time_budget_s must be > 0")
        if self.out.suffix.lower() not in STEP_TIME_FILE_SUFFIXES:
            raise ValueError(
                f"--out {self.out} must end in {', '.join(STEP_TIME_FILE_SUFFIXES)} "
                "(--step-time recognises a file by its suffix)"
            )

    @property
    def ranks(self) -> int:
        return len(self.worker_urls) if self.worker_urls else int(self.dp_size or 0)
