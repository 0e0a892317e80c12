"""Driver run *inside* the BF-IO authors' simulator environment (see authors_reference.py).

    python authors_driver.py CONFIG.json

It imports ``simlib`` from the checkout named in the config, loads the requests from the input file
(the authors' ``{"data": [{"input_length", "output_length"}, ...]}`` format) with their own loader but
in file order, builds their ``SchedulerSim`` with the given G, B, visible pool and step-time constants,
runs one of their strategies, and prints one JSON object on stdout.

Nothing here changes how their simulator decides or advances. Three thin wrappers only *observe*:
``_assign_to_gpu`` (the step of each admission), the policy function (wall time per call) and the
``discover_fn`` hook (when each request becomes visible). For arrivals from timestamps the hook reveals
requests whose arrival time has passed and, when the cluster is idle, moves the clock to the next
arrival (their loop cannot wait on its own). This file needs numpy and their ``simlib`` only, so it runs
under their Python environment as well as ours.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


class _InOrder:
    """Stands in for the numpy Generator their loader takes: keeps file order and adds no noise."""

    def choice(self, n, size=None, replace=True):
        if size is None or size > n:
            raise ValueError("in-order loading needs size <= number of rows")
        return np.arange(size)

    def uniform(self, low, high, size=None):
        return np.ones(size)


def _stats(loads: np.ndarray, G: int) -> dict:
    """Per-step load statistics of a [steps, G] matrix, averaged over the steps."""
    if len(loads) == 0:
        return {}
    mx = loads.max(axis=1).astype(np.float64)
    mn = loads.min(axis=1).astype(np.float64)
    sm = loads.sum(axis=1).astype(np.float64)
    pos = mx > 0
    safe = np.where(pos, mx, 1.0)
    return {
        "avg_imbalance_maxmin": float((mx - mn).mean()),
        "avg_imbalance_gap": float((G * mx - sm).mean()),
        "balance_ratio": float(np.where(pos, sm / G / safe, 1.0).mean()),
        "idle_fraction": float(np.where(pos, 1.0 - sm / (G * safe), 0.0).mean()),
    }


def _pct(x: np.ndarray, scale: float = 1.0) -> dict:
    if len(x) == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {k: float(np.percentile(x, q) * scale) for k, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}


def main(cfg_path: str) -> None:
    cfg = json.loads(Path(cfg_path).read_text())
    sys.path.insert(0, cfg["repo"])
    from simlib import SchedulerSim, strategies  # their package
    from simlib.request_generator import load_arxiv_dataset
    from simlib.strategies import strategy_balance_future

    n_rows = cfg["n_requests"]
    s_arr, o_arr, o_est = load_arxiv_dataset(cfg["input"], n_rows, rng=_InOrder())
    if len(s_arr) != n_rows:
        raise SystemExit(f"their loader kept {len(s_arr)} of {n_rows} rows")
    if cfg.get("noise"):  # their loader's formula, o_est = max(1, round(o·U[1−δ, 1+δ])), seeded
        u = np.random.default_rng(cfg.get("seed", 0)).uniform(1 - cfg["noise"], 1 + cfg["noise"], size=n_rows)
        o_est = np.maximum(1, np.round(o_arr * u)).astype(np.int64)

    policy = getattr(strategies, cfg["policy_fn"])
    if cfg.get("horizon") is not None:  # what their scripts/main.py --H does (override_horizon)
        strategy_balance_future.HORIZON_MAX = int(cfg["horizon"])

    G, B, N = cfg["workers"], cfg["slots"], n_rows
    call_ns: list[int] = []
    reveal = np.full(N, np.nan)
    jumps: list[tuple[int, float]] = []
    arrival = np.asarray(cfg["arrival"], dtype=np.float64) if cfg.get("arrival") is not None else None

    def timed_policy(sim):
        decides = bool(sim.wait_q) and sim.active_total < G * B  # a call with a decision to make
        t0 = time.perf_counter_ns()
        policy(sim)
        if decides:
            call_ns.append(time.perf_counter_ns() - t0)

    def discover(sim, needed: int):
        if arrival is None:
            out = SchedulerSim.discover_fn_default(sim, needed)
        else:
            q = sim.undiscovered_q
            if q and sim.active_total == 0 and not sim.wait_q and arrival[q[0]] > sim.clock:
                jumps.append((sim.step_idx, float(arrival[q[0]]) - sim.clock))
                sim.clock = float(arrival[q[0]])
            out = []
            while q and len(out) < needed and arrival[q[0]] <= sim.clock:
                out.append(q.popleft())
        reveal[out] = sim.clock
        return out

    sim = SchedulerSim(
        n_worker=G,
        batch_size=B,
        C=cfg["C"],
        t_length=cfg["t_tok"],
        s_list=s_arr,
        o_list=o_arr,
        o_est_list=o_est,
        policy_fn=timed_policy,
        eff_name="ratio",
        record_history=True,
        reveal_target=cfg["visible"] if arrival is None else N,
        discover_fn=discover,
    )
    admit = np.full(N, -1, dtype=np.int64)
    assign = sim._assign_to_gpu

    def observed_assign(rid, gid):
        assign(rid, gid)
        admit[rid] = sim.step_idx  # steps done so far = 0-based index of its first decode step

    sim._assign_to_gpu = observed_assign  # observation only: the call goes through unchanged
    wall0 = time.perf_counter()
    metrics = sim.run(verbose=False)
    wall = time.perf_counter() - wall0
    metrics.pop("step_clock_times", None)
    metrics.pop("step_powers", None)

    # Loads as their simulator records them: after the step's token, before that step's finishes leave.
    hist = np.vstack(sim.hist_sum_lengths).astype(np.int64)
    n_steps = len(hist)
    # Loads at the start of each step (what the step time is computed from), rebuilt from the admissions:
    # request i adds s_i + j at its (j+1)-th decode step. Checked against their history below.
    gpu = sim.gpu_of_req.astype(np.int64)
    o = o_arr.astype(np.int64)
    s = s_arr.astype(np.int64)
    const = np.zeros((n_steps + 1, G), dtype=np.int64)
    lin = np.zeros((n_steps + 1, G), dtype=np.int64)
    np.add.at(const, (admit, gpu), s - admit)
    np.add.at(const, (admit + o, gpu), -(s - admit))
    np.add.at(lin, (admit, gpu), 1)
    np.add.at(lin, (admit + o, gpu), -1)
    cnt = np.cumsum(lin, axis=0)[:n_steps]
    start = np.cumsum(const, axis=0)[:n_steps] + cnt * np.arange(n_steps)[:, None]
    if not np.array_equal(start + cnt, hist):
        raise SystemExit("internal: rebuilt per-step loads disagree with the simulator's history")
    tau = cfg["C"] + cfg["t_tok"] * start.max(axis=1)
    t_end = np.cumsum(tau)
    for k, gap in jumps:  # idle gaps before step k (arrivals from timestamps only)
        t_end[k:] += gap
    if abs(t_end[-1] - sim.clock) > 1e-6 * max(1.0, sim.clock):
        raise SystemExit("internal: rebuilt step times disagree with the simulator's clock")
    tokens = cnt.sum(axis=1)

    cut = max(0, min(int(sim.last_assign_step), n_steps))  # their window: steps [0, cut)
    last = int(admit.max())  # dpbalance's steady window: steps [0, last]
    first_tok = t_end[admit]
    finish = t_end[admit + o - 1]
    # when each request became visible to the router (arrival; saturated: when the pool took it in)
    enter = arrival - cfg.get("prefill_delay_s", 0.0) if arrival is not None else reveal
    multi = o > 1
    out = {
        "their_metrics": metrics,
        "steps": n_steps,
        "their_window_steps": cut,
        "their_window_tokens": int(tokens[:cut].sum()),
        "steady_window_steps": last + 1,
        "sim_wall_s": wall,
        "dispatch_us": _pct(np.asarray(call_ns) / 1e3),
        "policy_calls": len(call_ns),
        "requests": N,
        "completed": int(np.isfinite(sim.finish_time).sum()),
        "makespan_s": float(np.nanmax(sim.finish_time)),
        "idle_gap_s": float(sum(g for _, g in jumps)),
        # authors' convention: their recorded loads, their window (steps before the last admission) or all
        "authors_steady": {**_stats(hist[:cut], G), "throughput_tok_s": metrics["throughput_tokens_per_sec"]},
        "authors_all": {**_stats(hist, G), "throughput_tok_s": float(tokens.sum() / t_end[-1])},
        # dpbalance's convention: loads at step start, steady window through the last admission's first step
        "dpbalance_steady": {
            **_stats(start[: last + 1], G),
            "throughput_tok_s": float(tokens[: last + 1].sum() / t_end[last]),
        },
        "dpbalance_all": {**_stats(start, G), "throughput_tok_s": float(tokens.sum() / t_end[-1])},
        "ttft_s": _pct(first_tok - enter),
        "tpot_ms": _pct(((finish - first_tok)[multi] / (o[multi] - 1)), 1e3),
        "e2e_s": _pct(finish - enter),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
