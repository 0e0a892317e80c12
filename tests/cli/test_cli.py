"""The CLI end to end on the bundled sample trace (in-process via typer's runner, plus one real subprocess)."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dpbalance.cli.main import app
from dpbalance.results.schema import SCHEMA_VERSION, TABLE_FIELDS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_compare_on_sample_writes_report(tmp_path):
    out = tmp_path / "rep"
    r = run(
        "compare",
        "--policies",
        "jsq_count,jsq_tokens,round_robin",
        "--trace",
        "sample",
        "-n",
        "400",
        "--arrival",
        "saturated",
        "--workers",
        "4",
        "--slots",
        "16",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert [x["policy"] for x in results] == ["jsq_count", "jsq_tokens", "round_robin"]
    for x in results:
        assert set(TABLE_FIELDS) <= set(x)
        assert x["schema_version"] == SCHEMA_VERSION
        assert x["completed"] == x["requests"] == 400
        assert x["window"] == "steady"
        assert x["config"]["sim"]["workers"] == 4 and x["config"]["trace"]["name"] == "sample"
        assert x["config"]["energy_model"]["p_idle_w"] == 100.0
    md = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) >= 5
    for p in pngs:
        assert p in md
    assert "jsq_tokens" in r.output  # the table is printed


def test_simulate_json_and_replay(tmp_path):
    j = tmp_path / "r.json"
    r = run("simulate", "--policy", "vllm", "--trace", "sample", "-n", "300", "--rate-scale", "20", "--json", str(j))
    assert r.exit_code == 0, r.output
    d = json.loads(j.read_text())
    assert d["policy"] == "vllm" and d["completed"] == 300 and d["window"] == "all"
    assert d["config"]["sim"]["rate_scale"] == 20.0
    assert "throughput_tok_s" in r.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["simulate", "--policy", "nope"], "known policies:"),
        (["simulate", "--policy", "vllm:bogus=1"], "valid options: client_count, stats_interval"),
        (
            ["simulate", "--trace", "azure-code-2024", "--trace-dir", "/nonexistent"],
            "looked for azure-code-2024.csv.gz",
        ),
        (["simulate", "-p", "fcfs", "--trace", "synthetic:n=50", "--arrival", "replay"], "no arrival times"),
        (["simulate", "-p", "fcfs", "--arrival", "poisson"], "qps"),
        (["simulate", "--arrival", "sideways"], "'sideways' is not one of 'replay', 'poisson', 'saturated'"),
        (["simulate", "-p", "fcfs", "--min-output", "100000"], "no requests left"),
    ],
)
def test_user_errors_are_one_clear_line(args, needle):
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    text = " ".join(r.output.replace("│", " ").split())
    assert needle in text
    if r.output.startswith("error:"):
        assert r.output.count("\n") == 1  # one line, no traceback


def test_trace_info_and_list():
    r = run("trace", "info", "sample")
    assert r.exit_code == 0 and "2,000" in r.output
    r = run("trace", "list")
    assert r.exit_code == 0 and "mooncake-conversation" in r.output
    r = run("policies")
    assert r.exit_code == 0 and "sglang_total_tokens" in r.output


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "dpbalance", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("simulate", "compare", "trace"):
        assert cmd in out.stdout
