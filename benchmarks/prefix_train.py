"""How brp's defaults were chosen: a small grid over prefill_weight, work_weight, wait_weight and affinity_wait_s
on the training subset only, scored by the geometric means over its cells of TTFT p50 and p99. Prints Markdown.

    DPBALANCE_TRACE_DIR=DIR python benchmarks/prefix_train.py -j 2
    DPBALANCE_TRACE_DIR=DIR python benchmarks/prefix_train.py -j 2 --overloaded \
        --policies "brp;brp:wait_weight=0;brp:wait_weight=0.1;brp:wait_weight=1.0;sglang_cache_aware;llmd_prefix"

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


def _row(p: str, rows: list[dict]) -> str:
    g50 = math.exp(sum(math.log(r["p50"]) for r in rows) / len(rows))
    g99 = math.exp(sum(math.log(r["p99"]) for r in rows) / len(rows))
    return f"| {p} | {g50:.3f} | {g99:.2f} | {sum(r['hit'] for r in rows) / len(rows):.3f} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-j", "--processes", type=int, default=1)
    ap.add_argument("--policies", help="semicolon-separated specs instead of the grid and its baselines")
    ap.add_argument("--overloaded", action="store_true", help="add the cells one load level above heavy")
    args = ap.parse_args()
    base = cells()
    extra = overloaded_cells() if args.overloaded else []
    cs = base + extra
    pols = args.policies.split(";") if args.policies else GRID + BASELINES
    jobs = [(s, r, c, True, p, 8) for p in pols for s, r, c in cs]
    with Pool(args.processes) as pool:
        flat = pool.map(run, jobs, chunksize=1)
    whole = slice(0, len(cs))
    groups = [("", whole)]
    if extra:
        groups = [(" (training)", slice(0, len(base))), (" (overloaded)", slice(len(base), len(cs))), (" (all)", whole)]
    print("| policy | gm TTFT p50 s | gm TTFT p99 s | mean hit rate |\n|---|---|---|---|")
    for i, p in enumerate(pols):
        rows = flat[i * len(cs) : (i + 1) * len(cs)]
        for label, part in groups:
            print(_row(p + label, rows[part]))


if __name__ == "__main__":
    main()
