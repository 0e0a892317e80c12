"""Live A/B of front doors on the real vLLM testbed: dpbalance's policies against the cache-aware routers people
run and vLLM's own data-parallel balancer, through the same two DP ranks.

    pip install vllm-router sglang-router            # in any environment; name the binaries below
    dpbalance testbed build && dpbalance testbed up
    dpbalance calibrate --worker-urls http://127.0.0.1:18600,http://127.0.0.1:18601 --prefill-lens 256 \\
        --prefill-lens 1024 --prefill-lens 2048 --block-size 128 --out step_time.yaml
    python benchmarks/real_vllm_peers.py --step-time step_time.yaml --out peers/ \\
        --vllm-router PATH/vllm-router --sglang-router PATH/sglang-router
    dpbalance testbed down
    python benchmarks/real_vllm_peers.py --report-only --out peers/   # peers.md again from peers.json

Front doors (``--fronts``): ``dpbalance serve`` with ``round_robin``, ``br0`` and ``brp`` (``--step-time`` given,
so ``brp`` weighs prefill at the calibrated prices; its prefix index learns the block size and KV size from the
ranks); ``vllm-router --policy cache_aware`` and ``sglang-router launch --policy cache_aware`` with their default
thresholds, each with its own ``--prometheus-port``; and ``internal``: vLLM's own balancer, the testbed restarted in
internal mode (one API server for both ranks, no rank header), requests sent straight to it.

Workloads, every block a different slice of its trace, text prompts of the model's words (one token per word, no
BOS: equal text prefixes are equal token blocks, which the text-matching routers and the engine's cache agree on):

- ``multi_turn``: whole conversations of mooncake-synthetic (requests grouped by their first block hash; each A/B
  block takes its own groups) with their block hashes, prompts × ``--prompt-scale`` (a 512-token block becomes 64
  tokens), at most ``--max-prompt``; each hash is one fixed run of words, so requests that share hashes share
  their leading tokens; the trace's own arrival order and gaps, compressed to ``--qps-multi``. The simulator
  cuts the same prompts into the engine's 128-token blocks;
- ``prefix_free``: mooncake-conversation lengths (prompts × 1/8), fresh random words, Poisson at its ``--qps``.

``--prompt-format ids`` sends the same prompts as the model's token ids (the first rank's ``/tokenize`` of each
text, before the run) to every front door; ``auto`` sends them to vllm-router only (sglang-router 0.3 answers 422 to
token-id prompts). The engine computes the same tokens either way.

Each run's words are new (a salt per run), so no run finds another's prompts in the ranks' caches. Every
block runs every front door once per workload, the order rotated from block to block; internal mode runs at the end
of each block (the testbed is restarted into it and back). Before any live request, the simulator's prediction of
every run (the engine model with prefill and prefix caching, the step-time file, the same arrivals; the
front's rule: ``vllm_router_cache_aware``, ``sglang_cache_aware``, ``vllm_dp`` for the internal balancer) is
written to ``predicted.json`` with a timestamp.

Per run: output tokens/s (all output tokens / first send to last token), TTFT p50/p99, the ranks' prefix-cache hit
rate (their counters), and vllm-router's own routing counters (``router_counters``: how many decisions took its
cache-aware path; sglang-router 0.3 counts selections per policy only, which says nothing here). vllm-router 0.1.17
routes by token blocks: in front of the testbed's ranks it counts every decision as ``missing_tokens`` (it cannot
prepare token inputs for that model's prompts) and routes by load, so its column there measures that fallback
(docs/results/real_vllm/README.md, section 8). Reports means over blocks with 95 % intervals (Student t), and ratios
to round-robin paired by block. Writes ``peers.json`` and ``peers.md`` in ``--out``, and every dpbalance run's
recording in ``records/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from real_vllm_ab import RouterProcess, end_process, free_port, get, mean_ci, wait_idle  # noqa: E402
from real_vllm_fidelity import GaugeSampler, engine_counters, engine_side, prompts_of, send  # noqa: E402

from dpbalance.core import Workload  # noqa: E402
from dpbalance.core.workload import Blocks  # noqa: E402
from dpbalance.engine.config import EngineConfig  # noqa: E402
from dpbalance.loadgen import summarize  # noqa: E402
from dpbalance.sim import SimConfig, run_simulation  # noqa: E402
from dpbalance.traces import load_trace  # noqa: E402

#: the peer routers' own counters kept with each run (how each decision was made)
ROUTER_COUNTERS = re.compile(r"prefix_routing_decisions|cache_hits|cache_misses|load_balancing_events")
SERVE = ("round_robin", "br0", "brp")
PEERS = ("vllm-router", "sglang-router")
INTERNAL = "internal"
#: the simulator's rule for each front door
RULE = {"vllm-router": "vllm_router_cache_aware", "sglang-router": "sglang_cache_aware", INTERNAL: "vllm_dp"}
WORKLOADS = ("multi_turn", "prefix_free")
KEYS = ("output_tok_s", "ttft_p50_s", "ttft_p99_s", "prefix_hit_rate")
LABEL = {
    "output_tok_s": "output tok/s",
    "ttft_p50_s": "TTFT p50 s",
    "ttft_p99_s": "TTFT p99 s",
    "prefix_hit_rate": "hit",
}
VOCAB = 1020  # the testbed model's words w0 … w1019


# ---------------------------------------------------------------------------------------------- workloads
def scaled(w: Workload, k: float, max_prompt: int, max_output: int) -> Workload:
    """Prompts × k (at most max_prompt), block size × k with the same hashes, outputs at most max_output."""
    prompt = np.clip(np.round(w.prompt * k), 1, max_prompt).astype(np.int64)
    blocks = None
    if w.blocks is not None:
        b = w.blocks
        blocks = Blocks(b.hashes, b.offsets, max(1, round(b.size * k)))
    out = np.minimum(w.output, max_output).astype(np.int64)
    return Workload.from_arrays(w.arrival, prompt, out, name=w.name, blocks=blocks, session=w.session)


def coarsened(b: Blocks, factor: int) -> Blocks:
    """The same prompts cut into blocks ``factor`` times larger: a hash is chained on everything before it, so a
    large block's hash is that of its last small block (every ``factor``-th one)."""
    counts = np.diff(b.offsets) // factor
    lists = [b.hashes[b.offsets[i] + factor - 1 : b.offsets[i] + factor * c : factor] for i, c in enumerate(counts)]
    return Blocks.from_lists(lists, b.size * factor)


