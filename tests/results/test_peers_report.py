"""benchmarks/real_vllm_peers.py --report-only: the committed peers pages re-rendered from their peers.json are the
pages committed beside them (the report's code and the committed results agree), and a missing A/B is a clear
error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = sorted(p.parent for p in (ROOT / "docs/results/real_vllm").glob("peers*/peers.json"))


def _report_only(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "benchmarks/real_vllm_peers.py", "--report-only", "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ab", PEERS, ids=lambda p: p.name)
def test_report_only_rewrites_the_committed_page(ab, tmp_path):
    shutil.copy(ab / "peers.json", tmp_path / "peers.json")
    out = _report_only(tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "peers.md").read_text() == (ab / "peers.md").read_text()


def test_report_only_without_an_ab_is_a_clear_error(tmp_path):
    out = _report_only(tmp_path)
    assert out.returncode != 0 and "cannot read" in out.stderr and "peers.json" in out.stderr
