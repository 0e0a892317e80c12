"""Fidelity of the engine model against the real vLLM testbed: predicted vs measured, prediction written first.

    dpbalance testbed up
    dpbalance calibrate --worker-urls http://127.0.0.1:18600,http://127.0.0.1:18601 --concurrency 1 \\
        --concurrency 8 --concurrency 31 --prefill-lens 32 --prefill-lens 256 --prefill-lens 1024 \\
        --prefill-lens 2048 --block-size 128 --measure-steps 128 --out step_time.yaml
    python benchmarks/real_vllm_fidelity.py --step-time step_time.yaml
    dpbalance testbed down

Runs (each: simulate with ``--prefill --prefix-cache`` and the testbed's engine settings — max_num_batched_tokens
2048, block size 128 (vLLM CPU's; the ranks' hit counters show 128-token granularity), 262,144 KV tokens per rank,
32 slots — write the prediction to ``predicted_<name>.json`` with a timestamp, then run it live through
``dpbalance serve`` in front of the ranks):

- ``prefix_free``: independent requests, random token-id prompts (no two share a block);
- ``multi_turn``: synthetic sessions with 128-token block hashes; each hash is mapped to 128 fixed token ids, so
  prompts that share hashes share exact token blocks (token-id prompts: vLLM adds no BOS, block boundaries line up);
- ``ab_block0``: the committed A/B's first block at its arrival rate, more work than the ranks can do (throughput
  is their capacity, TTFT mostly queueing).

Every run's token ids are new (``--salt``, the clock by default), so no run finds another's prompts in the ranks'
prefix caches. Also re-predicts the committed A/B (``ab.json``; measured before the ranks were pinned core by core)
with the engine model. Measured hit rate: the ranks' ``vllm:prefix_cache_hits_total`` /
``vllm:prefix_cache_queries_total`` over the run; ``engine_side`` holds what the ranks' own counters say (steps,
mean step, their TTFT and TPOT means, preemptions), next to the client's figures. Writes ``fidelity.json`` in
``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from real_vllm_ab import RouterProcess, blocks_of, get, wait_idle  # noqa: E402

from dpbalance.calibrate.engine_api import sample_sums  # noqa: E402
from dpbalance.core import Workload  # noqa: E402
from dpbalance.core.openai_stream import USAGE_OPTIONS, chunks, tokens_after  # noqa: E402
from dpbalance.engine.config import EngineConfig  # noqa: E402
from dpbalance.loadgen import Outcome, summarize  # noqa: E402
from dpbalance.loadgen.client import IDLE_CONNECTION_S  # noqa: E402
from dpbalance.sim import SimConfig, run_simulation  # noqa: E402
from dpbalance.traces import load_trace  # noqa: E402

SYNTHETIC = {
    "prefix_free": "synthetic:n=160,prompt=lognormal,prompt_mean=700,prompt_sigma=0.8,output=geometric,"
    "output_mean=120,qps={qps},seed=11",
    "multi_turn": "synthetic:sessions=40,turns=4,block=128,system_prompt=512,prompt=lognormal,prompt_mean=150,"
    "prompt_sigma=0.5,output=geometric,output_mean=80,qps={qps},think_s=4,seed=12",
}
#: the committed A/B's first block (mooncake-conversation, prompts × 1/8, outputs ≤ 384) at its Poisson rate: more
#: work than the ranks can do, so throughput is their capacity and TTFT is mostly queueing
AB_BLOCK = "ab_block0"
RUNS = (*SYNTHETIC, AB_BLOCK)


def workload_of(name: str, a) -> tuple[str, Workload]:
    """(a description of the workload, the workload with its arrival times) of run ``name``."""
    if name in SYNTHETIC:
        spec = SYNTHETIC[name].format(qps=a.qps)
        return spec, load_trace(spec)
    st = json.loads((a.out / "ab.json").read_text())["settings"]
    x = argparse.Namespace(**{k: st[k] for k in ("requests", "prompt_scale", "max_prompt", "max_output")}, blocks=1)
    w = blocks_of(load_trace(st["trace"]), x)[0]
    t = np.cumsum(np.random.default_rng(0).exponential(1 / st["qps"], len(w)))
    w = Workload.from_arrays(t - t[0], w.prompt, w.output, name=f"{st['trace']}-block0")
    desc = (
        f"{st['trace']}: the committed A/B's block 0 ({st['requests']} requests, prompts × {st['prompt_scale']:g} "
        f"at most {st['max_prompt']}, outputs at most {st['max_output']}), Poisson at {st['qps']} req/s"
    )
    return desc, w


KEYS = ("output_tok_s", "ttft_p50_s", "ttft_p99_s", "prefix_hit_rate")


def engine_cfg(a) -> EngineConfig:
    return EngineConfig(
        prefill=True,
        prefix_cache=True,
        kv_capacity=a.kv_capacity,
        max_batched_tokens=a.max_batched_tokens,
        block_size=a.block,
    )


def predict(w, a, policy: str) -> dict:
    cfg = SimConfig(
        workers=2, slots=a.slots, arrival="replay", step_time=str(a.step_time), window="all", engine=engine_cfg(a)
    )
    r = run_simulation(w, policy, cfg)[0]
    return {
        "output_tok_s": r.throughput_all_tok_s,
        "ttft_p50_s": r.ttft_p50_s,
        "ttft_p99_s": r.ttft_p99_s,
        "prefix_hit_rate": r.prefix_hit_rate,
        "tpot_p50_ms": r.tpot_p50_ms,
        "mean_step_s": r.makespan_s / r.steps if r.steps else math.nan,
    }


def prompts_of(w, seed: int, salt: int, vocab: tuple[int, int] = (16, 1000)) -> list[list[int]]:
    """Token ids per request: each block hash gives ``size`` fixed ids (equal hashes, equal blocks); the tail beyond
    the last full block is random per request. ``salt`` makes every live run's tokens new, so no run finds an
    earlier run's prompts in the ranks' prefix caches. Ids are drawn from ``vocab`` (low, high)."""
    out = []
    b = w.blocks
    for i in range(len(w)):
        ids: list[int] = []
        if b is not None:
            for h in b.hashes[b.offsets[i] : b.offsets[i + 1]].tolist():
                ids += np.random.default_rng([salt, int(h) & 0x7FFFFFFFFFFFFFFF]).integers(*vocab, b.size).tolist()
        tail = int(w.prompt[i]) - len(ids)
        ids += np.random.default_rng([salt, seed, i]).integers(*vocab, max(tail, 0)).tolist()
        out.append(ids[: int(w.prompt[i])] or [16])
    return out


#: engine counters read before and after each run (summed over the ranks; steps per rank)
COUNTERS = (
    "vllm:prefix_cache_hits_total",
    "vllm:prefix_cache_queries_total",
    "vllm:iteration_tokens_total_count",
    "vllm:iteration_tokens_total_sum",
    "vllm:request_time_per_output_token_seconds_sum",
    "vllm:request_time_per_output_token_seconds_count",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:num_preemptions_total",
)


def engine_counters(ranks: list[str], names: tuple[str, ...] = COUNTERS) -> dict[str, list[float]]:
    """Every metric of ``names`` per rank (summed over its label sets), from the ranks' /metrics."""
    out = {k: [0.0] * len(ranks) for k in names}
    for r, u in enumerate(ranks):
        for name, value in sample_sums(get(u + "/metrics") or "", names).items():
            out[name][r] = value
    return out


