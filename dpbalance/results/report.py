"""Comparison reports: the terminal table, ratios against a baseline, and a Markdown report with plots."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from rich.table import Table

from . import plots
from .schema import Result, Series, write_json

#: (header, field, format, lower is better)
COLUMNS = (
    ("tok/s", "throughput_tok_s", "{:,.0f}", False),
    ("max–min", "avg_imbalance_maxmin", "{:,.0f}", True),
    ("gap G·M−ΣL", "avg_imbalance_gap", "{:,.0f}", True),
    ("idle", "idle_fraction", "{:.1%}", True),
    ("balance", "balance_ratio", "{:.3f}", False),
    ("J/tok", "energy_j_per_token", "{:.4f}", True),
    ("TTFT p50 s", "ttft_p50_s", "{:.3f}", True),
    ("TTFT p99 s", "ttft_p99_s", "{:.3f}", True),
    ("TPOT p50 ms", "tpot_p50_ms", "{:.1f}", True),
    ("TPOT p95 ms", "tpot_p95_ms", "{:.1f}", True),
    ("TPOT p99 ms", "tpot_p99_ms", "{:.1f}", True),
    ("E2E p50 s", "e2e_p50_s", "{:.2f}", True),
    ("E2E p99 s", "e2e_p99_s", "{:.2f}", True),
    ("dispatch p50 µs", "dispatch_us_p50", "{:.1f}", True),
    ("dispatch p99 µs", "dispatch_us_p99", "{:.1f}", True),
)

RATIOS = (
    ("throughput ×", "throughput_tok_s"),
    ("max–min imbalance ×", "avg_imbalance_maxmin"),
    ("imbalance gap ×", "avg_imbalance_gap"),
    ("energy/token ×", "energy_j_per_token"),
    ("TPOT p95 ×", "tpot_p95_ms"),
)


def _fmt(fmt: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v)


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


def format_table(results: list[Result], baseline: str | None = None) -> Table:
    """The comparison as a rich table (what `dpbalance compare` prints)."""
    base = pick_baseline(results, baseline)
    rat = ratios(results, base) if results else {}
    t = Table(title=f"ratios against {base}" if base else None)
    t.add_column("policy", style="bold", no_wrap=True)
    for head, _, _, _ in COLUMNS[:6]:
        t.add_column(head, justify="right")
    t.add_column("TPOT p95 ms", justify="right")
    t.add_column("tok/s ×", justify="right")
    t.add_column("max–min ×", justify="right")
    t.add_column("done", justify="right")
    for r in results:
        cells = [_fmt(fmt, getattr(r, f)) for _, f, fmt, _ in COLUMNS[:6]]
        t.add_row(
            r.name, *cells, _fmt("{:.1f}", r.tpot_p95_ms),
            _fmt("{:.3f}", rat[r.name]["throughput_tok_s"]), _fmt("{:.3f}", rat[r.name]["avg_imbalance_maxmin"]),
            f"{r.completed}/{r.requests}",
        )
    return t


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def markdown_table(results: list[Result]) -> str:
    heads = ["policy"] + [h for h, _, _, _ in COLUMNS] + ["completed"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" + "---:|" * (len(heads) - 1)]
    for r in results:
        cells = [f"`{r.name}`"] + [_fmt(fmt, getattr(r, f)) for _, f, fmt, _ in COLUMNS] + [f"{r.completed}/{r.requests}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_ratios(results: list[Result], baseline: str) -> str:
    rat = ratios(results, baseline)
    heads = ["policy"] + [h for h, _ in RATIOS]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" + "---:|" * len(RATIOS)]
    for r in results:
        lines.append("| " + " | ".join([f"`{r.name}`"] + [_fmt("{:.3f}", rat[r.name][f]) for _, f in RATIOS]) + " |")
    return "\n".join(lines)


def _model_lines(res: Result) -> list[str]:
    cfg = res.config or {}
    st, en = cfg.get("step_time_model", {}), cfg.get("energy_model", {})
    sim = cfg.get("sim", {})
    trace = cfg.get("trace", {})
    lines = []
    if trace:
        filt = trace.get("filters")
        lines.append(f"- **trace**: `{trace.get('name')}` ({trace.get('requests')} requests replayed"
                     + (f"; filters {filt}" if filt else "") + ")")
    if sim:
        lines.append(f"- **cluster**: G = {sim.get('workers')} workers × B = {sim.get('slots')} slots; arrival "
                     f"`{sim.get('arrival')}`" + (f", visible {sim.get('visible') or 4 * sim.get('workers', 0)}"
                                                 if sim.get("arrival") == "saturated" else "")
                     + (f", rate ×{sim.get('rate_scale')}" if sim.get("rate_scale", 1) != 1 else "")
                     + (f", qps {sim.get('qps')}" if sim.get("qps") else "") + f"; seed {sim.get('seed')}")
    lines.append(f"- **measurement window**: `{res.window}`"
                 + (" (steps up to the last admission; the drain tail is excluded)" if res.window == "steady" else " (every step)"))
    if st:
        lines.append("- **step-time model**: " + ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}"
                                                          for k, v in st.items()))
    if en:
        lines.append("- **energy model** (every energy figure uses these constants): "
                     + ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}" for k, v in en.items()))
    return lines


HOW_TO_READ = """\
**How to read this.** Every decode step ends at a barrier, so a step lasts as long as the most loaded worker
needs (its load M = max_g L_g, in KV tokens). The *imbalance gap* G·M − Σ_g L_g is the barrier idle of a step in
token·worker units — what the BalanceRoute/BF-IO policies minimise; *max–min* is the spread between the most and
least loaded worker (the BalanceRoute paper's table metric); *idle fraction* = gap / (G·M) is the share of
worker-time spent waiting at the barrier; *balance ratio* = mean load / max load (TensorRT-LLM's metric). All are
averaged over the steps of the measurement window. Throughput is output tokens decoded in the window divided by
its duration; latency percentiles cover every completed request; dispatch latency is the policy's own decision
time per call that had requests to place."""


def write_report(
    out_dir: Path | str,
    runs: list[tuple[Result, Series]],
    *,
    baseline: str | None = None,
    title: str = "dpbalance comparison",
    context: dict | None = None,
) -> Path:
    """Write results.json, series/*.npz, the PNG plots and report.md into ``out_dir``; return report.md."""
    if not runs:
        raise ValueError("no runs to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = [r for r, _ in runs]
    base = pick_baseline(results, baseline)
    write_json(out / "results.json", results)
    for res, series in runs:
        series.save(out / "series" / f"{safe_name(res.name)}.npz")
    figs = [
        ("Imbalance over time", plots.imbalance_over_time(runs, out / "imbalance.png")),
        ("Per-worker loads", plots.worker_loads(runs, out / "worker_loads.png")),
        ("Idle fraction", plots.idle_over_time(runs, out / "idle_fraction.png")),
        ("Latency CDFs", plots.latency_cdfs(runs, out / "latency_cdf.png")),
        ("Throughput and energy", plots.throughput_energy_bars(runs, base, out / "throughput_energy.png")),
    ]
    md = [f"# {title}", ""]
    md += _model_lines(results[0])
    for k, v in (context or {}).items():
        md.append(f"- **{k}**: {v}")
    md += ["", "## Results", "", markdown_table(results), "",
           f"## Ratios against `{base}`", "", markdown_ratios(results, base), "",
           "Throughput × > 1 and imbalance/energy/TPOT × < 1 are improvements.", "", HOW_TO_READ, ""]
    for head, name in figs:
        md += [f"## {head}", "", f"![{head}]({name})", ""]
    md += ["Raw results: `results.json` (schema `" + results[0].schema_version + "`); time series: `series/*.npz`.", ""]
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(md))
    tmp.replace(path)
    return path
