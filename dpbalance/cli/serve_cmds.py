"""``serve``, ``engine-sim`` and ``loadgen``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..results.schema import TABLE_FIELDS, write_json
from .common import MaxReqOpt, RateScaleOpt, TraceDirOpt, TraceOpt, console, out, progress_bar, user_errors


def _loop_policy() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        pass


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        decode: Annotated[list[str], typer.Option("--decode", help="Decode rank base URL (repeat per DP rank), e.g. http://127.0.0.1:8001.")] = [],  # noqa: B006
        config: Annotated[Optional[Path], typer.Option("--config", help="JSON file with {decode: [...], slots, policy, ...} (flags override).")] = None,
        policy: Annotated[str, typer.Option("--policy", "-p", help="Policy spec (see `dpbalance policies`).")] = "br0",
        slots: Annotated[int, typer.Option("--slots", min=1, help="Max concurrent sequences per rank (the engine's max_num_seqs).")] = 72,
        host: Annotated[str, typer.Option("--host", help="Bind address (loopback unless you mean it).")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Listen port.")] = 8000,
        tick_ms: Annotated[float, typer.Option("--tick-ms", min=0.1, help="Dispatcher tick; it also runs on every arrival and finish.")] = 5.0,
        max_pending: Annotated[int, typer.Option("--max-pending", min=1, help="Pool size above which requests get 429.")] = 10000,
        max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1024, help="Larger bodies get 413.")] = 8 * 1024**2,
        api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="DPBALANCE_API_KEY", help="Require 'Authorization: Bearer KEY'.")] = None,
        tokenize: Annotated[str, typer.Option("--tokenize", help="Prompt length from a rank's /tokenize ('rank') or len/chars-per-token ('estimate').")] = "rank",
        model: Annotated[str, typer.Option("--model", help="Model name served at /v1/models and sent upstream when the client gives none.")] = "dpbalance",
        prefill: Annotated[list[str], typer.Option("--prefill", help="PD mode: prefill instance URL (repeat); requests get a max_tokens=1 prefill probe with kv_transfer_params first.")] = [],  # noqa: B006
    ) -> None:
        """Run the OpenAI-compatible router in front of data-parallel decode ranks."""
        from aiohttp import web

        from ..router.server import Router, RouterConfig

        opts = {}
        if config is not None:
            try:
                opts = json.loads(config.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise typer.BadParameter(f"--config {config}: {exc}") from None
        ranks = tuple(decode or opts.get("decode", ()))
        if not ranks:
            raise typer.BadParameter("give at least one --decode URL (or 'decode' in --config)")
        if tokenize not in ("rank", "estimate"):
            raise typer.BadParameter("--tokenize must be rank or estimate")
        with user_errors():
            router = Router(RouterConfig(decode=ranks, policy=policy if policy != "br0" else opts.get("policy", policy),
                                         slots=opts.get("slots", slots), tick_ms=tick_ms, max_pending=max_pending,
                                         max_body_bytes=max_body_bytes, api_key=api_key, tokenize=tokenize, model=model,
                                         prefill=tuple(prefill or opts.get("prefill", ()))))
        _loop_policy()
        console.print(f"dpbalance serve: policy {router.policy.spec} over {len(ranks)} ranks on http://{host}:{port}")
        web.run_app(router.app(), host=host, port=port, access_log=None, print=None)

    @app.command("engine-sim")
    def engine_sim(
        ranks: Annotated[int, typer.Option("--ranks", min=1, help="DP decode ranks to emulate.")] = 8,
        base_port: Annotated[int, typer.Option("--base-port", help="Rank r listens on base-port + r.")] = 8001,
        slots: Annotated[int, typer.Option("--slots", min=1, help="Running sequences per rank; more wait in its queue.")] = 72,
        time_scale: Annotated[float, typer.Option("--time-scale", min=1e-3, help="Run k× faster than the step-time model.")] = 1.0,
        step_time: Annotated[str, typer.Option("--step-time", help="Step-time model spec or a file from `dpbalance calibrate` (as in simulate).")] = "linear_max",
        fail_rank: Annotated[Optional[int], typer.Option("--fail-rank", help="Make this rank unhealthy after --fail-after seconds.")] = None,
        fail_after: Annotated[float, typer.Option("--fail-after", help="Seconds before --fail-rank fails.")] = 10.0,
        host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    ) -> None:
        """Emulate a DP decode group whose ranks share one step barrier (vLLM API subset on N ports)."""
        from ..router.engine_sim import start_group

        _loop_policy()

        async def main():
            group, urls, runners = await start_group(ranks, base_port, host, slots=slots, time_scale=time_scale,
                                                     step_time=step_time)
            console.print("engine-sim ranks: " + " ".join(urls))
            if fail_rank is not None:
                await asyncio.sleep(fail_after)
                group.ranks[fail_rank].healthy = False
                console.print(f"rank {fail_rank} failed ({group.break_streams(group.ranks[fail_rank])} streams cut)")
            await asyncio.Event().wait()

        with user_errors():
            try:
                asyncio.run(main())
            except KeyboardInterrupt:
                pass

    @app.command()
    def loadgen(
        target: Annotated[str, typer.Option("--target", help="Base URL of an OpenAI-compatible endpoint (router or engine).")],
        trace: TraceOpt = "sample",
        trace_dir: TraceDirOpt = None,
        qps: Annotated[Optional[float], typer.Option("--qps", min=1e-6, help="Poisson arrivals at this rate (else --replay).")] = None,
        replay: Annotated[bool, typer.Option("--replay", help="Use the trace's timestamps.")] = False,
        rate_scale: RateScaleOpt = 1.0,
        max_requests: MaxReqOpt = 1000,
        duration: Annotated[float, typer.Option("--duration", min=0.1, help="Stop sending after this many seconds.")] = 600.0,
        prompt_scale: Annotated[float, typer.Option("--prompt-scale", min=1e-6, help="Multiply prompt lengths (smaller bodies for quick runs).")] = 1.0,
        max_output: Annotated[Optional[int], typer.Option("--max-output", min=1, help="Cap output tokens per request.")] = None,
        engine_stats: Annotated[Optional[str], typer.Option("--engine-stats", help="engine-sim rank URL whose /admin/stats gives per-step imbalance.")] = None,
        policy_label: Annotated[str, typer.Option("--label", help="Policy name recorded in the result.")] = "live",
        api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="DPBALANCE_API_KEY")] = None,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result JSON here.")] = None,
    ) -> None:
        """Replay a trace as real streaming requests and measure TTFT/TPOT/E2E/throughput."""
        import aiohttp

        from ..router import loadgen as lg
        from ..traces import load_trace

        if (qps is None) == (not replay):
            raise typer.BadParameter("choose exactly one of --qps N or --replay")
        with user_errors():
            w = load_trace(trace, trace_dir)
        cfg = lg.LoadgenConfig(target=target.rstrip("/"), mode="qps" if qps else "replay", qps=qps,
                               rate_scale=rate_scale, max_requests=max_requests, duration_s=duration,
                               prompt_scale=prompt_scale, max_output=max_output, api_key=api_key)

        async def main():
            if engine_stats:
                async with aiohttp.ClientSession() as s:
                    await s.post(engine_stats.rstrip("/") + "/admin/reset_stats")
            with progress_bar() as bar:
                task = bar.add_task("loadgen", total=min(len(w), max_requests or len(w)))
                t0 = time.perf_counter()
                outs = await lg.run(w, cfg, lambda d, n: bar.update(task, completed=d))
                wall = time.perf_counter() - t0
            stats = None
            if engine_stats:
                async with aiohttp.ClientSession() as s:
                    async with s.get(engine_stats.rstrip("/") + "/admin/stats") as r:
                        stats = await r.json()
            return outs, wall, stats

        try:
            outs, wall, stats = asyncio.run(main())
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        res = lg.summarize(outs, policy=policy_label, workers=0, slots=0, engine_stats=stats, wall_s=wall,
                           config={"target": target, "trace": trace, "loadgen": cfg.__dict__})
        t = Table(title=f"loadgen → {target}")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for f in TABLE_FIELDS:
            v = getattr(res, f)
            t.add_row(f, f"{v:,.4g}" if isinstance(v, float) else str(v))
        out.print(t)
        if res.config["errors"]:
            console.print(f"errors: {res.config['errors']}")
        if json_out:
            write_json(json_out, res)
            console.print(f"wrote {json_out}")
