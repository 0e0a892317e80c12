"""Named traces, where they are looked for, and ``load_trace``.

A trace is given by name, by file path, or as a synthetic spec (``synthetic:n=…``). Named traces live in
the trace directory: ``--trace-dir``, else ``$DPBALANCE_TRACE_DIR``, else the user's data directory
(``$XDG_DATA_HOME/dpbalance/traces``, by default ``~/.local/share/dpbalance/traces`` on Linux), which is
where ``dpbalance trace fetch`` puts them. ``sample`` is bundled inside the package, so the quick start
works with no trace directory at all. Where each trace comes from is in :mod:`.sources`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import platformdirs

from ..core.workload import Workload
from .formats import LOADERS
from .loaders import TraceError, sniff_format
from .sources import SOURCES
from .synthetic import synthetic_from_spec

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
ENV_VAR = "DPBALANCE_TRACE_DIR"


@dataclass(frozen=True)
class TraceSpec:
    name: str
    files: tuple[str, ...]  # candidate file names inside the trace directory, first match wins
    fmt: str
    description: str


KNOWN: dict[str, TraceSpec] = {
    t.name: t
    for t in (
        TraceSpec(
            "azure-code-2023",
            ("azure-code-2023.csv.gz", "AzureLLMInferenceTrace_code.csv"),
            "azure",
            "Azure LLM inference 2023, code (Splitwise)",
        ),
        TraceSpec(
            "azure-conv-2023",
            ("azure-conv-2023.csv.gz", "AzureLLMInferenceTrace_conv.csv"),
            "azure",
            "Azure LLM inference 2023, conversation (Splitwise)",
        ),
        TraceSpec(
            "mooncake-conversation",
            ("mooncake-conversation.jsonl.gz", "conversation_trace.jsonl"),
            "mooncake",
            "Mooncake FAST'25 conversation (Kimi), real arrivals",
        ),
        TraceSpec(
            "mooncake-synthetic",
            ("mooncake-synthetic.jsonl.gz", "synthetic_trace.jsonl"),
            "mooncake",
            "Mooncake FAST'25 synthetic (Poisson arrivals)",
        ),
        *(
            TraceSpec(name, (f"{name}.jsonl.gz", upstream), "bailian", f"Qwen-Bailian usage traces, {what}")
            for name, upstream, what in (
                ("qwen-bailian-a", "qwen_traceA_blksz_16.jsonl", "trace A: sessions, 16-token block hashes"),
                ("qwen-bailian-b", "qwen_traceB_blksz_16.jsonl", "trace B (business customers)"),
                ("qwen-bailian-coder", "qwen_coder_blksz_16.jsonl", "coder model"),
                ("qwen-bailian-thinking", "qwen_thinking_blksz_16.jsonl", "thinking model"),
            )
        ),
        TraceSpec(
            "bfio-arxiv",
            ("bfio-arxiv.json.gz", "arxiv_data_8000.json"),
            "bfio",
            "BF-IO paper workload: arXiv summarization lengths (no arrivals)",
        ),
        TraceSpec(
            "bfio-burst",
            ("bfio-burst.json.gz", "burst_data_8000.json"),
            "bfio",
            "BF-IO paper workload: BurstGPT lengths (no arrivals)",
        ),
        TraceSpec(
            "bfio-longbench",
            ("bfio-longbench.json.gz", "longbench_data_8000.json"),
            "bfio",
            "BF-IO paper workload: LongBench-v2 lengths (no arrivals)",
        ),
        TraceSpec(
            "vidur-arxiv",
            ("vidur-arxiv.csv.gz", "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"),
            "vidur",
            "Vidur arXiv-summarization lengths (no arrivals)",
        ),
        TraceSpec(
            "azure-code-2024",
            (
                "azure-code-2024.csv.gz",
                "AzureLLMInferenceTrace_code_1week.csv.gz",
                "AzureLLMInferenceTrace_code_1week.csv",
            ),
            "azure",
            "Azure LLM inference 2024 week-long, code (large; from Azure Blob Storage)",
        ),
        TraceSpec(
            "azure-conv-2024",
            (
                "azure-conv-2024.csv.gz",
                "AzureLLMInferenceTrace_conv_1week.csv.gz",
                "AzureLLMInferenceTrace_conv_1week.csv",
            ),
            "azure",
            "Azure LLM inference 2024 week-long, conversation (large; from Azure Blob Storage; "
            "the BalanceRoute paper's trace)",
        ),
        TraceSpec(
            "burstgpt",
            ("burstgpt.csv.gz", "burstgpt.csv", "BurstGPT_1.csv", "BurstGPT_without_fails_1.csv"),
            "burstgpt",
            "BurstGPT conversation and API logs (large; Git LFS)",
        ),
        TraceSpec("sample", ("sample.csv.gz",), "generic", "bundled: first 2,000 requests of mooncake-conversation"),
    )
}


def user_trace_dir() -> Path:
    """The per-user default trace directory (platform data directory + ``traces``)."""
    return platformdirs.user_data_path("dpbalance", appauthor=False) / "traces"


def trace_directory(trace_dir: str | Path | None = None) -> Path:
    """The trace directory: ``trace_dir``, else ``$DPBALANCE_TRACE_DIR``, else :func:`user_trace_dir`."""
    if trace_dir is not None:
        return Path(trace_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else user_trace_dir()


def missing_hint(name: str, trace_dir: Path) -> str:
    """How to get a named trace that is not in ``trace_dir``."""
    src = SOURCES.get(name)
    if src is None or src.kind == "bundled":
        return ""
    fetch = f"Run `dpbalance trace fetch {name}`"
    if src.kind == "pinned":
        return f"{fetch} to download it."
    return (
        f"{fetch} to download it from {src.url} ({src.note}), or download that file yourself and put it "
        f"into {trace_dir} as {src.upstream_file}."
    )


def resolve_trace(name_or_path: str, trace_dir: str | Path | None = None) -> tuple[Path, str, str]:
    """(file, format, name) for a trace name or path; a clear error says where it looked."""
    if name_or_path in KNOWN:
        spec = KNOWN[name_or_path]
        d = PACKAGE_DATA if spec.name == "sample" else trace_directory(trace_dir)
        for f in spec.files:
            p = d / f
            if p.is_file():
                return p, spec.fmt, spec.name
        raise TraceError(
            name_or_path,
            None,
            f"trace file not found; looked for {', '.join(spec.files)} in {d}. {missing_hint(spec.name, d)} "
            f"To use another folder, pass --trace-dir DIR or set {ENV_VAR}.",
        )
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p, sniff_format(p), p.name.split(".")[0]
    raise TraceError(
        name_or_path,
        None,
        f"not a known trace name or an existing file. Known traces: {', '.join(sorted(KNOWN))}; "
        "or 'synthetic:...' (see `dpbalance trace info --help`)",
    )


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime: float, fmt: str, name: str) -> Workload:
    w = LOADERS.entry(fmt).factory(Path(path), name=name)
    for arr in (w.arrival, w.prompt, w.output, w.key):
        arr.flags.writeable = False
    return w


def load_trace(name_or_path: str, trace_dir: str | Path | None = None) -> Workload:
    """Load a named trace, a trace file, or a synthetic workload spec (``synthetic:n=1000,...``)."""
    if name_or_path.startswith("synthetic"):
        return synthetic_from_spec(name_or_path, lambda name: load_trace(name, trace_dir))
    path, fmt, name = resolve_trace(name_or_path, trace_dir)
    return _load_cached(str(path.resolve()), path.stat().st_mtime, fmt, name)


def available_traces(trace_dir: str | Path | None = None) -> list[tuple[str, str, str | None]]:
    """(name, description, path or None) for every known trace."""
    out = []
    for name, spec in sorted(KNOWN.items()):
        try:
            p, _, _ = resolve_trace(name, trace_dir)
            out.append((name, spec.description, str(p)))
        except TraceError:
            out.append((name, spec.description, None))
    return out
