"""``trace list``, ``trace info`` and ``trace fetch``: what traces exist, where they come from, and getting them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ..traces import SOURCES, available_traces, load_trace, trace_directory
from ..traces.sources import PINNED
from .common import TraceDirOpt, console, fmt_number, out, user_errors

FETCH_HELP = (
    "Download public traces into the trace directory, verified and gzip-compressed.\n\n"
    "Each file is read from its publisher's URL (at a pinned commit for files kept in Git; see "
    "`dpbalance trace info NAME`) or from a mirror, checked against its known size and sha256, and written "
    "under the name the trace is looked up by (e.g. azure-code-2023.csv.gz). A file already present is kept "
    "unless --force.\n\n"
    "--all fetches every trace with a pinned, checksummed source; the large Azure 2024 traces and BurstGPT "
    "are fetched only when named."
)


NamesArg = Annotated[
    list[str] | None, typer.Argument(help="Trace names (see `dpbalance trace list`).", show_default=False)
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every trace with a pinned, checksummed source.")]
FetchDirOpt = Annotated[
    Path | None,
    typer.Option("--trace-dir", help="Write here (default: $DPBALANCE_TRACE_DIR, else the user data directory)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Download again even if the trace is already there.")]
MirrorOpt = Annotated[
    str | None,
    typer.Option(
        "--mirror",
        help="Base URL (http/https) or local folder holding the publishers' files under their own names; "
        "default $DPBALANCE_TRACE_MIRROR, else the publishers' URLs.",
    ),
]


def _source_table(name: str) -> Table:
    src = SOURCES[name]
    t = Table(title=f"{name}: source", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    rows = [
        ("publisher", src.publisher),
        ("origin", src.origin),
        ("url", src.url or "–"),
        ("licence", src.licence),
        ("citation", src.citation),
        ("rows", f"{src.rows:,}" if src.rows else "–"),
        ("sha256", f"{src.sha256} (uncompressed)" if src.sha256 else "not published"),
    ]
    if src.note:
        rows.append(("note", src.note))
    for k, v in rows:
        t.add_row(k, v)
    return t


def _download_bar() -> Progress:
    """Like the simulation progress bar, with byte counts and speed (on stderr)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def trace_info(
    name: Annotated[str, typer.Argument(help="Trace name, file path, or synthetic:... spec.")],
    trace_dir: TraceDirOpt = None,
) -> None:
    """Where a trace comes from (publisher, URL, licence, citation), then its rows, span and token statistics."""
    if name in SOURCES:
        out.print(_source_table(name))
    with user_errors():
        w = load_trace(name, trace_dir)
    st = w.stats()
    t = Table(title=f"{w.name}  ({w.meta.get('source', w.meta.get('format', ''))})")
    t.add_column("statistic")
    t.add_column("value", justify="right")
    for k, v in st.items():
        t.add_row(k, fmt_number(float(v)) if isinstance(v, float) else f"{v:,}")
    t.add_row("arrival times", "yes" if w.has_timestamps else "no (use --arrival saturated or poisson)")
    if w.meta.get("dropped"):
        t.add_row("left out", str(w.meta["dropped"]))
    out.print(t)


def trace_list(trace_dir: TraceDirOpt = None) -> None:
    """Known trace names, where each comes from, its licence, and whether its file is in the trace directory."""
    t = Table(title=f"traces (trace directory: {trace_directory(trace_dir)})")
    t.add_column("name", style="bold")
    t.add_column("description")
    t.add_column("source")
    t.add_column("licence")
    t.add_column("file")
    for name, desc, path in available_traces(trace_dir):
        src = SOURCES.get(name)
        missing = "[red]missing[/]" + (f": dpbalance trace fetch {name}" if src and src.kind != "bundled" else "")
        where = (src.repository or src.publisher) if src else "–"
        t.add_row(name, desc, where, src.licence.split(" (")[0] if src else "–", path or missing)
    out.print(t)


def trace_fetch(
    names: NamesArg = None,
    all_: AllOpt = False,
    trace_dir: FetchDirOpt = None,
    force: ForceOpt = False,
    mirror: MirrorOpt = None,
) -> None:
    from ..traces.fetch import FetchError, fetch_trace

    if all_ and names:
        raise typer.BadParameter("give trace names or --all, not both")
    todo = list(PINNED) if all_ else list(dict.fromkeys(names or []))
    if not todo:
        raise typer.BadParameter("name at least one trace (see `dpbalance trace list`), or use --all")
    fetchable = [n for n, s in SOURCES.items() if s.kind != "bundled"]
    bad = [n for n in todo if n not in fetchable]
    if bad:
        why = "is shipped inside the package" if bad == ["sample"] else "cannot be fetched"
        console.print(
            f"[bold red]error:[/] {', '.join(bad)} {why}. Traces that can be fetched: {', '.join(fetchable)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    tdir = trace_directory(trace_dir)
    failed = []
    with _download_bar() as bar:
        for name in todo:
            task = bar.add_task(name, total=SOURCES[name].size)
            try:
                res = fetch_trace(
                    name,
                    tdir,
                    force=force,
                    mirror=mirror,
                    progress=lambda done, total, task=task: bar.update(task, completed=done, total=total),
                )
            except FetchError as exc:
                bar.remove_task(task)
                console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
                failed.append(name)
                continue
            src = SOURCES[name]
            if res.status == "present":
                bar.remove_task(task)
                console.print(
                    f"{name}: already present as {res.path} (--force downloads it again)",
                    highlight=False,
                    soft_wrap=True,
                )
                continue
            check = (
                "size and sha256 verified"
                if res.verified
                else f"no published checksum; sha256 of the download {res.sha256}"
            )
            console.print(
                f"{name}: wrote {res.path} ({res.size:,} bytes from {res.url}; {check}). "
                f"Licence: {src.licence}; citation: `dpbalance trace info {name}`.",
                highlight=False,
                soft_wrap=True,
            )
    if failed:
        console.print(
            f"[bold red]{len(failed)} of {len(todo)} trace(s) not fetched:[/] {', '.join(failed)}", highlight=False
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    trace_app = typer.Typer(help="List, inspect and fetch traces.", no_args_is_help=True)
    app.add_typer(trace_app, name="trace")
    trace_app.command("info")(trace_info)
    trace_app.command("list")(trace_list)
    trace_app.command("fetch", help=FETCH_HELP)(trace_fetch)
