"""``serve``, ``engine-sim`` and ``loadgen``."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..results.schema import TABLE_FIELDS, write_json
from .common import TraceDirOpt, TraceOpt, console, out, progress_bar, user_errors


def _loop_policy() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        pass


#: options that take several values after one flag (vLLM-router / SGLang-router style)
NARGS_OPTIONS = ("--worker-urls",)


def expand_nargs(argv: list[str], options=NARGS_OPTIONS) -> list[str]:
    """``--worker-urls A B C`` → ``--worker-urls A --worker-urls B --worker-urls C`` (repeated flags still work)."""
    out: list[str] = []
    current = None
    for a in argv:
        if a in options:
            current = a
            out.append(a)
            continue
        if current is not None and out[-1] != current and not a.startswith("-"):
            out += [current, a]
            continue
        if a.startswith("-"):
            current = None
        out.append(a)
    return out


def register(app: typer.Typer) -> None:
    """The three commands (their configs are imported here: the emulator and load generator pull in aiohttp)."""
    _serve_command(app)
    _engine_sim_command(app)
    _loadgen_command(app)


def _serve_command(app: typer.Typer) -> None:
    from ..router.config import RouterConfig
    from .options import with_configs

    @app.command()
    @with_configs(config_file="--config", router=RouterConfig)
    def serve(*, router: RouterConfig) -> None:
        """Run the OpenAI-compatible router in front of data-parallel decode ranks."""
        import logging

        from aiohttp import web

        from ..router.app import build_apps
        from ..router.server import Router, StartupError

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        _loop_policy()
        cfg = router

        async def make_app():
            r = await Router.create(cfg)
            app, mapp = build_apps(r)
            if mapp is not None:
                mrunner = web.AppRunner(mapp, access_log=None)
                await mrunner.setup()
                await web.TCPSite(mrunner, cfg.prometheus_host, cfg.prometheus_port).start()

                async def stop_metrics(_):
                    await mrunner.cleanup()

                app.on_cleanup.append(stop_metrics)
            where = f"{r.G} ranks" + (f" behind {cfg.dp_endpoint}" if cfg.dp_endpoint else "")
            console.print(
                f"dpbalance serve: policy {r.policy_label} over {where} ({r.slots} slots each) "
                f"on http://{cfg.host}:{cfg.port}"
            )
            return app

        try:
            web.run_app(
                make_app(),
                host=cfg.host,
                port=cfg.port,
                access_log=None,
                print=None,
                handler_cancellation=True,
                shutdown_timeout=1.0,
                backlog=4096,
            )  # bursts of new connections are normal in front of a fleet
        except StartupError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


def _engine_sim_command(app: typer.Typer) -> None:
    from ..emulator import EngineSimConfig
    from .options import with_configs

    @app.command("engine-sim")
    @with_configs(config_file="--config", sim=EngineSimConfig)
    def engine_sim(*, sim: EngineSimConfig) -> None:
        """Emulate a DP decode group whose ranks share one step barrier (vLLM API subset on N ports)."""
        from ..emulator import start_group

        _loop_policy()

        async def main():
            group, urls, _runners = await start_group(
                sim.ranks,
                sim.base_port,
                sim.host,
                dp_port=sim.dp_port,
                slots=sim.slots,
                time_scale=sim.time_scale,
                step_time=sim.step_time,
                model=sim.model,
                engine=sim.engine,
            )
            console.print("engine-sim ranks: " + " ".join(urls))
            if group.server.dp_url:
                console.print(f"engine-sim DP endpoint: {group.server.dp_url}")
            if sim.fail_rank is not None:
                await asyncio.sleep(sim.fail_after)
                group.ranks[sim.fail_rank].healthy = False
                console.print(
                    f"rank {sim.fail_rank} failed ({group.break_streams(group.ranks[sim.fail_rank])} streams cut)"
                )
            await asyncio.Event().wait()

        with user_errors():
            try:
                asyncio.run(main())
            except KeyboardInterrupt:
                pass


def _loadgen_command(app: typer.Typer) -> None:
    from ..loadgen import LoadgenConfig
    from .options import with_configs

    @app.command()
    @with_configs(config_file="--config", cfg=LoadgenConfig)
    def loadgen(
        *,
        cfg: LoadgenConfig,
        trace: TraceOpt = "sample",
        trace_dir: TraceDirOpt = None,
        engine_stats: Annotated[
            str | None,
            typer.Option("--engine-stats", help="engine-sim rank URL whose /admin/stats gives per-step imbalance."),
        ] = None,
        policy_label: Annotated[str, typer.Option("--label", help="Policy name recorded in the result.")] = "live",
        json_out: Annotated[
            Path | None, typer.Option("--json", help="Write the result JSON (the simulator's schema) here.")
        ] = None,
    ) -> None:
        """Replay a trace as real streaming requests and measure TTFT/TPOT/E2E/throughput."""
        import aiohttp

        from .. import loadgen as lg
        from ..traces import load_trace

        if not cfg.target:
            raise typer.BadParameter("--target URL is required (the router's or an engine's base URL)")
        with user_errors():
            w = load_trace(trace, trace_dir)
        max_requests, target = cfg.max_requests, cfg.target

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
        res = lg.summarize(
            outs,
            policy=policy_label,
            workers=0,
            slots=0,
            engine_stats=stats,
            wall_s=wall,
            config={"target": target, "trace": trace, "loadgen": dataclasses.asdict(cfg)},
        )
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
