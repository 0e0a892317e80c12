"""benchmarks/bench_prefix_dispatch.py end to end on a small case: a row per policy and G, with its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_prefix_dispatch_prints_a_row_per_policy_and_size():
    cmd = [sys.executable, "benchmarks/bench_prefix_dispatch.py", "--policies", "brp,llmd_prefix", "--workers", "2,3"]
    cmd += ["--slots", "4", "--batch", "8", "--finish", "2", "--calls", "30"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| `")]
    assert [(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in rows] == [
        ("`brp`", "2"),
        ("`llmd_prefix`", "2"),
        ("`brp`", "3"),
        ("`llmd_prefix`", "3"),
    ]
    for r in rows:
        p50, p99 = (float(c) for c in r.strip("|").split("|")[5:7])
        assert 0 < p50 <= p99