def engine_side(before: dict, after: dict, wall: float) -> dict:
    """What the ranks themselves saw over a run: hit rate, steps, their own TTFT and TPOT means (no router or
    client in them)."""
    d = {k: np.subtract(after[k], before[k]) for k in COUNTERS}

    def ratio(a, b):
        return float(d[a].sum() / d[b].sum()) if d[b].sum() > 0 else math.nan

    return {
        "prefix_hit_rate": ratio("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
        "rank_hit_rates": [
            float(h / q) if q > 0 else math.nan
            for h, q in zip(d["vllm:prefix_cache_hits_total"], d["vllm:prefix_cache_queries_total"])
        ],
        "steps_per_rank": d["vllm:iteration_tokens_total_count"].tolist(),
        "tokens_per_step": [  # scheduled tokens (prefill + decode) per step each rank ran, its own histogram
            float(t / n) if n > 0 else math.nan
            for t, n in zip(d["vllm:iteration_tokens_total_sum"], d["vllm:iteration_tokens_total_count"])
        ],
        "mean_step_s": wall / float(d["vllm:iteration_tokens_total_count"].max())
        if d["vllm:iteration_tokens_total_count"].max() > 0
        else math.nan,
        "engine_ttft_mean_s": ratio("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count"),
        "engine_tpot_mean_s": ratio(
            "vllm:request_time_per_output_token_seconds_sum", "vllm:request_time_per_output_token_seconds_count"
        ),
        "preemptions": float(d["vllm:num_preemptions_total"].sum()),
    }


GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


class GaugeSampler:
    """Samples every rank's running and waiting requests (vLLM's own gauges) every ``interval_s`` in a thread, for
    as long as a run lasts: whether a front door keeps the ranks' batches full, and how much it queues inside them.
    ``stop()`` returns per-rank means over the samples taken while anything was running or waiting anywhere."""

    def __init__(self, ranks: list[str], interval_s: float = 0.5):
        self.ranks, self.interval_s = ranks, interval_s
        self.samples: list[list[tuple[float, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            g = engine_counters(self.ranks, GAUGES)
            self.samples.append(list(zip(g[GAUGES[0]], g[GAUGES[1]])))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        busy = [s for s in self.samples if any(r + w > 0 for r, w in s)]
        if not busy:
            return {"mean_running": [], "mean_waiting": [], "gauge_samples": 0}
        a = np.asarray(busy)  # [samples, ranks, 2]
        return {
            "mean_running": a[:, :, 0].mean(axis=0).round(2).tolist(),
            "mean_waiting": a[:, :, 1].mean(axis=0).round(2).tolist(),
            "gauge_samples": len(busy),
        }


async def send(target: str, model: str, w, prompts, counted: list) -> list[Outcome]:
    """Open-loop streams at the trace's arrival times; ``counted[i]``: the prompt tokens the rank reported."""
    outs = [Outcome(sent=math.nan) for _ in range(len(w))]
    conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE_CONNECTION_S)  # before vLLM's 5 s (uvicorn)
    async with aiohttp.ClientSession(connector=conn) as s:
        t0 = time.perf_counter()

        async def one(i):
            d = float(w.arrival[i]) - (time.perf_counter() - t0)
            if d > 0:
                await asyncio.sleep(d)
            o = outs[i]
            o.sent = time.perf_counter()
            o.expected = int(w.output[i])
            body = {
                "model": model,
                "prompt": prompts[i],
                "max_tokens": o.expected,
                "ignore_eos": True,
                "stream": True,
                "stream_options": USAGE_OPTIONS,
                "temperature": 0.0,
            }
            try:
                async with s.post(target + "/v1/completions", json=body) as r:
                    if r.status != 200:
                        o.status = f"error:http_{r.status}"
                        return
                    async for c in chunks(r):
                        u = c.get("usage") or {}
                        if u.get("prompt_tokens") is not None:
                            counted[i] = int(u["prompt_tokens"])
                        n = tokens_after(c, o.tokens)
                        if n > o.tokens:
                            if o.tokens == 0:
                                o.first = time.perf_counter()
                            o.tokens = n
                o.end = time.perf_counter()
                o.status = "ok" if o.tokens == o.expected else f"error:short_{o.tokens}"
            except Exception as exc:  # noqa: BLE001 - recorded as the request's outcome
                o.status = f"error:{type(exc).__name__}"

        await asyncio.gather(*(one(i) for i in range(len(w))))
    return outs


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-time", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/results/real_vllm"))
    ap.add_argument("--ranks", nargs="+", default=["http://127.0.0.1:18600", "http://127.0.0.1:18601"])
    ap.add_argument("--model", default="tiny-moe")
    ap.add_argument("--policy", default="round_robin")
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--max-batched-tokens", type=int, default=2048)
    ap.add_argument("--kv-capacity", type=int, default=262144)
    ap.add_argument("--block", type=int, default=128, help="vLLM CPU's KV block size (the testbed's)")
    ap.add_argument("--qps", type=float, default=2.0)
    ap.add_argument("--runs", nargs="+", default=list(RUNS))
    ap.add_argument("--skip-ab", action="store_true")
    ap.add_argument(
        "--salt", type=int, default=time.time_ns() % 2**31, help="makes the prompts' tokens new (default: the clock)"
    )
    ap.add_argument("--repeat", type=int, default=1, help="live runs of each workload (new tokens each)")
    ap.add_argument(
        "--serve-arg", action="append", default=[], help="an option for dpbalance serve, e.g. '--tokenize estimate'"
    )
    ap.add_argument("--predict-only", action="store_true")
    ap.add_argument(
        "--tag", default="", help="suffix for this invocation's run names and files (keeps earlier runs' files)"
    )
    ap.add_argument(
        "--append", action="store_true", help="keep the runs already in fidelity.json and add this invocation's"
    )
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    doc = {"step_time": str(a.step_time), "engine": vars(engine_cfg(a)) | {"slots": a.slots}, "runs": []}
    if a.append and (a.out / "fidelity.json").exists():
        old = json.loads((a.out / "fidelity.json").read_text())
        doc = old | {"runs": [{"step_time": old["step_time"]} | r for r in old["runs"]]}
    if not a.skip_ab:  # the committed A/B, re-predicted with the engine model (round_robin, 5 blocks)
        ab = json.loads((a.out / "ab.json").read_text())
        doc["ab_reprediction"] = repredict_ab(ab, a)
    for name in a.runs:
        spec, w = workload_of(name, a)
        pred = predict(w, a, a.policy)
        pfile = a.out / f"predicted_{name}{a.tag and '_' + a.tag}.json"
        pfile.write_text(
            json.dumps({"written": datetime.now(UTC).isoformat(), "trace": spec, "predicted": pred}, indent=2) + "\n"
        )
        print(f"{name}: predicted {pred} (written {pfile})", flush=True)
        for rep in range(0 if a.predict_only else a.repeat):
            entry = live_run(name, spec, w, pred, a, a.salt + rep, rep)
            entry["predicted_at"] = json.loads(pfile.read_text())["written"]
            doc["runs"].append(entry)
            print(f"{name}: measured {entry['measured']}", flush=True)
    (a.out / "fidelity.md").write_text(page(doc))
    (a.out / "fidelity.json").write_text(json.dumps(doc, indent=2) + "\n")


def live_run(name: str, spec: str, w, pred: dict, a, salt: int, rep: int) -> dict:
    """One live run of workload ``name`` through ``dpbalance serve`` (new tokens: ``salt``), against ``pred``."""
    prompts = prompts_of(w, seed=zlib.crc32(name.encode()), salt=salt)
    tag = (name if rep == 0 else f"{name}_{rep + 1}") + (a.tag and f"_{a.tag}")
    router = RouterProcess(
        a.ranks,
        a.policy,
        a.slots,
        a.out / f"records_{tag}.jsonl",
        Path(f"/tmp/router_{tag}.log"),
        extra=tuple(x for arg in a.serve_arg for x in arg.split(" ", 1)),
    )
    try:
        c0 = engine_counters(a.ranks)
        la0 = loadavg()
        t0 = time.perf_counter()
        counted = [None] * len(w)
        outs = asyncio.run(send(router.url, a.model, w, prompts, counted))
        wall = time.perf_counter() - t0
        c1 = engine_counters(a.ranks)
        la1 = loadavg()
    finally:
        router.stop()
    res = summarize(outs, policy=a.policy, workers=2, slots=a.slots, engine_stats=None, wall_s=wall, config={})
    meas = {
        "output_tok_s": res.throughput_tok_s,
        "ttft_p50_s": res.ttft_p50_s,
        "ttft_p99_s": res.ttft_p99_s,
        "tpot_p50_ms": res.tpot_p50_ms,
    }
    eng = engine_side(c0, c1, wall)
    meas["prefix_hit_rate"] = eng.pop("prefix_hit_rate")
    err = {k: (pred[k] / meas[k] - 1) if meas[k] else math.nan for k in KEYS if k != "prefix_hit_rate"}
    err["prefix_hit_rate_abs"] = pred["prefix_hit_rate"] - meas["prefix_hit_rate"]
    wait_idle(a.ranks)
    time.sleep(3)
    return {
        "name": tag,
        "command": f"python benchmarks/real_vllm_fidelity.py --step-time {a.step_time} --runs {name} --qps {a.qps}"
        + "".join(f" --serve-arg '{x}'" for x in a.serve_arg)
        + (f" --tag {a.tag} --append" if a.tag else ""),
        "step_time": str(a.step_time),
        "trace": spec,
        "policy": a.policy,
        "salt": salt,
        "requests": len(w),
        "completed": res.completed,
        "prompt_tokens_as_sent": sum(c == len(p) for c, p in zip(counted, prompts)),
        "wall_s": round(wall, 1),
        "loadavg_before": la0,
        "loadavg_after": la1,
        "measured": meas,
        "predicted": pred,
        "engine_side": eng,
        "error": err,
    }


def _cell(m: dict, p: dict, k: str, fmt: str) -> str:
    return f"{fmt.format(m[k])} / {fmt.format(p[k])} ({p[k] / m[k] - 1:+.0%})" if m[k] else "–"


def page(doc: dict) -> str:
    """fidelity.md: every live run, predicted against measured."""
    lines = [
        "# The engine model against the real engine",
        "",
        "Engine settings: "
        + ", ".join(f"{k} {v}" for k, v in doc["engine"].items() if v is not None)
        + ". Every prediction was written before its run (`predicted_<run>.json`). Error = predicted / measured "
        "− 1 (hit rate: predicted − measured).",
        "",
        "| run | step-time file | output tok/s (measured / predicted, error) | TTFT p50 s | TTFT p99 s "
        "| prefix hit rate | TPOT p50 ms | mean step ms (engine / model) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        m, p, e = r["measured"], r["predicted"], r["engine_side"]
        lines.append(
            f"| {r['name']} | `{Path(r.get('step_time', doc['step_time'])).name}` "
            f"| {_cell(m, p, 'output_tok_s', '{:.0f}')} | {_cell(m, p, 'ttft_p50_s', '{:.3f}')} "
            f"| {_cell(m, p, 'ttft_p99_s', '{:.2f}')} | {m['prefix_hit_rate']:.3f} / {p['prefix_hit_rate']:.3f} "
            f"({p['prefix_hit_rate'] - m['prefix_hit_rate']:+.3f}) | {_cell(m, p, 'tpot_p50_ms', '{:.1f}')} "
            f"| {1e3 * e['mean_step_s']:.1f} / {1e3 * p['mean_step_s']:.1f} |"
        )
    if "ab_reprediction" in doc:
        lines += [
            "",
            "The committed A/B (measured before the ranks were pinned core by core), re-predicted:",
            "",
            "| policy | measured output tok/s | engine model | decode-only model (committed) |",
            "|---|---|---|---|",
        ]
        for pol, v in doc["ab_reprediction"]["policies"].items():
            lines.append(
                f"| {pol} | {v['measured_output_tok_s']:.0f} | {v['predicted_engine_model']:.0f} "
                f"({v['error_engine_model']:+.0%}) | {v['predicted_decode_only_committed']:.0f} "
                f"({v['error_decode_only']:+.0%}) |"
            )
    return "\n".join(lines) + "\n"


def repredict_ab(ab: dict, a) -> dict:
    """The committed A/B's blocks (fresh random prompts: no hits) under the engine model, against its measurements."""
    st = ab["settings"]
    x = argparse.Namespace(**{k: st[k] for k in ("blocks", "requests", "prompt_scale", "max_prompt", "max_output")})
    blocks = blocks_of(load_trace(st["trace"]), x)
    out = {"settings": st, "policies": {}}
    for pol in st["policies"]:
        pred, meas = [], [r["throughput_tok_s"] for r in ab["live"][pol]]
        for b, w in enumerate(blocks):
            cfg = SimConfig(
                workers=2,
                slots=a.slots,
                arrival="poisson",
                qps=st["qps"],
                seed=b,
                step_time=str(a.step_time),
                window="all",
                engine=engine_cfg(a),
            )
            pred.append(run_simulation(w, pol, cfg)[0].throughput_all_tok_s)
        old = [r["throughput_tok_s"] for r in ab["predicted"][pol]]
        out["policies"][pol] = {
            "measured_output_tok_s": float(np.mean(meas)),
            "predicted_engine_model": float(np.mean(pred)),
            "predicted_decode_only_committed": float(np.mean(old)),
            "error_engine_model": float(np.mean(pred) / np.mean(meas) - 1),
            "error_decode_only": float(np.mean(old) / np.mean(meas) - 1),
        }
        print(pol, out["policies"][pol], flush=True)
    return out


if __name__ == "__main__":
    main()
