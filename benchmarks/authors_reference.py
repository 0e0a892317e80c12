"""Run the BF-IO authors' public simulator beside dpbalance, as a reference for the same settings.

The BF-IO paper (Chen et al., "A Universal Load Balancing Principle and Its Application to Large Language
Model Serving", arXiv:2601.17855) comes with a simulator: https://github.com/Echoscd/Load-Balancing-Release
(no licence file in the repository at commit 6ae705d, so it is run, never copied). dpbalance does not
ship it: clone it yourself and pass the checkout with ``--repo``.

    git clone https://github.com/Echoscd/Load-Balancing-Release ../Load-Balancing-Release
    python benchmarks/authors_reference.py --repo ../Load-Balancing-Release --trace mooncake-conversation -n 10000 \\
        -G 8 -B 72 --arrival saturated --strategy h0          # prints one JSON record

or from Python: ``run_reference(repo, SimConfig(...), TraceSelection(...), "h0") -> dict``.

How it runs. The selected requests (a dpbalance trace selection: name, filters, first N) are written in
the authors' dataset format (``{"data": [{"input_length": s, "output_length": o}, ...]}``) to a temporary
folder, and ``authors_driver.py`` runs in a subprocess: it loads that file with their own loader, keeps
file order (their ``scripts/main.py`` samples the dataset in a random order instead), builds their
``SchedulerSim`` and runs one of their strategies. Their ``simlib`` needs only numpy (their
requirements.txt also lists pandas, matplotlib, joblib, tqdm and optuna, used by their scripts, not by
the simulator), so our interpreter works; ``--python`` (or ``DPBALANCE_AUTHORS_PYTHON``) selects another
one, e.g. a venv built from their requirements.txt.

Step time. Their step lasts C + t_length · max_g L_g with C = (B·0.6e-3 + 35e-3)/16 s and
t_length = 1.5·2·576·61e-6/2^20 s (their scripts/main.py), the same as dpbalance's default
``linear_max`` (C, t_tok). Both constants are taken from the dpbalance step-time model of the cell and
passed to their constructor, so a custom ``linear_max:C=…,t_tok=…`` carries over.

What their simulator supports (read from simlib/scheduler.py and simlib/strategies/):
- Arrivals: only the saturated regime natively. Requests are revealed in order so that the pool holds
  ``reveal_target`` of them (default 4·G; their scripts never change it; our ``--visible`` maps to it),
  topped up once per step before the policy runs — exactly dpbalance's ``--arrival saturated``.
  It has no arrival times: when the cluster empties with nothing revealed, its loop stops and raises
  "Some requests never finished". ``replay`` and ``poisson`` cells are run through its ``discover_fn``
  hook instead (the driver reveals requests whose arrival time has passed and moves the clock to the
  next arrival when the cluster is idle; the pool is then every arrived request, as in dpbalance).
  That is our adapter, not something their scripts do; records mark it (``arrivals``).
- One slot cap B for every worker (``batch_size``); any G; any visible pool size.
- Outputs are whatever the input file says (no cap, no filter; their loader drops rows with s = 0 or
  o = 0 — this module refuses such selections rather than silently running fewer requests). Output
  filters of the selection (``--min-output``/``--max-output``) apply before conversion.
- Output-length knowledge: strategies that look ahead (BF-IO with H > 0, LPT, balance_now) see ``o_est``,
  the true length unless ``noise=δ`` (o_est = max(1, round(o·U[1−δ, 1+δ])), their formula).
- Step time: linear in the straggler only; a ``linear_max_mean`` cell raises ``UnsupportedCell``, as
  does a prefill delay with saturated arrivals (there is no arrival to delay).
- Their energy model is fixed (P_idle 100 W, P_max 400 W, γ 0.7, u_g = L_g / max over the loads after
  the step's finishes) and covers their steady window only.

Strategies (``--strategy``): ``h0`` (their BF-IO-H0, strategy_balance_future_h0), ``bfio[:H=72]`` (BF-IO
with horizon H, strategy_balance_future; H=72 is their module default, their scripts pass --H),
``fcfs``, ``jsq`` (lowest token load), ``round_robin``, ``lpt`` (policy_lpt_heap), ``balance_now``,
``align_current_max``; any of them takes ``noise=δ`` (and ``seed``). Their names BF-IO-H0, BF-IO, JSQ,
FCFS are accepted too. Their H0 scores with F(S) = S − 43·(S − m)₊ (BETA = 43 whatever G; dpbalance's
``br0`` uses β = G), runs its greedy stage while more than 7 slots are free, then an exact subset-sum DP
over the whole visible pool (dpbalance's ``bfio-code`` preset: the first 32 requests), in Python, so its
dispatch takes milliseconds at G ≥ 32 and up to a second on bfio-longbench.

Metrics, under dpbalance's names. Top-level figures follow the authors' code: per-step loads as their
simulator records them (after the step's token, before its finishes leave) averaged over their window
(the steps before the last admission) for ``steady``, or over every step for ``all``; throughput is
their own ``throughput_tokens_per_sec`` (tokens decoded / time in that window). This is what reproduces
the published anchors (e.g. JSQ 405,672 / 4,710 tok/s). ``as_dpbalance`` holds the same run measured the
way ``dpbalance simulate`` measures (loads at the start of each step, steady window up to and including
the last admission's first step) — compare that block with our results field by field; it differs from
the top level by < 0.1 % in max–min on the anchor settings. From their own return values:
``avg_imbalance_gap`` (their avg_gpu_imbalance, G·max − Σ after the step's finishes), ``idle_fraction``
(their avg_gpu_idle_rate), ``energy_j`` and ``avg_power_w`` (steady window only), ``makespan_s``,
``utilization``, ``qpm``; raw values in ``authors_metrics``. TTFT/TPOT/E2E percentiles and the
longest wait are computed from the run as dpbalance computes them. ``dispatch_us_*`` time their Python
policy calls (the ones with a decision to make).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpbalance.cli.common import TraceSelection
from dpbalance.core.constants import DEFAULT_SLOTS
from dpbalance.core.workload import Workload
from dpbalance.engine.step_time import LinearMax, make_step_time
from dpbalance.sim.config import SimConfig, arrival_times

DRIVER = Path(__file__).with_name("authors_driver.py")
REPO_URL = "https://github.com/Echoscd/Load-Balancing-Release"
PYTHON_ENV = "DPBALANCE_AUTHORS_PYTHON"

#: strategy name -> (their policy function, takes a horizon H)
STRATEGIES: dict[str, tuple[str, bool]] = {
    "h0": ("policy_balance_future_h0", False),
    "bfio": ("policy_balance_future", True),
    "fcfs": ("policy_FCFS", False),
    "jsq": ("policy_join_shortest_queue", False),
    "round_robin": ("policy_round_robin", False),
    "lpt": ("policy_lpt_heap", False),
    "balance_now": ("policy_balance_now", False),
    "align_current_max": ("policy_align_current_max", False),
}
ALIASES = {"bf-io-h0": "h0", "bfio-h0": "h0", "bf-io": "bfio", "jsq_tokens": "jsq"}
BFIO_DEFAULT_H = 72  # HORIZON_MAX in their strategy_balance_future.py


class UnsupportedCell(ValueError):
    """The authors' simulator cannot run this cell (the message says why)."""


