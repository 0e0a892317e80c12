"""benchmarks/bench_engine.py end to end on a small case: both of its figures (the step loop alone and the whole
``dpbalance simulate`` command) are measured and printed, and the command it times is one the CLI accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_engine import command

ROOT = Path(__file__).resolve().parents[2]


def test_bench_engine_prints_the_loop_and_the_whole_command_ratios(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_engine.py", "--n", "3000", "--workers", "4", "--policies", "br0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| `br0`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    loop_dec, loop_eng, loop_ratio, cmd_dec, cmd_eng, cmd_ratio, hit = cells[1:]
    for num, den, ratio in ((loop_eng, loop_dec, loop_ratio), (cmd_eng, cmd_dec, cmd_ratio)):
        n, d, r = float(num), float(den), float(ratio.rstrip("×"))  # each printed to 2 decimals
        assert (n - 0.005) / (d + 0.005) - 0.005 <= r <= (n + 0.005) / (d - 0.005) + 0.005, row
    # the whole command includes the interpreter, imports and trace generation: more CPU than the loop alone
    assert float(cmd_dec) > float(loop_dec) and float(cmd_eng) > float(loop_eng)
    assert 0 < float(hit) < 1  # the sessions share a system prompt: the engine's caches find it


def test_the_timed_command_is_the_cli_run_with_and_without_the_engine(tmp_path):
    from typer.testing import CliRunner

    from dpbalance.cli.main import app

    for engine in (False, True):
        path = tmp_path / f"{engine}.json"
        cmd = command("br0", 4, 500, engine, str(path))
        assert ("--prefill" in cmd) == engine and ("--prefix-cache" in cmd) == engine
        r = CliRunner().invoke(app, cmd)
        assert r.exit_code == 0, r.output
        res = json.loads(path.read_text())
        assert res["requests"] == res["completed"] == 500
        assert (res["prefix_hit_rate"] is not None) == engine, res["prefix_hit_rate"]
