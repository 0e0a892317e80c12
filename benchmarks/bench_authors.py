"""The BF-IO authors' strategies next to dpbalance's br0 on the same cells (see authors_reference.py).

    python benchmarks/bench_authors.py --repo CHECKOUT [--set anchors|scale|longbench|all] [--out DIR]
                                       [--requests N] [--timeout S]

Sets (all saturated arrivals, steady window, visible pool 4·G):
- ``anchors``: mooncake-conversation, first 10,000 requests, G = 8, B = 72: their JSQ, FCFS, H0 and BF-IO H = 80.
- ``scale``: the same trace at G = 8, 16, 32, 64: their H0 against ``br0`` (r_max = 32, its default),
  ``br0:r_max=4G`` (the whole visible pool, as their H0 searches) and ``br0:r_max=4G,beta=43`` (also
  their overflow penalty: BETA = 43 in their H0 whatever G, where br0 uses β = G).
- ``longbench``: bfio-longbench (all 8,000 rows), G = 16, B = 64: the same.

Our side runs through ``dpbalance simulate ... --json`` (the command is in each row). Writes
``authors_vs_ours.json`` (every record) and ``authors_vs_ours.md`` (the table) to ``--out``.
Max–min is shown in both conventions: the authors' (what their code and the published anchors use) and
dpbalance's (loads at step start, window through the last admission), which is the like-for-like one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors_reference import run_reference  # noqa: E402

from dpbalance.cli.common import TraceSelection  # noqa: E402
from dpbalance.sim.config import SimConfig  # noqa: E402


def cells(which: str, n: int) -> list[tuple[str, int, int, int | None, list[str], list[str]]]:
    """(trace, G, B, max_requests, their strategies, our policies)."""
    out = []
    if which in ("anchors", "all"):
        out.append(
            ("mooncake-conversation", 8, 72, n, ["jsq", "fcfs", "h0", "bfio:H=80"], ["jsq_tokens", "fcfs", "br0"])
        )
    if which in ("scale", "all"):
        for G in (8, 16, 32, 64):
            out.append(("mooncake-conversation", G, 72, n, ["h0"], _br0_variants(G)))
    if which in ("longbench", "all"):
        out.append(("bfio-longbench", 16, 64, None, ["h0"], _br0_variants(16)))
    return out


def _br0_variants(G: int) -> list[str]:
    window = [f"br0:r_max={4 * G}"] if 4 * G != 32 else []  # 32 is br0's default r_max
    return ["br0", *window, f"br0:r_max={4 * G},beta=43"]


def ours(trace: str, G: int, B: int, n: int | None, policy: str, timeout: float | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = (
            [
                "dpbalance",
                "simulate",
                "--policy",
                policy,
                "--trace",
                trace,
                "--workers",
                str(G),
                "--slots",
                str(B),
                "--arrival",
                "saturated",
                "--visible",
                str(4 * G),
            ]
            + (["--max-requests", str(n)] if n else [])
            + ["--json", str(out)]
        )
        exe = [sys.executable, "-m", "dpbalance"] + cmd[1:]
        t0 = time.perf_counter()
        subprocess.run(exe, check=True, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        rec = json.loads(out.read_text())
    rec["run_wall_s"] = wall
    rec["command"] = shlex.join(cmd[:-2] + ["--json", "OUT.json"])
    return rec


def fnum(x, digits=0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True, help="checkout of https://github.com/Echoscd/Load-Balancing-Release")
    ap.add_argument("--set", default="all", choices=("anchors", "scale", "longbench", "all"))
    ap.add_argument("--requests", type=int, default=10_000, help="mooncake-conversation requests per run")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--out", type=Path, default=Path("authors-vs-ours"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows, recs, done = [], [], set()
    head = (
        "| trace | G | B | policy | max–min (authors' conv.) | max–min (dpbalance conv.) | tok/s | "
        "TTFT p99 s | longest wait s | dispatch p50/p99 µs | run s |"
    )
    print(head + "\n|" + "---|" * 11, flush=True)
    for trace, G, B, n, theirs, mine in cells(a.set, a.requests):
        for strat in theirs:
            if ("authors", trace, G, B, n, strat) in done:
                continue
            done.add(("authors", trace, G, B, n, strat))
            cfg = SimConfig(workers=G, slots=B, arrival="saturated", visible=4 * G)
            r = run_reference(a.repo, cfg, TraceSelection(trace, max_requests=n), strat, timeout_s=a.timeout)
            recs.append({"side": "authors", **r})
            row = (
                trace,
                G,
                B,
                r["policy"],
                fnum(r["avg_imbalance_maxmin"]),
                fnum(r["as_dpbalance"]["avg_imbalance_maxmin"]),
                fnum(r["throughput_tok_s"]),
                fnum(r["ttft_p99_s"], 2),
                fnum(r["max_wait_s"], 1),
                f"{fnum(r['dispatch_us_p50'])}/{fnum(r['dispatch_us_p99'])}",
                fnum(r["run_wall_s"], 1),
            )
            rows.append(row)
            print("| " + " | ".join(map(str, row)) + " |", flush=True)
        for pol in mine:
            if ("ours", trace, G, B, n, pol) in done:
                continue
            done.add(("ours", trace, G, B, n, pol))
            r = ours(trace, G, B, n, pol, a.timeout)
            recs.append({"side": "dpbalance", **r})
            row = (
                trace,
                G,
                B,
                pol,
                "",
                fnum(r["avg_imbalance_maxmin"]),
                fnum(r["throughput_tok_s"]),
                fnum(r["ttft_p99_s"], 2),
                "",
                f"{fnum(r['dispatch_us_p50'])}/{fnum(r['dispatch_us_p99'])}",
                fnum(r["run_wall_s"], 1),
            )
            rows.append(row)
            print("| " + " | ".join(map(str, row)) + " |", flush=True)
        (a.out / "authors_vs_ours.json").write_text(json.dumps(recs, indent=2) + "\n")
    table = [head, "|" + "---|" * 11] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    (a.out / "authors_vs_ours.md").write_text("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