@dataclass(frozen=True)
class Strategy:
    name: str
    fn: str
    horizon: int | None = None
    noise: float = 0.0
    seed: int = 0

    @property
    def label(self) -> str:
        parts = ([f"H={self.horizon}"] if self.horizon is not None else []) + (
            [f"noise={self.noise:g}", f"seed={self.seed}"] if self.noise else []
        )
        return f"authors:{self.name}" + (":" + ",".join(parts) if parts else "")


def parse_strategy(spec: str) -> Strategy:
    """``name`` or ``name:key=value,…`` (keys: H for bfio; noise, seed for any)."""
    name, _, rest = spec.partition(":")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)} (or BF-IO-H0, BF-IO, JSQ, FCFS)"
        )
    fn, takes_h = STRATEGIES[key]
    opts: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        k, eq, v = item.partition("=")
        if not eq:
            raise ValueError(f"strategy option {item!r} must be key=value")
        opts[k.strip()] = v.strip()
    allowed = {"noise", "seed"} | ({"H"} if takes_h else set())
    bad = set(opts) - allowed
    if bad:
        raise ValueError(f"strategy {key!r} takes {', '.join(sorted(allowed))}; got {', '.join(sorted(bad))}")
    try:
        horizon = int(opts.get("H", BFIO_DEFAULT_H)) if takes_h else None
        noise, seed = float(opts.get("noise", 0.0)), int(opts.get("seed", 0))
    except ValueError as exc:
        raise ValueError(f"bad strategy option in {spec!r}: {exc}") from None
    if (horizon is not None and horizon < 0) or not 0.0 <= noise < 1.0:
        raise ValueError("need H >= 0 and 0 <= noise < 1")
    return Strategy(key, fn, horizon, noise, seed)


