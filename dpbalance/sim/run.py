"""One simulated run end to end: build the policy from its spec, simulate, summarise into a Result."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..core.workload import Workload
from ..engine.step_time import make_step_time
from ..policies import PolicyContext, PolicySpec
from ..results.schema import Result, Series, build_result
from .config import SimConfig
from .loop import ProgressFn, simulate
from .record import RunRecord


def summarize(
    record: RunRecord,
    policy: PolicySpec | str,
    cfg: SimConfig,
    workload: Workload,
    extra: dict[str, Any] | None = None,
    label: str = "",
) -> tuple[Result, Series]:
    policy = PolicySpec.parse(policy)
    window = cfg.effective_window
    last_admit = int(record.admit_step.max())
    w_end = last_admit if window == "steady" else record.n_steps - 1
    config = {
        "policy_spec": policy.label,
        "sim": dataclasses.asdict(cfg),
        "step_time_model": record.step_params,
        "energy_model": record.energy_params,
        "trace": {
            "name": workload.name,
            "requests": len(workload),
            "has_timestamps": workload.has_timestamps,
            **{k: v for k, v in workload.meta.items() if k != "train"},
            # the file's name, not where it sits on this machine: result files get shared
            **({"source": Path(str(workload.meta["source"])).name} if "source" in workload.meta else {}),
        },
        "window_steps": w_end + 1,
        "dispatch_timing": "per policy call with waiting requests and free slots",
        "front": record.front,
        **(extra or {}),
    }
    admitted = record.admit_step >= 0
    finish = record.finish_time()
    # the cluster draws idle power whenever no decode step runs (empty, or waiting on the policy)
    gap_s = max(0.0, float(finish.max()) - float(record.steps["tau"].sum())) if len(finish) else 0.0
    res, series = build_result(
        policy=policy.label,
        workers=record.workers,
        slots=record.slots,
        steps=record.steps,
        arrival=record.arrival,
        admitted=np.where(admitted, record.admit_time(), np.nan),
        first_token=record.first_token_time(),
        finish=finish,
        output=record.output,
        finished=admitted,  # the simulator runs until every admitted request has finished
        idle_energy_j=record.workers * record.idle_power_w * gap_s,
        dispatch_ns=record.dispatch_ns,
        window_end_step=w_end,
        window=window,
        wall_s=record.wall_s,
        config=config,
        label=label,
    )
    if record.engine is not None:
        engine_metrics(res, record.engine, w_end)
    return res, series


def engine_metrics(res: Result, e: dict, w_end: int) -> None:
    """The engine model's figures (prefix hit rates, prefill work, the prefill share of barrier idle) into ``res``."""
    prompt, hit = e["prompt_tokens"], e["hit_tokens"]
    res.prefix_hit_rate = float(hit.sum() / prompt.sum()) if prompt.sum() else 0.0
    res.rank_hit_rates = [float(h / p) if p else 0.0 for h, p in zip(hit.tolist(), prompt.tolist())]
    res.prefill_tokens = float(e["prefilled"].sum())
    res.preemptions = float(e["preemptions"].sum())
    sl = slice(0, w_end + 1)
    tmax, tsum = e["tok_max"][sl].astype(np.float64), e["tok_sum"][sl].astype(np.float64)
    G = res.workers
    ratio = np.divide(tsum / G, tmax, out=np.ones_like(tmax), where=tmax > 0)
    res.prefill_balance_ratio = float(ratio.mean()) if len(ratio) else float("nan")
    idle = float(e["idle_s"][sl].sum())
    res.prefill_stall_share = float(e["stall_s"][sl].sum()) / idle if idle > 0 else 0.0
    res.config["engine"] = {
        "block_size": e["block_size"],
        "evicted_blocks": None if e["evicted_blocks"] is None else int(e["evicted_blocks"].sum()),
        "prefill_tokens_per_rank": e["prefilled"].tolist(),
    }


def build_policy(policy: PolicySpec | str, cfg: SimConfig, train: Workload | None = None):
    """The policy object of a spec for this simulator configuration (``train`` is what predictors fit on)."""
    costs = make_step_time(cfg.step_time, cfg.slots).costs(cfg.workers)
    return PolicySpec.parse(policy).build(
        PolicyContext(workers=cfg.workers, slots=cfg.slots, seed=cfg.seed, train=train, costs=costs)
    )


def run_simulation(
    workload: Workload,
    policy: PolicySpec | str,
    cfg: SimConfig,
    *,
    train: Workload | None = None,
    progress: ProgressFn | None = None,
    label: str = "",
    extra_config: dict[str, Any] | None = None,
    built=None,
) -> tuple[Result, Series]:
    """Simulate ``policy`` on ``workload``; ``train`` is what predictors may fit on.

    ``built`` may pass the policy object already built from that spec (callers that build every policy up front,
    so that a bad spec fails before any run)."""
    spec = PolicySpec.parse(policy)
    record = simulate(workload, built if built is not None else build_policy(spec, cfg, train), cfg, progress=progress)
    n_admitted = int((record.admit_step >= 0).sum())
    if n_admitted != len(workload):  # pragma: no cover - the engine runs until every request finishes
        raise RuntimeError(f"{len(workload) - n_admitted} requests were never admitted")
    return summarize(record, spec, cfg, workload, extra_config, label)
