"""The prefix matrix in the simulator: brp against br0, jsq_tokens, round_robin and every cache-aware
baseline on traces with prefix structure, at load levels chosen by jsq_tokens, prefill on and off, per-rank KV
capacity unlimited or realistic. Prints Markdown.

    DPBALANCE_TRACE_DIR=DIR python benchmarks/prefix_matrix.py -j 2 \\
        > docs/results/prefix_matrix.md

Load levels (chosen from jsq_tokens's TTFT p50 with prefill on and an unlimited cache, never from brp's): on the
grid of arrival-rate scales, *heavy* is the largest at which jsq_tokens's TTFT p50 stays under 60 s and *light* is
half of it. Prefill-off cells replay each trace at its own rate (decode-only ranks keep up there).
brp's defaults were chosen on a training subset (the first half of mooncake-synthetic, synthetic sessions seeds 1–3)
that no test cell below reuses except the whole mooncake-synthetic rows (marked).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from multiprocessing import Pool

from dpbalance.engine.config import EngineConfig
from dpbalance.sim.config import SimConfig
from dpbalance.sim.loop import simulate
from dpbalance.sim.run import build_policy, summarize
from dpbalance.traces.selection import TraceSelection

CAPACITY = 1_000_000  # KV tokens per rank: ~35 GB of FP8 MLA KV (DeepSeek-V3: 61 layers × 576 B per token)
MS, MC = "mooncake-synthetic", "mooncake-conversation"
SESS = "synthetic:n=2000,sessions=500,turns=4,qps={q},seed={s}"
#: trace label -> (selection, {level: rate scale or qps}); levels from jsq_tokens (module docstring)
TRACES = {
    MC: (dict(trace=MC), {"light": 0.06, "heavy": 0.12}),
    MS + " (whole; first half trained)": (dict(trace=MS), {"light": 0.04, "heavy": 0.08}),
    MS + " second half": (dict(trace=MS, train_split=0.5), {"heavy": 0.08}),
    "sessions seed 4": ("4", {"light": 1.5, "heavy": 3.0}),
    "sessions seed 5": ("5", {"light": 1.5, "heavy": 3.0}),
}
#: prefill off (cache on): each trace at its own rate, realistic capacity
PREFILL_OFF = {MC: dict(trace=MC), MS: dict(trace=MS), "sessions seed 4": "4"}
POLICIES = [
    "brp",
    "br0",
    "jsq_tokens",
    "round_robin",
    "prefix_affinity",
    "sglang_cache_aware",
    "vllm_router_cache_aware",
    "dynamo_kv",
    "llmd_prefix",
    "preble",
    "session_hash",
    "vllm_dp",
]
CAPS = {"unlimited": "unlimited", f"{CAPACITY // 1000}k": CAPACITY}
COLS = [
    ("tok/s", "tok", True, "{:.1f}"),
    ("tok/s steady", "tok_w", True, "{:.1f}"),
    ("TTFT p50 s", "p50", False, "{:.2f}"),
    ("TTFT p99 s", "p99", False, "{:.1f}"),
    ("hit rate", "hit", True, "{:.3f}"),
    ("max–min (run)", "mm", False, "{:,.0f}"),
    ("max–min steady", "mm_w", False, "{:,.0f}"),
]
TIE = 0.005  # relative: closer than this is level (not a loss)


def selection(sel, level_value) -> tuple[dict, float]:
    """(TraceSelection fields, rate scale) of a trace at one level."""
    if isinstance(sel, str):  # a synthetic-sessions seed: the level is its qps
        return dict(trace=SESS.format(q=level_value, s=sel)), 1.0
    return sel, level_value


def run(job) -> dict:
    """One cell: (selection, rate, capacity, prefill, policy, workers[, deployment]), ``deployment`` a dict of
    engine and simulator settings that replace the matrix's (step time, slots, token budget, block size)."""
    sel, rate, cap, prefill, policy, workers, *rest = job
    dep = dict(rest[0]) if rest else {}
    test, train = TraceSelection(**sel).load(seed=0)
    eng_kw = {k: dep.pop(k) for k in ("max_batched_tokens", "block_size") if k in dep}
    eng = EngineConfig(prefill=prefill, prefix_cache=True, kv_capacity=cap, **eng_kw)
    cfg = SimConfig(workers=workers, rate_scale=rate, engine=eng, **dep)
    rec = simulate(test, build_policy(policy, cfg, train), cfg)
    res, _ = summarize(rec, policy, cfg, test)
    st, _ = summarize(rec, policy, dataclasses.replace(cfg, window="steady"), test)
    return dict(
        tok=res.throughput_all_tok_s,
        tok_w=st.throughput_tok_s,
        p50=res.ttft_p50_s,
        p99=res.ttft_p99_s,
        hit=res.prefix_hit_rate,
        mm=res.maxmin_all,
        mm_w=st.avg_imbalance_maxmin,
        pre=res.preemptions,
    )