def sessions_of(w: Workload, block: int, blocks: int, n: int) -> np.ndarray:
    """Indices (trace order) of whole sessions for A/B block ``block``: requests grouped by their first block hash
    (a conversation's prompts share it), groups of two or more in order of first appearance, every ``blocks``-th
    one from ``block`` on, until ``n`` requests."""
    b = w.blocks
    first = np.where(np.diff(b.offsets) > 0, b.hashes[np.minimum(b.offsets[:-1], len(b.hashes) - 1)], -1)
    _, start, inverse, count = np.unique(first, return_index=True, return_inverse=True, return_counts=True)
    keep = [g for g in np.argsort(start) if count[g] >= 2 and first[start[g]] != -1][block::blocks]
    chosen, total = [], 0
    for g in keep:
        chosen.append(g)
        total += int(count[g])
        if total >= n:
            break
    return np.flatnonzero(np.isin(inverse, chosen))


def block_workloads(a) -> dict[str, list[Workload]]:
    """Every block of both workloads, with its arrival times."""
    mt = scaled(load_trace("mooncake-synthetic"), a.prompt_scale, a.max_prompt, a.max_output)
    pf = scaled(load_trace("mooncake-conversation"), 1 / 8, a.max_prompt, a.max_output)
    out: dict[str, list[Workload]] = {"multi_turn": [], "prefix_free": []}
    for b in range(a.blocks):
        w = mt.take(sessions_of(mt, b, a.blocks, a.requests))
        span = max(float(w.arrival[-1] - w.arrival[0]), 1e-9)
        t = (w.arrival - w.arrival[0]) * (len(w) / a.qps_multi) / span
        out["multi_turn"].append(
            Workload.from_arrays(t, w.prompt, w.output, name=f"multi_turn-{b}", blocks=w.blocks, session=w.session)
        )
        w = pf.take(np.arange(b * a.requests, (b + 1) * a.requests))
        t = np.cumsum(np.random.default_rng(b).exponential(1 / a.qps_free, len(w)))
        out["prefix_free"].append(Workload.from_arrays(t - t[0], w.prompt, w.output, name=f"prefix_free-{b}"))
    return out


