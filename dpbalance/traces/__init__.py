"""Trace loading: named real traces, files in known formats, synthetic workloads, the bundled sample."""

from .catalog import ENV_VAR, KNOWN, available_traces, default_trace_dirs, load_trace, resolve_trace
from .loaders import LOADERS, TraceError, parse_timestamp, prompt_key_of, sniff_format
from .synthetic import SyntheticConfig, generate, synthetic_from_spec

__all__ = [
    "ENV_VAR", "KNOWN", "LOADERS", "SyntheticConfig", "TraceError", "available_traces", "default_trace_dirs",
    "generate", "load_trace", "parse_timestamp", "prompt_key_of", "resolve_trace", "sniff_format",
    "synthetic_from_spec",
]
