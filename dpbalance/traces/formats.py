"""Every trace file format, by name: the one list the catalog loads files with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..core.specs import Entry, Registry
from ..core.workload import Workload
from .loaders import load_azure, load_bailian, load_bfio, load_burstgpt, load_generic, load_mooncake, load_vidur
from .record import load_record

LoaderFn = Callable[[Path], Workload]

LOADERS: Registry[LoaderFn] = Registry(
    "trace format",
    entries=[
        Entry(
            "azure", load_azure, None, "Azure LLM inference traces 2023/2024: TIMESTAMP, ContextTokens, GeneratedTokens"
        ),
        Entry(
            "mooncake",
            load_mooncake,
            None,
            "Mooncake FAST'25 JSONL: timestamp (ms), input_length, output_length, hash_ids",
        ),
        Entry(
            "bailian",
            load_bailian,
            None,
            "Qwen-Bailian usage traces JSONL: timestamp (s), input_length, output_length, hash_ids (16-token "
            "blocks), chat_id, parent_chat_id",
        ),
        Entry(
            "bfio",
            load_bfio,
            None,
            "BF-IO simulator JSON: {data: [{input_length, output_length}, ...]} (no arrival times)",
        ),
        Entry(
            "vidur",
            load_vidur,
            None,
            "Vidur processed-trace CSV: num_prefill_tokens, num_decode_tokens (no arrival times)",
        ),
        Entry(
            "burstgpt",
            load_burstgpt,
            None,
            "BurstGPT CSV: Timestamp (s), Model, Request tokens, Response tokens, ... "
            "(failed rows counted and left out)",
        ),
        Entry(
            "generic",
            load_generic,
            None,
            "CSV with prompt_tokens, output_tokens and optional arrival_s, prompt_key ('#' lines are comments)",
        ),
        Entry(
            "record",
            load_record,
            None,
            "JSON lines written by dpbalance serve --record: t, prompt_tokens, output_tokens, prompt_hash, rank",
        ),
    ],
)