def for_engine(w: Workload, engine_block: int) -> Workload:
    """``w`` with its blocks cut as the engine cuts them (the simulator's cache then works in vLLM's blocks)."""
    b = w.blocks
    if b is None or b.size == engine_block or engine_block % b.size:
        return w
    return Workload.from_arrays(
        w.arrival, w.prompt, w.output, name=w.name, blocks=coarsened(b, engine_block // b.size), session=w.session
    )


def text_prompts(w: Workload, salt: int) -> list[str]:
    """A prompt of ``w.prompt[i]`` words per request: each block hash a fixed run of words (new for every salt),
    the rest random (the fidelity runs' token ids, as the model's words)."""
    return [" ".join(f"w{x}" for x in ids) for ids in prompts_of(w, seed=7, salt=salt, vocab=(0, VOCAB))]


def id_prompts(texts: list[str], rank: str, model: str) -> list[list[int]]:
    """The same prompts as the model's token ids (``--prompt-format ids``), as the rank's ``/tokenize`` cuts them
    (no special tokens: the text prompts get none either): every front door and the engine then see token ids,
    which is what vllm-router's prefix path needs (see the module docstring)."""
    out = []
    for t in texts:
        body = json.dumps({"model": model, "prompt": t, "add_special_tokens": False}).encode()
        req = urllib.request.Request(rank + "/tokenize", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            out.append(json.loads(r.read())["tokens"])
    return out


# ---------------------------------------------------------------------------------------------- prediction
def rule_of(front: str) -> str:
    return RULE.get(front, front.split(" ", 1)[0])


def predict(w: Workload, front: str, a) -> dict:
    """The simulator's figures for ``front`` on ``w``. dpbalance holds requests until a rank has a free slot; the
    other front doors send every request at once and the rank queues what it cannot run: the simulator's
    ``--front auto`` runs each rule that way."""
    eng = EngineConfig(prefill=True, prefix_cache=True, kv_capacity=a.kv_capacity, max_batched_tokens=2048)
    cfg = SimConfig(workers=2, slots=a.slots, arrival="replay", step_time=str(a.step_time), window="all", engine=eng)
    r = run_simulation(for_engine(w, a.engine_block), rule_of(front), cfg)[0]
    return {
        "output_tok_s": r.throughput_all_tok_s,
        "ttft_p50_s": r.ttft_p50_s,
        "ttft_p99_s": r.ttft_p99_s,
        "prefix_hit_rate": r.prefix_hit_rate,
    }


# ---------------------------------------------------------------------------------------------- front doors
class PeerProcess:
    """vllm-router or sglang-router in a process of its own, pinned nowhere; ended by PID."""

    def __init__(self, front: str, exe: str, ranks: list[str], log: Path):
        self.port, metrics = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [exe] + (["launch"] if front == "sglang-router" else [])
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--policy", "cache_aware"]
        argv += ["--prometheus-port", str(metrics), "--worker-urls", *ranks]
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 90
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"{front} did not start; its log: {log}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        return get(self.url + "/health") is not None and get(self.url + "/v1/models") is not None

    def counters(self) -> dict[str, float]:
        """The router's own counters of how it routed (its Prometheus text, read before it stops): whether its
        cache-aware path engaged or fell back (vllm-router counts every decision by outcome)."""
        text = get(self.metrics_url) or ""
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if not line.startswith("#") and ROUTER_COUNTERS.search(line.split("{", 1)[0])
        }

    def stop(self) -> None:
        end_process(self.proc, self.log, grace_s=20)


class Direct:
    """No front door: the internal-mode API server itself."""

    def __init__(self, url: str):
        self.url = url

    def stop(self) -> None:
        pass


def testbed(mode: str) -> None:
    """Restart the testbed's ranks in ``mode`` (the testbed's own commands)."""
    dp = [sys.executable, "-m", "dpbalance", "testbed"]
    subprocess.run([*dp, "down"], check=True, capture_output=True)
    subprocess.run([*dp, "up", "--mode", mode], check=True, capture_output=True)


def serve_front(front: str) -> bool:
    """A ``dpbalance serve`` front door: one of SERVE, or a policy spec of one (``brp:wait_weight=0``), optionally
    followed by options for ``serve`` (``brp --tokenize estimate``)."""
    return front.split(" ", 1)[0].split(":", 1)[0] in SERVE


def start(front: str, a, rec: Path, log: Path):
    if serve_front(front):
        policy, *opts = shlex.split(front)
        extra = ["--step-time", str(a.step_time), *opts]
        return RouterProcess(a.ranks, policy, a.slots, rec, log, extra=extra)
    if front in PEERS:
        return PeerProcess(front, getattr(a, front.replace("-", "_")), a.ranks, log)
    return Direct(a.internal_url)


# ---------------------------------------------------------------------------------------------- live runs
def live_run(front: str, wl: str, b: int, w: Workload, a, salt: int) -> dict:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", front)  # brp:wait_weight=0 -> brp_wait_weight_0
    rec = a.out / "records" / f"{wl}_block{b}_{name}.jsonl"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.unlink(missing_ok=True)
    (a.out / "logs").mkdir(exist_ok=True)
    ranks = [a.internal_url] if front == INTERNAL else a.ranks
    prompts = text_prompts(w, salt)
    if a.prompt_format == "ids" or (a.prompt_format == "auto" and front == "vllm-router"):
        prompts = id_prompts(prompts, a.ranks[0], a.model)
    door = start(front, a, rec, a.out / "logs" / f"{wl}_block{b}_{name}.log")
    try:
        c0 = engine_counters(ranks)
        gauges = GaugeSampler(ranks)
        t0 = time.perf_counter()
        outs = asyncio.run(send(door.url, a.model, w, prompts, [None] * len(w)))
        wall = time.perf_counter() - t0
        busy = gauges.stop()
        c1 = engine_counters(ranks)
        routed = door.counters() if isinstance(door, PeerProcess) else {}
    finally:
        door.stop()
    if not rec.exists() or rec.stat().st_size == 0:
        rec.unlink(missing_ok=True)
    res = summarize(outs, policy=front, workers=2, slots=a.slots, engine_stats=None, wall_s=wall, config={})
    eng = engine_side(c0, c1, wall) | busy
    row = {
        "output_tok_s": res.throughput_tok_s,
        "ttft_p50_s": res.ttft_p50_s,
        "ttft_p99_s": res.ttft_p99_s,
        "prefix_hit_rate": eng.pop("prefix_hit_rate"),
        "completed": res.completed,
        "requests": len(w),
        "errors": res.config.get("errors", {}),
        "wall_s": round(wall, 1),
        "salt": salt,
        "engine_side": eng,
    }
    if routed:
        row["router_counters"] = routed
    wait_idle(ranks)
    time.sleep(a.settle_s)
    return row


# ---------------------------------------------------------------------------------------------- statistics
def paired(live: dict, f: str, base: str, k: str) -> str:
    """Mean over blocks of ``f``'s ``k`` / ``base``'s, with its 95 % interval (paired by block), as text."""
    if not live.get(base) or len(live[base]) != len(live[f]):
        return "–"
    g, gci = mean_ci([r[k] / q[k] for r, q in zip(live[f], live[base])])
    return f"{g:.2f}× ± {gci:.2f}"


def report(doc: dict, default: str = "brp") -> str:
    lines = []
    for wl in doc["settings"]["workloads"]:
        live, pred = doc["live"][wl], doc["predicted"][wl]
        fronts = [f for f in doc["settings"]["fronts"] if live.get(f)]
        n = min(len(live[f]) for f in fronts) if fronts else 0
        lines += [
            f"### {wl} ({n} blocks)",
            "",
            "| front door | "
            + " | ".join(LABEL[k] for k in KEYS)
            + " | tok/s vs round_robin | TTFT p50 vs round_robin "
            "| predicted tok/s | predicted TTFT p50 s | predicted hit |",
            "|---" * (len(KEYS) + 6) + "|",
        ]
        for f in fronts:
            cells = []
            for k in KEYS:
                mu, ci = mean_ci([r[k] for r in live[f]])
                cells.append(f"{mu:.3g} ± {ci:.2g}" if k != "prefix_hit_rate" else f"{mu:.2f} ± {ci:.2f}")
            cells += [paired(live, f, "round_robin", k) for k in ("output_tok_s", "ttft_p50_s")]
            cells += [
                f"{np.mean([p['output_tok_s'] for p in pred[f]]):.3g}",
                f"{np.mean([p['ttft_p50_s'] for p in pred[f]]):.3g}",
                f"{np.mean([p['prefix_hit_rate'] for p in pred[f]]):.2f}",
            ]
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
        if default in fronts:
            lines += [
                "",
                f"`{default}` against each other front door, paired by block (above 1× on tok/s and below 1× on "
                "TTFT favour it):",
                "",
                "| against | output tok/s | TTFT p50 | TTFT p99 |",
                "|---|---|---|---|",
            ]
            for f in fronts:
                if f != default:
                    cells = [paired(live, default, f, k) for k in ("output_tok_s", "ttft_p50_s", "ttft_p99_s")]
                    lines.append(f"| {f} | " + " | ".join(cells) + " |")
        lines += fullness(live, fronts)
        for f in fronts:
            per_block = [decisions(r.get("router_counters", {})) for r in live[f]]
            if any(per_block):
                shown = "; ".join(", ".join(f"{k} {v:g}" for k, v in sorted(d.items())) or "–" for d in per_block)
                lines += ["", f"{f}'s own prefix-routing decisions, block by block: {shown}."]
        lines.append("")
    return "\n".join(lines)


def fullness(live: dict, fronts: list[str]) -> list[str]:
    """How full each front door kept the ranks (vLLM's own gauges and step histogram, runs that recorded them):
    requests running and waiting inside the ranks (both ranks together, while anything ran) and scheduled tokens per
    step (mean over the ranks), mean ± 95 % over blocks."""
    rows = []
    for f in fronts:
        eng = [r.get("engine_side", {}) for r in live[f]]
        if not all(e.get("mean_running") for e in eng):
            continue
        cells = [mean_ci([sum(e[k]) for e in eng]) for k in ("mean_running", "mean_waiting")] + [
            mean_ci([float(np.nanmean(e["tokens_per_step"])) for e in eng])
        ]
        rows.append(f"| {f} | " + " | ".join(f"{m:.1f} ± {c:.1f}" for m, c in cells) + " |")
    if not rows:
        return []
    head = ["", "How full the ranks ran (their own gauges, sampled every 0.5 s; 32 slots each):", ""]
    return head + ["| front door | running | waiting in the ranks | tokens per step |", "|---|---|---|---|", *rows]


def decisions(counters: dict[str, float]) -> dict[str, float]:
    """A peer router's prefix-routing decisions by outcome (vllm-router's ``prefix_routing_decisions_total``)."""
    out: dict[str, float] = {}
    for name, value in counters.items():
        m = re.search(r'prefix_routing_decisions_total\{.*outcome="([^"]+)"', name)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + value
    return out


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--step-time", type=Path, help="step-time file with prefill terms (calibrate); required to run")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ranks", nargs="+", default=["http://127.0.0.1:18600", "http://127.0.0.1:18601"])
    ap.add_argument("--internal-url", default="http://127.0.0.1:18600", help="the internal-mode API server")
    ap.add_argument("--vllm-router", default="vllm-router", help="the vllm-router binary")
    ap.add_argument("--sglang-router", default="sglang-router", help="the sglang-router binary")
    ap.add_argument(
        "--fronts",
        default=",".join((*SERVE, *PEERS, INTERNAL)),
        help="comma-separated; a dpbalance front may carry settings (brp:wait_weight=0) and, after a space, options "
        "for dpbalance serve ('brp --tokenize estimate')",
    )
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument(
        "--start-block",
        type=int,
        default=0,
        help="resume an interrupted A/B: keep the first N blocks of the peers.json in --out, run blocks N..",
    )
    ap.add_argument("--requests", type=int, default=150, help="requests per run")
    ap.add_argument("--qps-multi", type=float, default=2.0, help="arrival rate of the multi-turn workload")
    ap.add_argument("--qps-free", type=float, default=2.0, help="arrival rate of the prefix-free workload")
    ap.add_argument("--prompt-scale", type=float, default=1 / 8, help="multi-turn prompts × this (blocks too)")
    ap.add_argument("--engine-block", type=int, default=128, help="the ranks' KV block size (vLLM CPU: 128)")
    ap.add_argument("--max-prompt", type=int, default=3072)
    ap.add_argument("--max-output", type=int, default=256)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--kv-capacity", type=int, default=262144, help="the ranks' KV tokens (vLLM's log says)")
    ap.add_argument("--model", default="tiny-moe")
    ap.add_argument("--settle-s", type=float, default=3.0)
    ap.add_argument(
        "--prompt-format",
        choices=("text", "ids", "auto"),
        default="text",
        help="send prompts as text (the model's words), as their token ids (the same tokens), or 'auto': token ids "
        "to vllm-router only (it routes by token blocks and falls back to load when it cannot tokenize a text "
        "prompt; sglang-router rejects token-id prompts), text to the rest",
    )
    ap.add_argument("--predict-only", action="store_true")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rewrite peers.md in --out from its peers.json (after a change to the report)",
    )
    a = ap.parse_args()
    if a.step_time is None and not a.report_only:
        ap.error("--step-time is required (except with --report-only)")
    a.fronts = [f for f in a.fronts.split(",") if f]
    a.workloads = [w for w in a.workloads.split(",") if w]
    bad = [f for f in a.fronts if not serve_front(f) and f not in (*PEERS, INTERNAL)]
    if bad:
        ap.error(f"unknown front door(s) {bad}")
    return a


