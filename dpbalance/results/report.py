"""Comparison reports: the terminal table, ratios against a baseline, and a Markdown report with plots."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from rich.table import Table
from tabulate import tabulate

from . import plots
from .schema import Result, Series, write_json

#: (header, field, format, lower is better) of the report.md table, in order
COLUMNS = (
    ("tok/s window", "throughput_tok_s", "{:,.0f}", False),
    ("tok/s whole run", "throughput_all_tok_s", "{:,.0f}", False),
    ("TTFT p99 s", "ttft_p99_s", "{:.3g}", True),
    ("max wait s", "wait_max_s", "{:.3g}", True),
    ("max–min", "avg_imbalance_maxmin", "{:,.0f}", True),
    ("gap G·M−ΣL", "avg_imbalance_gap", "{:,.0f}", True),
    ("idle", "idle_fraction", "{:.1%}", True),
    ("balance", "balance_ratio", "{:.3f}", False),
    ("J/tok", "energy_j_per_token", "{:.4f}", True),
    ("TTFT p50 s", "ttft_p50_s", "{:.3g}", True),
    ("TPOT p50 ms", "tpot_p50_ms", "{:.1f}", True),
    ("TPOT p95 ms", "tpot_p95_ms", "{:.1f}", True),
    ("TPOT p99 ms", "tpot_p99_ms", "{:.1f}", True),
    ("E2E p50 s", "e2e_p50_s", "{:.3g}", True),
    ("E2E p99 s", "e2e_p99_s", "{:.3g}", True),
    ("dispatch p50 µs", "dispatch_us_p50", "{:.1f}", True),
    ("dispatch p99 µs", "dispatch_us_p99", "{:.1f}", True),
)

#: the columns of the terminal table (header, field, format), after the policy name
TERMINAL = (
    ("tok/s window", "throughput_tok_s", "{:,.0f}"),
    ("tok/s whole", "throughput_all_tok_s", "{:,.0f}"),
    ("TTFT p99 s", "ttft_p99_s", "{:.3g}"),
    ("max wait s", "wait_max_s", "{:.3g}"),
    ("TPOT p95 ms", "tpot_p95_ms", "{:.1f}"),
    ("max–min", "avg_imbalance_maxmin", "{:,.0f}"),
    ("idle", "idle_fraction", "{:.1%}"),
    ("J/tok", "energy_j_per_token", "{:.4f}"),
)

#: the engine model's columns (prefill and prefix caches), in both tables when any run has them
ENGINE_COLUMNS = (
    ("prefix hit", "prefix_hit_rate", "{:.1%}", False),
    ("prefill tokens", "prefill_tokens", "{:,.0f}", True),
    ("prefill balance", "prefill_balance_ratio", "{:.3f}", False),
    ("prefill stall", "prefill_stall_share", "{:.1%}", True),
    ("preemptions", "preemptions", "{:,.0f}", True),
)


def _engine_runs(results: list[Result]) -> bool:
    return any(math.isfinite(r.prefix_hit_rate) for r in results)


def columns(results: list[Result]) -> tuple:
    """The report.md columns for these runs (the engine model's when any run used it)."""
    return COLUMNS + ENGINE_COLUMNS if _engine_runs(results) else COLUMNS


def terminal_columns(results: list[Result]) -> tuple:
    """The terminal table's columns for these runs."""
    extra = tuple(c[:3] for c in ENGINE_COLUMNS if c[1] != "prefill_tokens") if _engine_runs(results) else ()
    return TERMINAL + extra


RATIOS = (
    ("throughput (window) ×", "throughput_tok_s"),
    ("throughput (whole run) ×", "throughput_all_tok_s"),
    ("TTFT p99 ×", "ttft_p99_s"),
    ("max–min imbalance ×", "avg_imbalance_maxmin"),
    ("imbalance gap ×", "avg_imbalance_gap"),
    ("energy/token ×", "energy_j_per_token"),
    ("TPOT p95 ×", "tpot_p95_ms"),
)


def _fmt(fmt: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v)


def finished(r: Result) -> str:
    """``finished/requests``, plus what is left when not every request finished."""
    s = f"{r.completed}/{r.requests}"
    rest = [f"{n} {what}" for n, what in ((r.running, "running"), (r.never_admitted, "never admitted")) if n]
    return s + (f" ({', '.join(rest)})" if rest else "")


def pick_baseline(results: list[Result], baseline: str | None = None) -> str | None:
    names = [r.name for r in results]
    if baseline is not None:
        if baseline not in names:
            raise ValueError(f"baseline {baseline!r} is not among the runs: {', '.join(names)}")
        return baseline
    if "jsq_count" in names:
        return "jsq_count"
    return names[0] if names else None


def ratios(results: list[Result], baseline: str | None = None) -> dict[str, dict[str, float]]:
    """Each run's metric divided by the baseline's: {run name: {field: ratio}}."""
    base_name = pick_baseline(results, baseline)
    base = next(r for r in results if r.name == base_name)
    out: dict[str, dict[str, float]] = {}
    for r in results:
        row = {}
        for _, f in RATIOS:
            b, v = getattr(base, f), getattr(r, f)
            row[f] = v / b if (b and math.isfinite(b) and math.isfinite(v)) else math.nan
        out[r.name] = row
    return out


def window_note(results: list[Result]) -> str:
    windows = sorted({r.window for r in results})
    if windows == ["steady"]:
        return "window = steady: steps up to the last admission (the drain tail is excluded)"
    if windows == ["all"]:
        return "window = all: every step"
    return "windows differ between runs: " + ", ".join(f"{r.name} {r.window}" for r in results)


def format_table(results: list[Result], baseline: str | None = None) -> Table:
    """The comparison as a rich table (what `dpbalance compare` prints)."""
    base = pick_baseline(results, baseline)
    rat = ratios(results, base) if results else {}
    title = f"ratios against {base}; {window_note(results)}" if base else None
    t = Table(title=title)
    t.add_column("policy", style="bold", no_wrap=True)
    cols = terminal_columns(results)
    for head, _, _ in cols:
        t.add_column(head, justify="right")
    t.add_column("tok/s ×", justify="right")
    t.add_column("max–min ×", justify="right")
    t.add_column("finished", justify="right")
    for r in results:
        t.add_row(
            r.name,
            *[_fmt(fmt, getattr(r, f)) for _, f, fmt in cols],
            _fmt("{:.3f}", rat[r.name]["throughput_tok_s"]),
            _fmt("{:.3f}", rat[r.name]["avg_imbalance_maxmin"]),
            finished(r),
        )
    return t


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


#: a preformatted number: digits with separators, sign, decimal point, exponent, unit suffix (%, ×, s, ms)
_NUMBER = re.compile(r"^[+\-−]?[\d,]*\.?\d+(e[+\-]?\d+)?( ?(%|×|s|ms))?$|^[–—]?$")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table of preformatted cells: columns of numbers right-aligned, text left."""
    cols = list(zip(*rows)) if rows else [() for _ in header]
    align = ["right" if col and all(_NUMBER.match(str(c).strip("*`")) for c in col) else "left" for col in cols]
    return tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True, colalign=align)


def markdown_table(results: list[Result]) -> str:
    cols = columns(results)
    heads = ["policy"] + [h for h, _, _, _ in cols] + ["finished"]
    rows = [[f"`{r.name}`"] + [_fmt(fmt, getattr(r, f)) for _, f, fmt, _ in cols] + [finished(r)] for r in results]
    return md_table(heads, rows)


def markdown_ratios(results: list[Result], baseline: str) -> str:
    rat = ratios(results, baseline)
    heads = ["policy"] + [h for h, _ in RATIOS]
    return md_table(heads, [[f"`{r.name}`"] + [_fmt("{:.3f}", rat[r.name][f]) for _, f in RATIOS] for r in results])


def _params(d: dict) -> str:
    return ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}" for k, v in d.items())


def settings(res: Result) -> list[tuple[str, str]]:
    """The run settings as (setting, value) rows, from a result's config (identical for every compared run)."""
    cfg = res.config or {}
    sim, trace = cfg.get("sim", {}), cfg.get("trace", {})
    sel = cfg.get("trace_selection") or cfg.get("sweep", {}).get("cell", {})
    rows = []
    if trace:
        rows.append(("trace", f"`{trace.get('name')}`, {trace.get('requests'):,} requests replayed"))
    chosen = {
        k: sel[k]
        for k in ("min_output", "max_output", "start_s", "end_s", "max_requests", "resample")
        if sel.get(k) is not None
    }
    if sel.get("train_split"):
        chosen["train_split"] = sel["train_split"]
    if sel.get("repeat", 1) != 1:
        chosen["repeat"] = sel["repeat"]
    if chosen:
        rows.append(("selection", _params(chosen)))
    if sim:
        arrival = f"`{sim.get('arrival')}`"
        if sim.get("arrival") == "saturated":
            arrival += f", {sim.get('visible') or 4 * sim.get('workers', 0)} requests visible"
        if sim.get("rate_scale", 1) != 1:
            arrival += f", rate ×{sim.get('rate_scale'):g}"
        if sim.get("qps"):
            arrival += f", {sim.get('qps'):g} req/s"
        rows += [
            ("cluster", f"G = {sim.get('workers')} workers × B = {sim.get('slots')} slots"),
            ("arrivals", arrival),
            ("seed", str(sim.get("seed"))),
        ]
    rows.append(
        (
            "measurement window",
            f"`{res.window}` — "
            + (
                "steps up to the last admission; the drain tail is excluded (shaded on the time plots)"
                if res.window == "steady"
                else "every step"
            ),
        )
    )
    if cfg.get("step_time_model"):
        rows.append(("step-time model", _params(cfg["step_time_model"])))
    if cfg.get("energy_model"):
        rows.append(("energy model", _params(cfg["energy_model"]) + " (every energy figure uses these)"))
    return rows


HOW_TO_READ = """\
**How to read this.** Every decode step ends at a barrier, so a step lasts as long as the most loaded worker
needs (its load M = max_g L_g, in KV tokens). The *imbalance gap* G·M − Σ_g L_g is the barrier idle of a step in
token·worker units — what the BalanceRoute/BF-IO policies minimise; *max–min* is the spread between the most and
least loaded worker (the BalanceRoute paper's table metric); *idle fraction* = gap / (G·M) is the share of
worker-time spent waiting at the barrier; *balance ratio* = mean load / max load (TensorRT-LLM's metric). These
are averaged over the steps of the measurement window, and so is *tok/s window*; *tok/s whole run* divides every
output token by the time from the first arrival to the last finish. Energy covers the whole run, idle time
included. Latency percentiles cover every finished request; *max wait* is the longest any request waited for a
slot. Dispatch latency is the policy's own decision time per call that had requests to place."""

#: (heading, file, figure builder taking the runs and the baseline), in report order
FIGURES = (
    ("Throughput and energy", "throughput_energy.png", plots.throughput_energy_figure),
    ("Queueing: wait and TTFT tails", "queueing.png", lambda runs, base: plots.queueing_figure(runs)),
    ("Imbalance over time", "imbalance.png", lambda runs, base: plots.imbalance_figure(runs)),
    (
        "Throughput and slot occupancy over time",
        "throughput_occupancy.png",
        lambda runs, base: plots.throughput_occupancy_figure(runs),
    ),
    ("Idle fraction over time", "idle_fraction.png", lambda runs, base: plots.idle_figure(runs)),
    ("Per-worker loads", "worker_loads.png", lambda runs, base: plots.worker_loads_figure(runs)),
    ("TPOT distribution", "tpot_cdf.png", lambda runs, base: plots.tpot_figure(runs)),
)


def write_report(
    out_dir: Path | str,
    runs: list[tuple[Result, Series]],
    *,
    baseline: str | None = None,
    title: str = "dpbalance comparison",
    context: dict | None = None,
) -> Path:
    """Write results.json, series/*.npz, the PNG plots and report.md into ``out_dir``; return report.md.

    ``context`` adds rows to the settings table (keys that repeat a setting are an error)."""
    if not runs:
        raise ValueError("no runs to report")
    results = [r for r, _ in runs]
    base = pick_baseline(results, baseline)
    rows = settings(results[0])
    other = [r.name for r in results[1:] if settings(r) != rows]
    if other:
        rows.append(("note", "these runs have other settings (see results.json): " + ", ".join(other)))
    for k, v in (context or {}).items():
        if any(k == s for s, _ in rows):
            raise ValueError(f"context key {k!r} repeats a setting the report prints already")
        rows.append((k, str(v)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    for res, series in runs:
        series.save(out / "series" / f"{safe_name(res.name)}.npz")
    for _, name, build in FIGURES:
        plots.save(build(runs, base), out / name)
    md = [
        f"# {title}",
        "",
        "## Settings",
        "",
        md_table(["setting", "value"], [list(r) for r in rows]),
        "",
        "## Results",
        "",
        markdown_table(results),
        "",
        f"## Ratios against `{base}`",
        "",
        markdown_ratios(results, base),
        "",
        "Throughput × > 1 and TTFT/imbalance/energy/TPOT × < 1 are improvements.",
        "",
        HOW_TO_READ,
        "",
    ]
    for head, name, _ in FIGURES:
        md += [f"## {head}", "", f"![{head}]({name})", ""]
    md += ["Raw results: `results.json` (schema `" + results[0].schema_version + "`); time series: `series/*.npz`.", ""]
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(md))
    tmp.replace(path)
    return path
