"""The ``dpbalance`` command. Each command group lives in its own module exposing ``register(app)``."""

from __future__ import annotations

import sys

import typer

from . import (
    calibrate_cmds,
    experiment_cmds,
    gateway_cmds,
    predictor_cmds,
    serve_cmds,
    sim_cmds,
    sweep_cmds,
    testbed_cmds,
    trace_cmds,
)

app = typer.Typer(
    name="dpbalance",
    help="Balance load across barrier-synchronized data-parallel LLM decode workers: simulate, compare, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: command modules, registered in this order (the order of `dpbalance --help`)
COMMAND_MODULES = (
    sim_cmds,
    trace_cmds,
    predictor_cmds,
    sweep_cmds,
    experiment_cmds,
    serve_cmds,
    gateway_cmds,
    calibrate_cmds,
    testbed_cmds,
)

for _module in COMMAND_MODULES:
    _module.register(app)


def main() -> None:
    if sys.argv[1:2] in (["serve"], ["epp"]):
        from .serve_cmds import expand_nargs

        sys.argv[1:] = expand_nargs(sys.argv[1:])
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