def resume(a) -> tuple[dict, dict]:
    """An interrupted A/B's predictions (kept as written before its first block) and its first ``--start-block``
    blocks, from the peers.json in ``--out``; exits with a message when they are not there."""
    path = a.out / "peers.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"--start-block {a.start_block}: cannot read the A/B to resume from {path} ({exc})")
    pred = {wl: {f: doc.get("predicted", {}).get(wl, {}).get(f) for f in a.fronts} for wl in a.workloads}
    live = {
        wl: {f: doc.get("live", {}).get(wl, {}).get(f, [])[: a.start_block] for f in a.fronts} for wl in a.workloads
    }
    for wl in a.workloads:
        for f in a.fronts:
            if pred[wl][f] is None or len(live[wl][f]) < a.start_block:
                sys.exit(
                    f"--start-block {a.start_block}: {path} has {len(live[wl][f])} block(s) of {wl} through {f}"
                    + (" and no prediction for it" if pred[wl][f] is None else "")
                )
    print(f"resuming {path} at block {a.start_block}; its predictions are kept as written", flush=True)
    return pred, live


def rerender(out: Path) -> int:
    """``--report-only``: peers.md rewritten from the peers.json beside it."""
    path = out / "peers.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"--report-only: cannot read {path} ({exc})")
    (out / "peers.md").write_text(report(doc))
    print(f"rewrote {out / 'peers.md'} from {path}")
    return 0


