"""Real vLLM data-parallel ranks for the opt-in tests (marker ``vllm``), from the project's testbed.

Build it once with ``dpbalance testbed build`` (``make test-vllm`` does). The session fixture starts the ranks in the
mode a test asks for and always ends what it started: after the last test, after a failing test, on Ctrl-C (pytest
runs fixture teardown then too). A testbed that was already up in the wanted mode (``dpbalance testbed up``) is
reused and left running.
"""

from __future__ import annotations

import time

import pytest

from dpbalance.testbed import launcher
from dpbalance.testbed.build import is_built
from dpbalance.testbed.paths import Testbed


class TestbedRanks:
    """Brings the testbed's ranks up in one mode at a time."""

    __test__ = False

    def __init__(self, tb: Testbed):
        self.tb = tb
        self.owned = False  # True while servers this session started are up
        self.startup_s: dict[str, float] = {}

    def ensure(self, mode: str) -> launcher.State:
        cur = launcher.current(self.tb.state_path)
        if cur is not None and cur.mode == mode and all(launcher.http_ok(u + "/health") for u in cur.rank_urls):
            return cur
        if cur is not None:
            if not self.owned:
                pytest.fail(
                    f"a testbed started outside this test session is up in {cur.mode} mode; "
                    "end it with `dpbalance testbed down` (these tests need the default ports)"
                )
            launcher.down(self.tb, log=print)
            self.owned = False
        t0 = time.monotonic()
        st = launcher.up(self.tb, mode, log=lambda m: print("[testbed]", m))
        self.owned = True
        self.startup_s[mode] = time.monotonic() - t0
        print(f"[testbed] {mode} mode healthy after {self.startup_s[mode]:.1f} s")
        return st

    def close(self) -> None:
        if self.owned:
            launcher.down(self.tb, log=lambda m: print("[testbed]", m))
            self.owned = False


@pytest.fixture(scope="session")
def testbed_ranks():
    tb = Testbed.default()
    if not is_built(tb):
        pytest.skip(
            f"the real-vLLM testbed is not built in {tb.root}: run `make test-vllm` or `dpbalance testbed build`"
        )
    ranks = TestbedRanks(tb)
    try:
        yield ranks
    finally:
        ranks.close()


@pytest.fixture
def external(testbed_ranks) -> launcher.State:
    """The two ranks in external mode (one OpenAI server per rank)."""
    return testbed_ranks.ensure("external")


@pytest.fixture
def internal(testbed_ranks) -> launcher.State:
    """The two ranks behind one OpenAI server (internal mode)."""
    return testbed_ranks.ensure("internal")