def check_cell(cfg: SimConfig) -> tuple[float, float]:
    """Raise ``UnsupportedCell`` if their simulator cannot run ``cfg``; else the step constants (C, t_tok)."""
    model = make_step_time(cfg.step_time, cfg.slots)
    if not isinstance(model, LinearMax):
        raise UnsupportedCell(
            f"step-time model {cfg.step_time!r}: the authors' simulator only has τ = C + t·max_g L_g (linear_max)"
        )
    if cfg.arrival == "saturated" and cfg.prefill_delay_s:
        raise UnsupportedCell("a prefill delay needs arrival times; saturated runs have none")
    return model.C, model.t_tok


def check_repo(repo: Path | str) -> Path:
    repo = Path(repo).expanduser().resolve()
    for rel in ("simlib/scheduler.py", "simlib/strategies/strategy_balance_future_h0.py"):
        if not (repo / rel).is_file():
            raise FileNotFoundError(f"{repo} is not a checkout of {REPO_URL} (missing {rel})")
    return repo


def repo_commit(repo: Path) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def write_input(w: Workload, path: Path) -> None:
    """The requests in the authors' dataset format (their load_arxiv_dataset reads it)."""
    bad = np.flatnonzero((w.prompt <= 0) | (w.output <= 0))
    if len(bad):
        raise UnsupportedCell(
            f"request {int(bad[0])} has a zero prompt or output; the authors' loader drops such rows "
            f"({len(bad)} of {len(w)} here), so the runs would not replay the same requests"
        )
    rows = [{"input_length": int(s), "output_length": int(o)} for s, o in zip(w.prompt, w.output)]
    path.write_text(json.dumps({"dataset": w.name, "num_samples": len(rows), "data": rows}))


def _cli_line(repo: Path, cfg: SimConfig, sel: TraceSelection, strategy: Strategy) -> str:
    """The equivalent command line of this module, for the record."""
    # the checkout and trace folder are this machine's: the record names them generically
    args = ["python", "benchmarks/authors_reference.py", "--repo", "Load-Balancing-Release", "--trace", sel.trace]
    for flag, v in (
        ("--max-requests", sel.max_requests),
        ("--min-output", sel.min_output),
        ("--max-output", sel.max_output),
        ("--start-s", sel.start_s),
        ("--end-s", sel.end_s),
    ):
        if v is not None:
            args += [flag, str(v)]
    args += ["--workers", str(cfg.workers), "--slots", str(cfg.slots), "--arrival", cfg.arrival]
    if cfg.arrival == "saturated":
        args += ["--visible", str(cfg.effective_visible)]
    if cfg.qps is not None:
        args += ["--qps", str(cfg.qps)]
    if cfg.rate_scale != 1.0:
        args += ["--rate-scale", str(cfg.rate_scale)]
    if cfg.prefill_delay_s:
        args += ["--prefill-delay", str(cfg.prefill_delay_s)]
    if cfg.arrival == "poisson":
        args += ["--seed", str(cfg.seed)]
    if cfg.step_time != "linear_max":
        args += ["--step-time", cfg.step_time]
    args += ["--window", cfg.effective_window, "--strategy", strategy.label.removeprefix("authors:")]
    return shlex.join(args)