def main() -> int:
    a = parse_args()
    if a.report_only:
        return rerender(a.out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: every front door is ended
    a.out.mkdir(parents=True, exist_ok=True)
    blocks = block_workloads(a)
    settings = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(a).items()
        if k not in ("out", "vllm_router", "sglang_router", "predict_only", "start_block", "report_only")
    }
    if a.start_block and not a.predict_only:
        pred, live = resume(a)
    else:
        pred = {wl: {f: [predict(w, f, a) for w in blocks[wl]] for f in a.fronts} for wl in a.workloads}
        (a.out / "predicted.json").write_text(
            json.dumps({"written": datetime.now(UTC).isoformat(), "settings": settings, "predicted": pred}, indent=2)
            + "\n"
        )
        print(f"predictions written: {a.out / 'predicted.json'}", flush=True)
        live = {wl: {f: [] for f in a.fronts} for wl in a.workloads}
    if a.predict_only:
        return 0
    external = [f for f in a.fronts if f != INTERNAL]
    salt = int(time.time())
    doc = {"settings": settings, "predicted": pred, "live": live}
    try:
        switch = bool(external)  # with only the internal front, the testbed changes mode once, not per block
        if INTERNAL in a.fronts and not switch:
            testbed("internal")
        for b in range(a.start_block, a.blocks):
            order = external[b % len(external) :] + external[: b % len(external)] if external else []
            for wl in a.workloads:
                for f in order:
                    salt += 1
                    live[wl][f].append(live_run(f, wl, b, blocks[wl][b], a, salt))
                    print(f"block {b} {wl} {f}: {live[wl][f][-1]}", flush=True)
            if INTERNAL in a.fronts:
                if switch:
                    testbed("internal")
                try:
                    for wl in a.workloads:
                        salt += 1
                        live[wl][INTERNAL].append(live_run(INTERNAL, wl, b, blocks[wl][b], a, salt))
                        print(f"block {b} {wl} internal: {live[wl][INTERNAL][-1]}", flush=True)
                finally:
                    if switch or b == a.blocks - 1:
                        testbed("external")
            (a.out / "peers.json").write_text(json.dumps(doc, indent=2) + "\n")
    finally:
        (a.out / "peers.json").write_text(json.dumps(doc, indent=2) + "\n")
        (a.out / "peers.md").write_text(report(doc))
    print(report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
