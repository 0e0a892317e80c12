"""Test setup shared by every test module.

If a folder ``shared/traces`` sits next to the repository (``../shared/traces`` from the repository root)
and ``$DPBALANCE_TRACE_DIR`` is not set, the tests read real traces from there. Without it the suite still
runs: tests that need a real trace skip (see ``need_trace``), everything else uses the bundled sample,
synthetic workloads or files the tests write.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
if SHARED_TRACES.is_dir():
    os.environ.setdefault("DPBALANCE_TRACE_DIR", str(SHARED_TRACES))


@pytest.fixture
def need_trace():
    """``need_trace(name)`` skips the calling test unless that real trace is in the trace directory."""
    from dpbalance.traces import TraceError, resolve_trace

    def need(name: str) -> None:
        try:
            resolve_trace(name)
        except TraceError:
            pytest.skip(f"real trace {name} not in the trace directory (get it with `dpbalance trace fetch {name}`)")

    return need
