"""DP-endpoint mode, slot discovery, the serve command's options and config file, live predictors, engine-sim."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp
import pytest
from typer.testing import CliRunner

from dpbalance.cli.main import app
from dpbalance.cli.serve_cmds import expand_nargs
from dpbalance.emulator import start_group
from dpbalance.router import server as server_mod
from dpbalance.router.server import RouterConfig, StartupError, start_router
from dpbalance.traces import load_trace
from tests.router.stacks import free_port, post

pytestmark = pytest.mark.timeout(90)


def test_dp_endpoint_mode_pins_requests_with_the_rank_header_and_learns_size_and_slots():
    async def main():
        group, _urls, _ = await start_group(3, slots=5, time_scale=20.0, dp_port=0)
        router, url, runner = await start_router(
            RouterConfig(dp_endpoint=group.server.dp_url, policy="br0", health_interval_s=0.2)
        )
        try:
            assert (router.G, router.slots) == (3, 5)  # from the endpoint's /server_info
            seen = []
            orig = group.submit
            group.submit = lambda rk, req: (seen.append(rk.idx), orig(rk, req))[1]
            async with aiohttp.ClientSession() as s:
                res = await asyncio.gather(
                    *[
                        post(s, url + "/v1/completions", {"prompt": "a " * (1 + i % 7), "max_tokens": 8})
                        for i in range(30)
                    ]
                )
                assert all(c == 200 for c, _ in res)
                async with s.get(url + "/v1/models") as r:
                    assert (await r.json())["data"][0]["id"] == "dpbalance-sim"
                # the engine itself: a rank out of range is vLLM's 400, a non-integer header is ignored
                code, d = await post(
                    s, group.server.dp_url + "/v1/completions", {"prompt": "a"}, headers={"X-data-parallel-rank": "7"}
                )
                assert code == 400 and "out of range [0, 3)" in d["error"]["message"]
                code, _ = await post(
                    s, group.server.dp_url + "/v1/completions", {"prompt": "a"}, headers={"X-data-parallel-rank": "x"}
                )
                assert code == 200
            st = group.stats()
            # per-rank token accounting from the router equals what each DP rank generated for it
            engine = list(st["generation_tokens"])
            engine[seen[-1]] -= 16  # the direct request without a valid header (16 tokens by default)
            assert [int(x) for x in router.metrics.tokens] == engine
            assert len(set(seen[:30])) == 3 and router.outcomes["completed"] == 30
        finally:
            await runner.cleanup()
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def test_slots_are_discovered_or_a_clear_startup_error():
    async def main():
        group, urls, _ = await start_group(2, slots=6, time_scale=20.0)
        try:
            router, _url, runner = await start_router(RouterConfig(decode=tuple(urls)))
            assert router.slots == 6
            await runner.cleanup()
            with pytest.raises(StartupError, match="--slots"):
                await start_router(RouterConfig(decode=("http://127.0.0.1:9",)))
            with pytest.raises(StartupError, match="--train-trace"):
                await start_router(RouterConfig(decode=tuple(urls), policy="brh:predictor=survival"))
        finally:
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def test_learned_predictors_run_live_with_a_training_trace_and_prompt_keys():
    async def main():
        group, urls, _ = await start_group(2, slots=4, time_scale=20.0)
        router, url, runner = await start_router(
            RouterConfig(
                decode=tuple(urls), policy="brh:predictor=exact_match", train_trace="sample", tokenize="estimate"
            )
        )
        try:
            keys = []
            orig = router.dispatcher.submit
            router.dispatcher.submit = lambda t: (keys.append(t.key), orig(t))[1]
            async with aiohttp.ClientSession() as s:
                res = await asyncio.gather(
                    *[post(s, url + "/v1/completions", {"prompt": f"p {i % 3}", "max_tokens": 5}) for i in range(9)]
                )
            assert all(c == 200 for c, _ in res) and router.outcomes["completed"] == 9
            assert len(set(keys)) == 3 and all(k >= 0 for k in keys)  # equal prompts share a key
        finally:
            await runner.cleanup()
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def _captured(monkeypatch, args):
    """Run `serve ARGS` up to building the router; returns (exit code, output, config)."""
    seen = {}

    async def fake_create(cfg):
        seen["cfg"] = cfg
        raise StartupError("stop here")

    monkeypatch.setattr(server_mod.Router, "create", staticmethod(fake_create))
    r = CliRunner().invoke(app, ["serve", *expand_nargs(args)], env={"COLUMNS": "300"})
    return r.exit_code, r.output, seen.get("cfg")


def test_serve_options_config_file_and_worker_urls(tmp_path, monkeypatch):
    assert expand_nargs(["--worker-urls", "a", "b", "--port", "1", "--decode", "c"]) == [
        "--worker-urls",
        "a",
        "--worker-urls",
        "b",
        "--port",
        "1",
        "--decode",
        "c",
    ]
    code, out, cfg = _captured(monkeypatch, ["--worker-urls", "http://a:1", "http://b:2", "--slots", "4"])
    assert code == 2 and "stop here" in out and cfg.decode == ("http://a:1", "http://b:2") and cfg.slots == 4
    f = tmp_path / "r.yaml"
    f.write_text("decode: [http://x:1]\nslots: 9\npolicy: jsq_tokens\napi_key: k\n")
    code, out, cfg = _captured(monkeypatch, ["--config", str(f), "--slots", "3"])
    assert cfg.slots == 3 and cfg.policy == "jsq_tokens" and cfg.decode == ("http://x:1",) and cfg.api_key == "k"
    f.write_text("decode: [http://x:1]\napi_kye: k\n")  # a misspelt key is an error, not ignored
    code, out, cfg = _captured(monkeypatch, ["--config", str(f)])
    assert code == 2 and cfg is None and "api_kye" in " ".join(out.split())
    code, out, cfg = _captured(monkeypatch, ["--slots", "4"])
    assert code == 2 and cfg is None and "--decode" in " ".join(out.split())


def test_sigterm_stops_accepting_drains_and_exits(tmp_path):
    """The real command: `serve --worker-urls A B` in its own process, SIGTERM while a stream runs."""

    async def main():
        group, urls, _ = await start_group(2, slots=4, time_scale=0.5)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dpbalance",
                "serve",
                "--worker-urls",
                *urls,
                "--port",
                str(port),
                "--shutdown-grace-s",
                "1",
                "--tokenize",
                "estimate",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as s:
                for _ in range(100):
                    try:
                        async with s.get(url + "/health") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                r = await s.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 10_000, "stream": True})
                await r.content.readuntil(b"\n\n")
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                rest = await asyncio.wait_for(r.content.read(), 10)  # the stream is ended, not left hanging
                assert b"[DONE]" not in rest and b"shutting down" in rest
                while proc.poll() is None and time.monotonic() - t0 < 10:
                    await asyncio.sleep(0.1)
                assert proc.returncode is not None and time.monotonic() - t0 < 6
            for _ in range(40):
                if not group.running():
                    break
                await asyncio.sleep(0.05)
            assert group.running() == 0  # the aborted stream was dropped by the engine
        finally:
            if proc.poll() is None:
                proc.kill()
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def test_engine_sim_answers_like_vllm_and_never_leaks():
    async def main():
        group, urls, _ = await start_group(1, slots=2, time_scale=50.0)
        u = urls[0]
        try:
            async with aiohttp.ClientSession() as s:
                code, d = await post(s, u + "/v1/completions", {"prompt": "a", "model": "other"})
                assert code == 404 and d["error"]["type"] == "NotFoundError"
                for bad in (
                    {"prompt": "a", "max_tokens": "x"},
                    {"prompt": "a", "kv_transfer_params": 5},
                    {"prompt": "a", "stream_options": {"include_usage": True}},
                    {"prompt": "a", "temperature": "hot"},
                ):
                    code, d = await post(s, u + "/v1/completions", bad)
                    assert code == 400 and d["error"]["type"] == "BadRequestError" and d["error"]["code"] == 400
                code, d = await post(
                    s,
                    u + "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "a b"}], "max_completion_tokens": 3},
                )
                assert (
                    code == 200
                    and d["usage"]["completion_tokens"] == 3
                    and d["choices"][0]["finish_reason"] == "length"
                )
                async with s.get(u + "/server_info", params={"config_format": "json"}) as r:
                    assert (await r.json())["vllm_config"]["scheduler_config"]["max_num_seqs"] == 2
                # clients that vanish (stream and non-stream): the engine drops their requests
                r = await s.post(u + "/v1/completions", json={"prompt": "a", "max_tokens": 100_000, "stream": True})
                await r.content.readuntil(b"\n\n")
                r.close()
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(post(s, u + "/v1/completions", {"prompt": "a", "max_tokens": 100_000}), 0.3)
            for _ in range(60):
                if group.running() == 0:
                    break
                await asyncio.sleep(0.05)
            assert group.running() == 0
        finally:
            await group.server.close()
            await group.stop()

    asyncio.run(main())


def test_trace_sample_loads():  # the live predictor test relies on the bundled sample
    assert len(load_trace("sample")) > 100
