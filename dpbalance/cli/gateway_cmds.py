"""``epp``: the Endpoint Picker of the Kubernetes inference gateway (an Envoy ext_proc service)."""

from __future__ import annotations

import typer

from .common import console


def register(app: typer.Typer) -> None:
    from ..gateway.config import EppConfig
    from .options import with_configs

    @app.command()
    @with_configs(config_file="--config", epp=EppConfig)
    def epp(*, epp: EppConfig) -> None:
        """Run the gateway's Endpoint Picker: Envoy asks it where each request goes (same policies as serve)."""
        if epp.print_envoy_config:
            from ..gateway.envoy import bootstrap_yaml

            print(bootstrap_yaml(epp), end="")
            return
        import asyncio
        import logging

        from ..gateway.server import serve_forever
        from ..router.ranks import StartupError
        from .serve_cmds import _loop_policy

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        _loop_policy()
        try:
            asyncio.run(serve_forever(epp))
        except StartupError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            pass