def run_reference(
    repo: Path | str,
    cfg: SimConfig,
    selection: TraceSelection | str,
    strategy: str | Strategy = "h0",
    *,
    python: str | None = None,
    timeout_s: float | None = None,
) -> dict:
    """Run one cell on the authors' simulator and return its record (see the module docstring).

    Raises ``UnsupportedCell`` for cells their simulator cannot run, ``FileNotFoundError`` for a bad
    checkout, ``RuntimeError`` if their run fails, ``subprocess.TimeoutExpired`` past ``timeout_s``."""
    repo = check_repo(repo)
    strat = parse_strategy(strategy) if isinstance(strategy, str) else strategy
    sel = TraceSelection(selection) if isinstance(selection, str) else selection
    C, t_tok = check_cell(cfg)
    w, _ = sel.load(seed=cfg.seed)
    arr = arrival_times(w, cfg)
    python = python or os.environ.get(PYTHON_ENV) or sys.executable
    with tempfile.TemporaryDirectory(prefix="dpbalance-authors-") as tmp:
        inp, conf = Path(tmp) / "requests.json", Path(tmp) / "config.json"
        write_input(w, inp)
        conf.write_text(
            json.dumps(
                {
                    "repo": str(repo),
                    "input": str(inp),
                    "n_requests": len(w),
                    "policy_fn": strat.fn,
                    "horizon": strat.horizon,
                    "noise": strat.noise,
                    "seed": strat.seed,
                    "workers": cfg.workers,
                    "slots": cfg.slots,
                    "visible": cfg.effective_visible,
                    "C": C,
                    "t_tok": t_tok,
                    "arrival": None if arr is None else (arr + cfg.prefill_delay_s).tolist(),
                    "prefill_delay_s": cfg.prefill_delay_s,
                }
            )
        )
        cmd = [python, str(DRIVER), str(conf)]
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=tmp,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        run_wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the authors' simulator failed ({shlex.join(cmd)}):\n{proc.stderr.strip()[-3000:]}")
    raw = json.loads(proc.stdout)
    return _record(raw, cfg, sel, strat, repo, cmd, python, run_wall, C, t_tok)


