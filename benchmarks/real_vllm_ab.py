"""Live A/B of routing policies on a real vLLM data-parallel pair (the ranks share a real step barrier).

    dpbalance testbed build                                   # once: the vLLM CPU venv and the MoE model
    dpbalance testbed up                                      # the two DP ranks, one core each
    dpbalance calibrate --worker-urls http://127.0.0.1:18600,http://127.0.0.1:18601 --out step_time.yaml
    python benchmarks/real_vllm_ab.py --step-time step_time.yaml --out ab/
    dpbalance testbed down

What it does, in this order:

1. **Workload.** ``--blocks`` consecutive slices of ``--requests`` requests of a trace (mooncake-conversation by
   default: heavy-tailed prompts from a real chat service), prompts multiplied by ``--prompt-scale`` and cut at
   ``--max-prompt`` so they fit the model's context, outputs capped at ``--max-output``. Block b's requests arrive
   as a Poisson process at ``--qps`` with seed b — the same requests at the same times for every policy.
2. **Prediction, before any live request.** Every block under every policy in the simulator, with the step-time
   file from ``dpbalance calibrate`` on these ranks, G = 2 and the ranks' slots. Written to
   ``predicted.json`` with a timestamp before the first live request is sent.
3. **Live blocks.** Block b runs every policy once, in an order rotated by b (ABCD, BCDA, …, so no policy always
   goes first). Each run starts ``dpbalance serve`` in front of the ranks with that policy and ``--record``, sends
   the block with the load generator (random token-id prompts, new for every run so the engine's prefix cache
   cannot serve a repeat; streaming; exact token counts), stops the router and waits until both ranks are idle.
4. **Recorded traffic.** Each run's recording is replayed in the simulator under every policy (arrival times as
   the router saw them), giving a second prediction from traffic as served.

Reports, per policy: output throughput, TPOT p50/p95, TTFT p99 as the mean over blocks with a 95 % confidence
interval (Student t over blocks), and the gain over the first policy as the mean of per-block ratios (paired,
with a 95 % interval), next to the predicted gains. Writes ``ab.json`` and ``ab.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import stats as sst

from dpbalance import loadgen
from dpbalance.calibrate.engine_api import sample_sums
from dpbalance.core import Workload
from dpbalance.sim import SimConfig, run_simulation
from dpbalance.traces import load_trace

METRICS = ("throughput_tok_s", "tpot_p50_ms", "tpot_p95_ms", "ttft_p99_s")
HIGHER_IS_BETTER = {"throughput_tok_s": True, "tpot_p50_ms": False, "tpot_p95_ms": False, "ttft_p99_s": False}
LABEL = {
    "throughput_tok_s": "output tok/s",
    "tpot_p50_ms": "TPOT p50 (ms)",
    "tpot_p95_ms": "TPOT p95 (ms)",
    "ttft_p99_s": "TTFT p99 (s)",
}


# ---------------------------------------------------------------------------------------------- workload
def blocks_of(w: Workload, a) -> list[Workload]:
    n = a.blocks * a.requests
    if len(w) < n:
        raise SystemExit(f"the trace has {len(w)} requests; {a.blocks} blocks of {a.requests} need {n}")
    prompt = np.clip(np.round(w.prompt[:n] * a.prompt_scale), 1, a.max_prompt).astype(np.int64)
    output = np.minimum(w.output[:n], a.max_output).astype(np.int64)
    out = []
    for b in range(a.blocks):
        s = slice(b * a.requests, (b + 1) * a.requests)
        out.append(Workload.from_arrays(np.zeros(a.requests), prompt[s], output[s], name=f"{w.name}-block{b}"))
    return out


def sim_config(a, seed: int, arrival: str = "poisson") -> SimConfig:
    return SimConfig(
        workers=2,
        slots=a.slots,
        arrival=arrival,
        qps=a.qps if arrival == "poisson" else None,
        seed=seed,
        step_time=str(a.step_time),
        window="all",
    )


def sim_row(res) -> dict:
    return {
        "throughput_tok_s": res.throughput_all_tok_s,
        "tpot_p50_ms": res.tpot_p50_ms,
        "tpot_p95_ms": res.tpot_p95_ms,
        "ttft_p99_s": res.ttft_p99_s,
    }


def capacity_qps(blocks: list[Workload], a) -> float:
    """Requests per second the ranks finish when never short of work, under the first policy (simulated on all
    blocks at once, saturated arrivals, steady window)."""
    w = Workload.from_arrays(
        np.zeros(sum(len(b) for b in blocks)),
        np.concatenate([b.prompt for b in blocks]),
        np.concatenate([b.output for b in blocks]),
        name="all-blocks",
    )
    cfg = SimConfig(workers=2, slots=a.slots, arrival="saturated", step_time=str(a.step_time))
    res = run_simulation(w, a.policies[0], cfg)[0]
    return res.throughput_tok_s / float(w.output.mean())


def predict(blocks: list[Workload], a) -> dict:
    rows = {p: [] for p in a.policies}
    for b, w in enumerate(blocks):
        for p in a.policies:
            rows[p].append(sim_row(run_simulation(w, p, sim_config(a, seed=b))[0]))
    return rows


# ---------------------------------------------------------------------------------------------- live runs
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except OSError:
        return None


def running_on(rank_url: str) -> float:
    return sample_sums(get(rank_url + "/metrics") or "", ("vllm:num_requests_running",)).get(
        "vllm:num_requests_running", 0.0
    )


def wait_idle(ranks: list[str], timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if all(running_on(u) == 0 for u in ranks):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the ranks did not go idle within {timeout_s:.0f} s")


class RouterProcess:
    """``dpbalance serve`` in a process of its own; ended by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, ranks: list[str], policy: str, slots: int, record: Path, log: Path, extra: tuple = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-m",
            "dpbalance",
            "serve",
            "--port",
            str(self.port),
            "--policy",
            policy,
            "--slots",
            str(slots),
            "--record",
            str(record),
        ]
        for u in ranks:
            argv += ["--decode", u]
        argv += list(extra)
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 60
        while get(self.url + "/health") is None:
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"the router did not start; its log: {log}")
            time.sleep(0.2)

    def stop(self) -> None:
        end_process(self.proc, self.log, grace_s=30)


