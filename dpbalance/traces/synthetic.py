"""Seeded synthetic workloads, selected with the spec syntax:

``synthetic:n=100000,prompt=lognormal,prompt_mean=2000,output=geometric,output_mean=300,seed=1``

Prompt lengths: ``uniform`` [prompt_min, prompt_max], ``lognormal`` (mean ``prompt_mean``, log-sd
``prompt_sigma``), or ``trace`` (resampled from ``source``). Output lengths: ``geometric`` (mean
``output_mean``; the BF-IO theory's model) or ``trace``. ``joint=bfio`` draws (s, o) from the BF-IO
authors' truncated bivariate normal (means 3200/1200, sds 2600/700, ρ = −0.1). With ``qps`` set,
arrivals are a Poisson process; otherwise the workload has no timestamps (saturated/poisson modes).

Multi-turn sessions (``sessions=S``): S conversations of ``turns`` turns each (``n`` is then S × turns). Every
conversation starts with a system prompt of ``system_prompt`` tokens shared by all (or by one of
``system_prompts`` groups); each turn's prompt is the conversation so far (the system prompt, every earlier
message and answer) plus a new message whose length follows the prompt law, and its answer the output law.
Block hashes (``block`` tokens each) describe that structure: two prompts share a block exactly when they share
every token up to its end. Conversations start as a Poisson process at ``qps / turns`` (so requests arrive at
about ``qps``), and a turn arrives a ``think_s``-mean exponential gap after the previous one; without ``qps`` the
turns come in order, one turn of every conversation after another (no timestamps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..core.config import setting
from ..core.specs import SpecError, build_config, parse_spec
from ..core.workload import Workload


@dataclass(frozen=True)
class SyntheticConfig:
    n: int = setting(10_000, "number of requests")
    prompt: Literal["uniform", "lognormal", "trace"] = setting("lognormal", "prompt length law")
    prompt_min: int = setting(16, "uniform: smallest prompt")
    prompt_max: int = setting(8192, "uniform: largest prompt")
    prompt_mean: float = setting(2000.0, "lognormal: mean prompt length")
    prompt_sigma: float = setting(1.0, "lognormal: sd of log length")
    output: Literal["geometric", "trace"] = setting("geometric", "output length law")
    output_mean: float = setting(300.0, "geometric: mean output length (>= 1)")
    joint: Literal["none", "bfio"] = setting("none", "bfio: BF-IO's bivariate normal (s, o)")
    source: str = setting("sample", "trace to resample from for prompt/output=trace")
    qps: float | None = setting(None, "Poisson arrival rate; none = no timestamps")
    seed: int = setting(0, "RNG seed")
    sessions: int = setting(0, "multi-turn conversations (0: independent requests; n is then sessions × turns)")
    turns: int = setting(4, "sessions: turns per conversation")
    system_prompt: int = setting(1024, "sessions: tokens of the system prompt every conversation starts with")
    system_prompts: int = setting(1, "sessions: distinct system prompts (conversations share one of them)")
    think_s: float = setting(30.0, "sessions: mean seconds from one turn's arrival to the next turn's")
    block: int = setting(512, "sessions: tokens per prompt block hash (Mooncake's 512 by default)")

    def __post_init__(self):
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if self.output_mean < 1:
            raise ValueError("output_mean must be >= 1")
        if not 0 <= self.prompt_min <= self.prompt_max:
            raise ValueError("need 0 <= prompt_min <= prompt_max")
        if self.qps is not None and self.qps <= 0:
            raise ValueError("qps must be > 0")
        if self.sessions < 0 or self.turns < 1 or self.system_prompts < 1 or self.block < 1:
            raise ValueError("need sessions >= 0, turns >= 1, system_prompts >= 1, block >= 1")
        if self.system_prompt < 0 or self.think_s < 0:
            raise ValueError("system_prompt and think_s must be >= 0")


def generate(cfg: SyntheticConfig, load_source: Callable[[str], Workload] | None = None) -> Workload:
    """The workload of a synthetic config; ``load_source`` loads the trace that ``prompt/output=trace`` resample."""
    rng = np.random.default_rng(cfg.seed)
    src = None
    if "trace" in (cfg.prompt, cfg.output):
        if load_source is None:
            raise SpecError("resampling a trace (prompt=trace or output=trace) needs the trace loader")
        src = load_source(cfg.source)
    if cfg.sessions:
        from .sessions import sessions

        return sessions(cfg, rng, lambda k: lengths(cfg, rng, k, src))
    prompt, output = lengths(cfg, rng, cfg.n, src)
    n = cfg.n
    if cfg.qps is not None:
        gaps = rng.exponential(1.0 / cfg.qps, size=n)
        arrival = np.cumsum(gaps) - gaps[0]
        has_ts = True
    else:
        arrival = np.zeros(n)
        has_ts = False
    meta = {"format": "synthetic", "synthetic": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    return Workload.from_arrays(arrival, prompt, output, name="synthetic", has_timestamps=has_ts, meta=meta)


def lengths(cfg: SyntheticConfig, rng: np.random.Generator, n: int, src: Workload | None):
    """(prompt, output) lengths of n requests under the configured laws."""
    if cfg.joint == "bfio":
        cov = np.array([[2600.0**2, -0.1 * 2600 * 700], [-0.1 * 2600 * 700, 700.0**2]])
        out_s = np.empty(0)
        out_o = np.empty(0)
        while len(out_s) < n:  # truncate to positive lengths by rejection
            draw = rng.multivariate_normal([3200.0, 1200.0], cov, size=2 * n)
            ok = (draw[:, 0] >= 1) & (draw[:, 1] >= 1)
            out_s = np.concatenate([out_s, draw[ok, 0]])
            out_o = np.concatenate([out_o, draw[ok, 1]])
        prompt = np.round(out_s[:n]).astype(np.int64)
        output = np.round(out_o[:n]).astype(np.int64)
    else:
        if cfg.prompt == "uniform":
            prompt = rng.integers(cfg.prompt_min, cfg.prompt_max + 1, size=n)
        elif cfg.prompt == "lognormal":
            mu = np.log(cfg.prompt_mean) - cfg.prompt_sigma**2 / 2
            prompt = np.maximum(1, np.round(rng.lognormal(mu, cfg.prompt_sigma, size=n))).astype(np.int64)
        else:
            prompt = rng.choice(src.prompt, size=n, replace=True)
        if cfg.output == "geometric":
            output = rng.geometric(1.0 / cfg.output_mean, size=n).astype(np.int64)
        else:
            output = rng.choice(src.output, size=n, replace=True)
    return prompt, output


def synthetic_from_spec(spec: str, load_source: Callable[[str], Workload] | None = None) -> Workload:
    name, options = parse_spec(spec)
    if name != "synthetic":
        raise SpecError(f"expected 'synthetic:key=value,...', got {spec!r}")
    return generate(build_config(SyntheticConfig, options, what="synthetic workload"), load_source)