def _record(
    raw: dict,
    cfg: SimConfig,
    sel: TraceSelection,
    strat: Strategy,
    repo: Path,
    cmd: list[str],
    python: str,
    run_wall: float,
    C: float,
    t_tok: float,
) -> dict:
    window = cfg.effective_window
    theirs = raw["their_metrics"]
    top = raw["authors_steady" if window == "steady" else "authors_all"]
    ours = raw["dpbalance_steady" if window == "steady" else "dpbalance_all"]
    window_steps = raw["their_window_steps"] if window == "steady" else raw["steps"]
    energy = theirs["total_energy"] if window == "steady" else None
    window_tokens = raw["their_window_tokens"]
    return {
        "source": f"BF-IO authors' simulator ({REPO_URL})",
        "repo": str(repo),
        "repo_commit": repo_commit(repo),
        "policy": strat.label,
        "strategy_fn": strat.fn,
        "horizon": strat.horizon,
        "workers": cfg.workers,
        "slots": cfg.slots,
        "arrival": cfg.arrival,
        "visible": cfg.effective_visible if cfg.arrival == "saturated" else None,
        "arrivals": (
            "saturated: their own reveal rule (pool topped up to reveal_target each step)"
            if cfg.arrival == "saturated"
            else "revealed by arrival time through their discover_fn hook "
            "(our adapter; their scripts are saturated only)"
        ),
        "window": window,
        "convention": (
            "authors: loads after the step's token, before its finishes; steady = steps before the last admission"
        ),
        "trace": sel.as_config(),
        "requests": raw["requests"],
        "completed": raw["completed"],
        "step_time_model": {"model": "linear_max", "C_s": C, "t_tok_s": t_tok},
        "avg_imbalance_maxmin": top["avg_imbalance_maxmin"],
        "throughput_tok_s": top["throughput_tok_s"],
        "balance_ratio": top["balance_ratio"],
        "avg_imbalance_gap": theirs["avg_gpu_imbalance"] if window == "steady" else top["avg_imbalance_gap"],
        "idle_fraction": theirs["avg_gpu_idle_rate"] if window == "steady" else top["idle_fraction"],
        "energy_j": energy,
        "energy_j_per_token": (energy / window_tokens) if energy is not None and window_tokens else None,
        "avg_power_w": theirs["avg_power"] if window == "steady" else None,
        "energy_model": "authors' fixed model: P_idle 100 W, P_max 400 W, γ 0.7, u_g = L_g/max after the step's "
        "finishes; steady window only",
        "makespan_s": raw["makespan_s"],
        "utilization": theirs["avg_gpu_utilization"],
        "qpm": theirs["QPM"],
        **{f"ttft_{k}_s": v for k, v in raw["ttft_s"].items() if k != "max"},
        "max_wait_s": raw["ttft_s"]["max"],
        **{f"tpot_{k}_ms": v for k, v in raw["tpot_ms"].items() if k != "max"},
        **{f"e2e_{k}_s": v for k, v in raw["e2e_s"].items() if k != "max"},
        "dispatch_us_p50": raw["dispatch_us"]["p50"],
        "dispatch_us_p99": raw["dispatch_us"]["p99"],
        "steps": raw["steps"],
        "window_steps": window_steps,
        "sim_wall_s": raw["sim_wall_s"],
        "run_wall_s": run_wall,
        "as_dpbalance": {
            "window": window,
            "window_steps": raw["steady_window_steps"] if window == "steady" else raw["steps"],
            **ours,
        },
        "as_dpbalance_steady": raw["dpbalance_steady"],
        "as_dpbalance_all": raw["dpbalance_all"],
        "authors_metrics": theirs,
        "command": shlex.join(cmd),
        "cli": _cli_line(repo, cfg, sel, strat),
        "python": python,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for the regimes and metric mapping.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--repo", required=True, help=f"a checkout of {REPO_URL}")
    ap.add_argument(
        "--strategy",
        default="h0",
        help="h0 | bfio[:H=80] | fcfs | jsq | round_robin | lpt | balance_now | "
        "align_current_max (options: noise=δ,seed=N)",
    )
    ap.add_argument("--trace", "-t", default="sample", help="dpbalance trace name or file")
    ap.add_argument("--trace-dir", type=Path, default=None)
    ap.add_argument("--max-requests", "-n", type=int, default=None, help="replay the first N requests (after filters)")
    ap.add_argument("--min-output", type=int, default=None)
    ap.add_argument("--max-output", type=int, default=None)
    ap.add_argument("--start-s", type=float, default=None)
    ap.add_argument("--end-s", type=float, default=None)
    ap.add_argument("--workers", "-G", type=int, default=8)
    ap.add_argument("--slots", "-B", type=int, default=DEFAULT_SLOTS)
    ap.add_argument("--arrival", default="saturated", choices=("saturated", "replay", "poisson"))
    ap.add_argument("--visible", type=int, default=None, help="saturated: pool size (default 4·G)")
    ap.add_argument("--qps", type=float, default=None)
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--prefill-delay", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0, help="seeds poisson arrivals")
    ap.add_argument("--step-time", default="linear_max", help="linear_max[:C=…,t_tok=…]")
    ap.add_argument("--window", default=None, choices=("steady", "all"))
    ap.add_argument("--python", default=None, help=f"interpreter for their code (default ${PYTHON_ENV}, else this one)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds before their run is stopped")
    ap.add_argument("--json", type=Path, default=None, help="also write the record here")
    a = ap.parse_args(argv)
    try:
        cfg = SimConfig(
            workers=a.workers,
            slots=a.slots,
            arrival=a.arrival,
            visible=a.visible,
            qps=a.qps,
            rate_scale=a.rate_scale,
            prefill_delay_s=a.prefill_delay,
            seed=a.seed,
            step_time=a.step_time,
            window=a.window,
        )
        sel = TraceSelection(a.trace, a.trace_dir, a.min_output, a.max_output, a.max_requests, a.start_s, a.end_s)
        rec = run_reference(a.repo, cfg, sel, a.strategy, python=a.python, timeout_s=a.timeout)
    except subprocess.TimeoutExpired:
        print(f"error: the authors' run took longer than {a.timeout} s", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # UnsupportedCell, TraceError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(rec, indent=2)
    print(text)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