def cells() -> list[tuple[str, dict, float, object, bool]]:
    """(title, selection, rate, capacity, prefill) of every table."""
    out = []
    for name, (sel, levels) in TRACES.items():
        for level, value in levels.items():
            s, rate = selection(sel, value)
            for cap_name, cap in CAPS.items():
                out.append((f"{name}, {level} (×{value}), KV {cap_name}, prefill on", s, rate, cap, True))
    for name, sel in PREFILL_OFF.items():
        s, rate = selection(sel, 3.0) if isinstance(sel, str) else (sel, 1.0)
        out.append((f"{name}, own rate, KV {CAPACITY // 1000}k, prefill off", s, rate, CAPACITY, False))
    return out


def fmt_row(p: str, r: dict, best: dict) -> str:
    cells = []
    for _, k, _, f in COLS:
        s = f.format(r[k])
        cells.append(f"**{s}**" if r[k] == best[k] else s)
    return f"| {p} | " + " | ".join(cells) + " |"


def losses_of(title: str, rows: dict) -> list[str]:
    """brp against the strongest other policy on every column, listed when it is behind by more than TIE."""
    out = []
    b = rows["brp"]
    for name, k, hi, f in COLS:
        others = {p: rows[p][k] for p in POLICIES[1:]}
        best_p = max(others, key=others.get) if hi else min(others, key=others.get)
        v = others[best_p]
        behind = (v > b[k] * (1 + TIE)) if hi else (v < b[k] * (1 - TIE))
        if behind:
            out.append(f"- {title}, {name}: brp {f.format(b[k])} vs {best_p} {f.format(v)}")
    return out


def key(s: dict, rate, cap, pre, p, g) -> tuple:
    return (s["trace"], s.get("train_split"), rate, cap, pre, p, g)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-j", "--processes", type=int, default=1)
    args = ap.parse_args()
    t0 = time.time()
    cs = cells()
    jobs = [(s, rate, cap, pre, p, 8) for _, s, rate, cap, pre in cs for p in POLICIES]
    unl = [(t, s, rate) for t, s, rate, cap, pre in cs if pre and cap == "unlimited"]
    ceil = {t: (s, rate, "unlimited", True, "jsq_tokens", 1) for t, s, rate in unl}  # one rank: the hit ceiling
    every = jobs + list(ceil.values())
    with Pool(args.processes) as pool:
        flat = pool.map(run, every, chunksize=1)
    res = {key(*j): r for j, r in zip(every, flat)}

    print("# Prefix matrix (simulator)\n")
    print(
        "Command: `DPBALANCE_TRACE_DIR=DIR python benchmarks/prefix_matrix.py -j 2 > docs/results/prefix_matrix.md`\n"
    )
    print(
        f"G = 8, B = 72, prefix cache on, step time linear_max (default prefill terms), whole traces. KV capacity per "
        f"rank: unlimited or {CAPACITY:,} tokens. Load levels: ×k is the arrival-rate scale of a Mooncake trace, or "
        "the qps of a synthetic session trace; *heavy* is the largest scale on the grid at which jsq_tokens's TTFT "
        "p50 (prefill on, unlimited cache) stays under 60 s, *light* half of it (see the module docstring). "
        "With prefill on, the rules of the cache-aware routers, gateways and engines send each request to a rank at "
        "once and the rank queues what it cannot run; dpbalance's rules (brp, br0, jsq_tokens, round_robin) hold it "
        "until a slot is free (`--front auto`). "
        "Steady: up to the last admission; run: the whole run. Best per column in bold; brp against the strongest "
        f"other policy per column below each table (level within {TIE:.1%} is not a loss).\n"
    )
    losses = []
    for title, s, rate, cap, pre in cs:
        rows = {p: res[key(s, rate, cap, pre, p, 8)] for p in POLICIES}
        print(f"## {title}\n")
        if pre and cap == "unlimited":
            one = res[key(s, rate, "unlimited", True, "jsq_tokens", 1)]
            share = rows["brp"]["hit"] / one["hit"] if one["hit"] else float("nan")
            print(
                f"One rank with an unlimited cache (`--workers 1`): hit rate {one['hit']:.3f}; brp's is {share:.0%} "
                f"of it. brp's whole-run max–min is {rows['brp']['mm'] / rows['jsq_tokens']['mm']:.2f}× jsq_tokens's.\n"
            )
        print("| policy | " + " | ".join(c[0] for c in COLS) + " |")
        print("|---" * (len(COLS) + 1) + "|")
        best = {k: (max if hi else min)(rows[p][k] for p in POLICIES) for _, k, hi, _ in COLS}
        for p in POLICIES:
            print(fmt_row(p, rows[p], best))
        print()
        lo = losses_of(title, rows)
        print("\n".join(lo) if lo else "brp is level with or ahead of every other policy on every column.")
        print()
        losses += lo
        sys.stdout.flush()
    print("## Every cell where brp is behind the strongest other policy\n")
    print("\n".join(losses) if losses else "none")
    print(f"\n(wall time {time.time() - t0:.0f} s with {args.processes} processes)")


if __name__ == "__main__":
    main()
