"""The ``dpbalance`` command. Each command group lives in its own module exposing ``register(app)``."""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="dpbalance",
    help="Balance load across barrier-synchronized data-parallel LLM decode workers: simulate, compare, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: command modules, registered in this order; a module that is absent is skipped
COMMAND_MODULES = (
    "dpbalance.cli.sim_cmds",
    "dpbalance.cli.predictor_cmds",
    "dpbalance.cli.sweep_cmds",
    "dpbalance.cli.serve_cmds",
)

for _mod in COMMAND_MODULES:
    try:
        module = importlib.import_module(_mod)
    except ModuleNotFoundError as exc:
        if exc.name != _mod:
            raise
        continue
    module.register(app)


def main() -> None:
    if "serve" in sys.argv[1:2]:
        from .serve_cmds import expand_nargs

        sys.argv[1:] = expand_nargs(sys.argv[1:])
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    main()
