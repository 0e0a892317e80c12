"""How brp's defaults were chosen: a small grid over prefill_weight, work_weight, wait_weight and affinity_wait_s
on the training subset only, scored by the geometric means over its cells of TTFT p50 and p99. Prints Markdown.

    DPBALANCE_TRACE_DIR=DIR python benchmarks/prefix_train.py -j 2
    DPBALANCE_TRACE_DIR=DIR python benchmarks/prefix_train.py -j 2 --overloaded \
        --policies "brp;brp:wait_weight=0;brp:wait_weight=0.1;brp:wait_weight=1.0;sglang_cache_aware;llmd_prefix"
    DPBALANCE_TRACE_DIR=DIR python benchmarks/prefix_train.py -j 2 --overloaded \
        --two-ranks docs/results/real_vllm/step_time_ids.yaml --policies "brp;brp:affinity_wait_s=0;llmd_prefix"

Training cells: the first half of mooncake-synthetic (1,997 requests) at rate scales 0.04 and 0.08, and synthetic
sessions seeds 1–3 at qps 1.5 and 3, each with an unlimited and a 1,000,000-token KV capacity, prefill on (the load
levels of benchmarks/prefix_matrix.py). Rule: keep the a-priori values (the step-time model's own ratio, λ = 1,
30 s, no wait term) unless a variant beats them by more than 2 % on either geometric mean without losing more than
2 % on the other.
"""

from __future__ import annotations

import argparse
import math
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from prefix_matrix import CAPS, MS, SESS, run  # noqa: E402

GRID = ["brp"] + [
    f"brp:prefill_weight={pw},work_weight={ww}"
    for pw in (0.5, 1.0, 2.0)
    for ww in (0.5, 1.0, 3.0)
    if (pw, ww) != (1.0, 1.0)
]
GRID += [f"brp:affinity_wait_s={a}" for a in (0, 10, 120)]
GRID += [f"brp:wait_weight={m}" for m in (0.1, 0.3, 1.0, 3.0)]
BASELINES = ["llmd_prefix", "preble", "sglang_cache_aware", "br0"]


def cells() -> list[tuple[dict, float, object]]:
    out = [(dict(trace=MS, max_requests=1997), r, c) for r in (0.04, 0.08) for c in CAPS.values()]
    out += [(dict(trace=SESS.format(q=q, s=s)), 1.0, c) for s in (1, 2, 3) for q in (1.5, 3.0) for c in CAPS.values()]
    return out


def overloaded_cells() -> list[tuple[dict, float, object]]:
    """The same traces one grid level above heavy (mooncake-synthetic's first half at ×0.10, sessions at qps 4):
    ``--overloaded`` adds them, reported apart and with the rest."""
    out = [(dict(trace=MS, max_requests=1997), 0.10, c) for c in CAPS.values()]
    out += [(dict(trace=SESS.format(q=4.0, s=s)), 1.0, c) for s in (1, 2, 3) for c in CAPS.values()]
    return out


#: two ranks shaped like the real-vLLM testbed's (32 slots, a 2,048-token budget, 128-token blocks, 262,144 KV tokens
#: per rank), sessions whose prompts run ~1,000–2,400 tokens for ~40 output tokens; the step time is a calibration
TWO_RANKS = (
    "synthetic:n=2000,sessions=500,turns=4,system_prompt=1024,prompt_mean=300,output_mean=40,block=128,qps={q},seed={s}"
)
TWO_RANK_QPS = (6.0, 12.0, 16.0)  # light / heavy / overloaded by jsq_tokens's TTFT p50 (see --two-ranks)


def two_rank_cells(step_time: str) -> list[tuple]:
    """``--two-ranks``: synthetic sessions seeds 1–3 on two testbed-shaped ranks priced by ``step_time``."""
    dep = dict(step_time=step_time, slots=32, max_batched_tokens=2048, block_size=128)
    return [(dict(trace=TWO_RANKS.format(q=q, s=s)), 1.0, 262_144, 2, dep) for s in (1, 2, 3) for q in TWO_RANK_QPS]


def _row(p: str, rows: list[dict]) -> str:
    g50 = math.exp(sum(math.log(r["p50"]) for r in rows) / len(rows))
    g99 = math.exp(sum(math.log(r["p99"]) for r in rows) / len(rows))
    return f"| {p} | {g50:.3f} | {g99:.2f} | {sum(r['hit'] for r in rows) / len(rows):.3f} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-j", "--processes", type=int, default=1)
    ap.add_argument("--policies", help="semicolon-separated specs instead of the grid and its baselines")
    ap.add_argument("--overloaded", action="store_true", help="add the cells one load level above heavy")
    ap.add_argument(
        "--two-ranks",
        metavar="STEP_TIME",
        help="add 9 cells on two testbed-shaped ranks priced by this step-time file (synthetic sessions seeds 1-3 "
        "at qps 6 / 12 / 16: jsq_tokens's light, heavy and next level with the committed testbed calibration)",
    )
    args = ap.parse_args()
    base = [(s, r, c, 8, {}) for s, r, c in cells()]
    parts = [("training", base)]
    if args.overloaded:
        parts.append(("overloaded", [(s, r, c, 8, {}) for s, r, c in overloaded_cells()]))
    if args.two_ranks:
        parts.append(("two ranks", two_rank_cells(args.two_ranks)))
    cs = [c for _, part in parts for c in part]
    pols = args.policies.split(";") if args.policies else GRID + BASELINES
    jobs = [(s, r, c, True, p, g, dep) for p in pols for s, r, c, g, dep in cs]
    with Pool(args.processes) as pool:
        flat = pool.map(run, jobs, chunksize=1)
    whole = slice(0, len(cs))
    groups = [("", whole)]
    if len(parts) > 1:
        groups, at = [], 0
        for label, part in parts:
            groups.append((f" ({label})", slice(at, at + len(part))))
            at += len(part)
        groups.append((" (all)", whole))
    print("| policy | gm TTFT p50 s | gm TTFT p99 s | mean hit rate |\n|---|---|---|---|")
    for i, p in enumerate(pols):
        rows = flat[i * len(cs) : (i + 1) * len(cs)]
        for label, part in groups:
            print(_row(p + label, rows[part]))


if __name__ == "__main__":
    main()
