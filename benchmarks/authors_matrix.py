"""The BF-IO authors' H0 on the saturated cells of the regime matrix (the cross-section, seed 0), for
``dpbalance matrix --authors FILE``.

    python benchmarks/authors_matrix.py --repo ../Load-Balancing-Release --out authors_h0.json

Each cell is the same workload the matrix simulates (the same trace selection and seed), run with their code
(``authors_reference.run_reference``); the record carries the figures the matrix compares, measured the way
dpbalance measures them. Cells already in ``--out`` are kept (the file is rewritten after every cell).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.authors_reference import run_reference
from dpbalance.experiments import matrix as mx
from dpbalance.sim.config import SimConfig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="a checkout of https://github.com/Echoscd/Load-Balancing-Release")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--trace-dir", default=None)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell before it is given up")
    a = ap.parse_args(argv)
    src = mx.Sources(a.trace_dir)
    done = (
        {(r["trace"], r["workers"], r["slots"], r["seed"]): r for r in json.loads(a.out.read_text())}
        if a.out.is_file()
        else {}
    )
    for t in mx.TRACES:
        for G, B in sorted(mx.cross()):
            key = (t, G, B, 0)
            if key in done:
                continue
            c = mx.cell(src, t, G, B, "saturated", "h0", 0, None)
            cfg = SimConfig(**{**c.sim.__dict__, "window": "all"})
            t0 = time.perf_counter()
            try:
                rec = run_reference(a.repo, cfg, c.trace, "h0", timeout_s=a.timeout)
            except Exception as exc:  # noqa: BLE001 - a cell their code cannot run is reported and skipped
                print(f"{key}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
                continue
            al, st = rec["as_dpbalance_all"], rec["as_dpbalance_steady"]
            done[key] = {
                "trace": t,
                "workers": G,
                "slots": B,
                "seed": 0,
                "policy": "h0 (authors' code)",
                "throughput_all_tok_s": al["throughput_tok_s"],
                "maxmin_all": al["avg_imbalance_maxmin"],
                "throughput_tok_s": st["throughput_tok_s"],
                "avg_imbalance_maxmin": st["avg_imbalance_maxmin"],
                "tpot_p95_ms": rec["tpot_p95_ms"],
                "ttft_p99_s": rec["ttft_p99_s"],
                "wait_max_s": rec["max_wait_s"],
                "requests": rec["requests"],
                "cli": rec["cli"],
                "repo_commit": rec["repo_commit"],
            }
            a.out.write_text(json.dumps(list(done.values()), indent=1))
            print(f"{key}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
