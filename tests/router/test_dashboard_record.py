"""The router's live view and its recording: /dashboard in a real headless Chromium against engine-sim under load
(opt-in marker ``browser``; skipped without Chromium), /dashboard/state, and ``--record`` replayed with --trace."""

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from dpbalance import loadgen
from dpbalance.emulator import start_group
from dpbalance.policies import DEFAULT_POLICY
from dpbalance.router.config import RouterConfig
from dpbalance.router.server import start_router
from dpbalance.traces import load_trace

pytestmark = pytest.mark.timeout(180)
DOCS = Path(__file__).parents[2] / "docs"


async def stack(tmp_path, **rcfg):
    group, urls, eruns = await start_group(4, slots=16, time_scale=4.0)
    router, rurl, rrun = await start_router(RouterConfig(decode=tuple(urls), slots=16, health_interval_s=0.2, **rcfg))

    async def close():
        await rrun.cleanup()
        for r in eruns:
            await r.cleanup()
        await group.stop()

    return router, rurl, close


def test_record_round_trips_through_trace(tmp_path):
    rec = tmp_path / "traffic.jsonl"

    async def main():
        router, rurl, close = await stack(tmp_path, record=rec)
        try:
            outs = await loadgen.run(
                load_trace("sample"),
                loadgen.LoadgenConfig(
                    target=rurl, mode="qps", qps=400, max_requests=120, prompt_scale=1 / 16, max_output=24
                ),
            )
            return outs
        finally:
            await close()

    outs = asyncio.run(main())
    assert all(o.status == "ok" for o in outs)
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert len(lines) == 120 and {r["outcome"] for r in lines} == {"completed"}
    assert {r["policy"] for r in lines} == {DEFAULT_POLICY} and all(0 <= r["rank"] < 4 for r in lines)
    w = load_trace(str(rec))
    sent = np.minimum(load_trace("sample").output[:120], 24)
    assert len(w) == 120 and sorted(w.output.tolist()) == sorted(sent.tolist())  # tokens each request got
    assert w.has_timestamps and w.arrival[-1] > 0
    # each prompt's block hashes as the engine cuts it (16-token blocks of the rank's token ids), never the text
    assert all(r["block_size"] == 16 and len(r["blocks"]) == r["prompt_tokens"] // 16 for r in lines)
    assert w.blocks is not None and w.blocks.size == 16
    # where each request's wait went: sent to its rank after arriving, its first token after that
    assert all(0 <= r["sent_s"] <= r["ttft_s"] for r in lines)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browser(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={os.environ.get('TMPDIR', '/tmp')}/dpb-chromium",
            "--window-size=1400,1000",
            "--virtual-time-budget=4000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_dashboard_state_under_load(tmp_path):
    async def main():
        router, rurl, close = await stack(tmp_path)
        try:
            task = asyncio.create_task(
                loadgen.run(
                    load_trace("sample"),
                    loadgen.LoadgenConfig(
                        target=rurl, mode="qps", qps=200, max_requests=300, prompt_scale=1 / 16, max_output=48
                    ),
                )
            )
            await asyncio.sleep(2.5)
            async with aiohttp.ClientSession() as s:
                async with s.get(rurl + "/dashboard") as r:
                    assert r.status == 200 and "text/html" in r.headers["Content-Type"]
                    assert "dashboard/state" in await r.text()
                async with s.get(rurl + "/dashboard/state") as r:
                    st = await r.json()
            await task
            return st
        finally:
            await close()

    st = asyncio.run(main())
    assert st["ranks"] == 4 and len(st["now"]["loads"]) == 4 and st["now"]["policy"] == DEFAULT_POLICY
    assert len(st["series"]["t"]) >= 2 and st["series"]["tokens"][-1] > 0 and st["now"]["outcomes"]["completed"] > 0


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="needs Chromium (Debian: apt install chromium)")
def test_dashboard_in_headless_chromium(tmp_path):
    """The page renders the router's figures in a real browser; the screenshot goes to docs/ (committed)."""
    shot = tmp_path / "dashboard.png"

    async def main():
        router, rurl, close = await stack(tmp_path)
        try:
            task = asyncio.create_task(
                loadgen.run(
                    load_trace("sample"),
                    loadgen.LoadgenConfig(
                        target=rurl, mode="qps", qps=40, max_requests=2000, prompt_scale=1 / 4, max_output=200
                    ),
                )
            )
            await asyncio.sleep(12)  # some history for the time plots
            loop = asyncio.get_running_loop()
            dom = await loop.run_in_executor(None, _browser, rurl + "/dashboard", "--dump-dom")
            await loop.run_in_executor(None, _browser, rurl + "/dashboard", f"--screenshot={shot}")
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return dom
        finally:
            await close()

    dom = asyncio.run(main())
    assert dom.returncode == 0, dom.stderr[-500:]
    html = dom.stdout
    import re

    assert len(re.findall(r'<div class="bar (?:out)?"><div class="name">rank \d', html)) == 4  # drawn by the script
    assert "policy br0" in html
    assert not re.search(r'id="sub"><span class="err">', html) and "<td>completed</td>" in html
    assert shot.is_file() and shot.stat().st_size > 20_000
    shutil.copy(shot, DOCS / "dashboard.png")
