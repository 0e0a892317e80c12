"""``dpbalance calibrate`` with prefill phases against the real vLLM ranks (opt-in: ``pytest -m vllm``): the
phases run, the ranks' own prefix-cache counters confirm the shared prefixes were served (vLLM CPU caches 128-token
blocks), and the step-time file carries prefill terms that ``simulate --prefill`` accepts."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from dpbalance.cli.main import app

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]


def test_calibrate_prefill_phases_on_real_ranks(external, tmp_path):
    out = tmp_path / "st.yaml"
    args = [
        "calibrate",
        "--worker-urls",
        ",".join(external.rank_urls),
        "--prompt-lens",
        "128",
        "--prompt-lens",
        "1024",
        "--concurrency",
        "1",
        "--concurrency",
        "8",
        "--prefill-lens",
        "512",
        "--prefill-lens",
        "2048",
        "--prefill-requests",
        "4",
        "--block-size",
        "128",
        "--time-budget",
        "150",
        "--out",
        str(out),
    ]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(out.read_text())
    pf = [o for o in doc["observations"] if "prefill" in o]
    assert len(pf) >= 4, doc["grid"]
    for o in pf:  # the ranks served exactly the shared prefix (whole 128-token blocks)
        assert o["prefill"]["cached_measured"] == o["prefill"]["cached_expected"], o
    params = doc["models"][doc["model"]]["params"]
    assert "prefill_tok" in params and "prefill_attn" in params
    sim = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            "sample",
            "--max-requests",
            "50",
            "-G",
            "2",
            "-B",
            "8",
            "--prefill",
            "--step-time",
            str(out),
        ],
    )
    assert sim.exit_code == 0, sim.output
