"""Trace loading: named real traces, files in known formats, synthetic workloads, the bundled sample."""

from .catalog import ENV_VAR, KNOWN, available_traces, load_trace, resolve_trace, trace_directory, user_trace_dir
from .formats import LOADERS
from .loaders import TraceError, parse_timestamp, prompt_key_of, sniff_format
from .sources import SOURCES, Source
from .synthetic import SyntheticConfig, generate, synthetic_from_spec

__all__ = [
    "ENV_VAR",
    "KNOWN",
    "LOADERS",
    "SOURCES",
    "Source",
    "SyntheticConfig",
    "TraceError",
    "available_traces",
    "generate",
    "load_trace",
    "parse_timestamp",
    "prompt_key_of",
    "resolve_trace",
    "sniff_format",
    "synthetic_from_spec",
    "trace_directory",
    "user_trace_dir",
]