def end_process(proc: subprocess.Popen, log, grace_s: float) -> None:
    """End a process this script started (SIGTERM, then SIGKILL after ``grace_s``) and close its log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


def live_run(w: Workload, policy: str, block: int, ranks: list[str], a, out: Path, run: int) -> dict:
    rec = out / "records" / f"block{block}_{policy.replace(':', '_')}.jsonl"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.unlink(missing_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    router = RouterProcess(ranks, policy, a.slots, rec, out / "logs" / f"router_block{block}_{policy}.log")
    try:
        cfg = loadgen.LoadgenConfig(
            target=router.url,
            mode="qps",
            qps=a.qps,
            seed=block,
            max_requests=None,
            model=a.model,
            prompt_seed=1000 + run,  # fresh prompts: no prefix-cache hits
            duration_s=3600.0,
            request_timeout_s=900.0,
        )
        t0 = time.perf_counter()
        outs = asyncio.run(loadgen.run(w, cfg))
        wall = time.perf_counter() - t0
    finally:
        router.stop()
    res = loadgen.summarize(outs, policy=policy, workers=2, slots=a.slots, engine_stats=None, wall_s=wall, config={})
    row = sim_row(res) | {
        "throughput_tok_s": res.throughput_tok_s,
        "completed": res.completed,
        "requests": res.requests,
        "wall_s": wall,
        "errors": res.config["errors"],
        "record": str(rec.relative_to(out)),
    }
    wait_idle(ranks)
    time.sleep(a.settle_s)
    return row


# ---------------------------------------------------------------------------------------------- statistics
def mean_ci(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return float(x.mean()), math.nan
    return float(x.mean()), float(sst.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def gain(rows: dict, policy: str, base: str, metric: str) -> tuple[float, float]:
    """Mean over blocks of the ratio policy / base, with its 95 % interval (paired by block)."""
    r = [p[metric] / q[metric] for p, q in zip(rows[policy], rows[base])]
    return mean_ci(r)


def table(live: dict, pred: dict, pred_rec: dict, a) -> str:
    base = a.policies[0]
    lines = [
        f"| policy | {' | '.join(LABEL[m] for m in METRICS)} | measured throughput vs {base} | "
        f"predicted (trace) | predicted (recorded traffic) |",
        "|---" * (len(METRICS) + 4) + "|",
    ]
    for p in a.policies:
        cells = []
        for m in METRICS:
            mu, ci = mean_ci([r[m] for r in live[p]])
            cells.append(f"{mu:.3g} ± {ci:.2g}")
        g, gci = gain(live, p, base, "throughput_tok_s")
        pg, _ = gain(pred, p, base, "throughput_tok_s")
        rg, _ = gain(pred_rec, p, base, "throughput_tok_s") if pred_rec else (math.nan, math.nan)
        lines.append(f"| {p} | {' | '.join(cells)} | {g - 1:+.1%} ± {gci:.1%} | {pg - 1:+.1%} | {rg - 1:+.1%} |")
    return "\n".join(lines)


def tpot_table(live: dict, pred: dict, a) -> str:
    base = a.policies[0]
    lines = [
        f"| policy | TPOT p50 vs {base}: measured | predicted | TPOT p95 measured | predicted | "
        f"TTFT p99 measured | predicted |",
        "|---" * 7 + "|",
    ]
    for p in a.policies:
        cells = []
        for m in ("tpot_p50_ms", "tpot_p95_ms", "ttft_p99_s"):
            g, gci = gain(live, p, base, m)
            pg, _ = gain(pred, p, base, m)
            cells += [f"{g - 1:+.1%} ± {gci:.1%}", f"{pg - 1:+.1%}"]
        lines.append(f"| {p} | {' | '.join(cells)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--step-time", type=Path, required=True, help="step-time file from `dpbalance calibrate` on these ranks"
    )
    ap.add_argument("--out", type=Path, required=True, help="directory for predicted.json, ab.json, ab.md, records")
    ap.add_argument(
        "--ranks",
        nargs="*",
        default=["http://127.0.0.1:18600", "http://127.0.0.1:18601"],
        help="base URLs of the DP ranks (default: the testbed's external mode)",
    )
    ap.add_argument(
        "--policies",
        default="round_robin,jsq_count,br0,jsq_tokens",
        help="comma-separated; the first is the reference for gains",
    )
    ap.add_argument("--trace", default="mooncake-conversation")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--requests", type=int, default=150, help="requests per block")
    ap.add_argument(
        "--qps",
        type=float,
        default=None,
        help="Poisson arrival rate of every block (default: --load × the capacity the simulator predicts)",
    )
    ap.add_argument(
        "--load",
        type=float,
        default=1.2,
        help="without --qps: offered load as a multiple of the predicted capacity under the first policy",
    )
    ap.add_argument("--prompt-scale", type=float, default=1 / 8)
    ap.add_argument("--max-prompt", type=int, default=3072)
    ap.add_argument("--max-output", type=int, default=384)
    ap.add_argument("--slots", type=int, default=32, help="the ranks' --max-num-seqs")
    ap.add_argument("--settle-s", type=float, default=3.0)
    ap.add_argument("--predict-only", action="store_true", help="write predicted.json and stop")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: routers are ended
    a.policies = [p.strip() for p in a.policies.split(",") if p.strip()]
    a.out.mkdir(parents=True, exist_ok=True)
    blocks = blocks_of(load_trace(a.trace), a)
    if a.qps is None:
        a.qps = round(a.load * capacity_qps(blocks, a), 3)
        print(f"arrival rate {a.qps} req/s = {a.load} × the predicted capacity under {a.policies[0]}")

    pred = predict(blocks, a)
    # where the files went is not a setting of the experiment (and would name a path of the machine that ran it)
    settings = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k not in ("out", "predict_only")
    }
    (a.out / "predicted.json").write_text(
        json.dumps(
            {"written": datetime.now(UTC).isoformat(timespec="seconds"), "settings": settings, "rows": pred}, indent=1
        )
    )
    print("predicted (simulator, calibrated step time): throughput gain over", a.policies[0])
    for p in a.policies:
        g, ci = gain(pred, p, a.policies[0], "throughput_tok_s")
        print(f"  {p:>14}: {g - 1:+.1%} ± {ci:.1%}")
    if a.predict_only:
        return 0

    for u in a.ranks:
        if get(u + "/health") is None:
            raise SystemExit(f"rank {u} does not answer /health: start the ranks (`dpbalance testbed up`)")
    models = json.loads(get(a.ranks[0] + "/v1/models") or "{}").get("data") or [{}]
    a.model = models[0].get("id")
    live = {p: [] for p in a.policies}
    t_start = time.monotonic()
    for b, w in enumerate(blocks):
        order = a.policies[b % len(a.policies) :] + a.policies[: b % len(a.policies)]
        for p in order:
            row = live_run(w, p, b, a.ranks, a, a.out, run=len(a.policies) * b + a.policies.index(p))
            live[p].append(row)
            print(
                f"block {b} {p:>14}: {row['throughput_tok_s']:7.1f} tok/s  TPOT p50 {row['tpot_p50_ms']:6.1f} ms "
                f"p95 {row['tpot_p95_ms']:6.1f} ms  TTFT p99 {row['ttft_p99_s']:6.2f} s  "
                f"({row['completed']}/{row['requests']} ok, {row['wall_s']:.0f} s; "
                f"{(time.monotonic() - t_start) / 60:.1f} min in)",
                flush=True,
            )
        (a.out / "ab.json").write_text(json.dumps({"settings": settings, "live": live}, indent=1))

    # the recorded traffic of each run, replayed under every policy
    pred_rec = {p: [] for p in a.policies}
    for b in range(a.blocks):
        rec = load_trace(str(a.out / live[a.policies[0]][b]["record"]))
        for p in a.policies:
            pred_rec[p].append(sim_row(run_simulation(rec, p, sim_config(a, seed=b, arrival="replay"))[0]))
    (a.out / "ab.json").write_text(
        json.dumps(
            {"settings": settings, "live": live, "predicted": pred, "predicted_from_recording": pred_rec}, indent=1
        )
    )
    md = [
        "# Live A/B on a real vLLM data-parallel pair\n",
        f"{a.blocks} blocks × {a.requests} requests of {a.trace} per policy, Poisson at {a.qps} req/s, "
        f"prompts × {a.prompt_scale:g} (≤ {a.max_prompt}), outputs ≤ {a.max_output}; G = 2, {a.slots} slots per "
        f"rank. Mean over blocks ± 95 % interval.\n",
        table(live, pred, pred_rec, a),
        "",
        tpot_table(live, pred, a),
        "",
    ]
    (a.out / "ab.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
