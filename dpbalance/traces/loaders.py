"""Trace file formats -> ``Workload``.

Every loader validates every row and raises ``TraceError`` naming the file, the line and what was
expected; no row is skipped silently. The only rows ever left out are BurstGPT's failed requests
(0 response tokens), which is that format's documented meaning, and they are counted in
``workload.meta["dropped"]``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ..core.workload import NO_KEY, Blocks, Workload

_MASK63 = (1 << 63) - 1


class TraceError(ValueError):
    """A trace file is missing, unreadable or has a malformed row."""

    def __init__(self, path: Path | str, line: int | None, problem: str):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


def _open_text(path: Path) -> io.TextIOBase:
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise TraceError(path, None, f"cannot open: {exc.strerror or exc}") from None


def _int_field(path: Path, line: int, name: str, raw: str, *, minimum: int) -> int:
    raw = (raw or "").strip()
    try:
        value = int(raw)
    except ValueError:
        try:
            f = float(raw)
        except ValueError:
            raise TraceError(path, line, f"column {name!r}: expected an integer token count, got {raw!r}") from None
        if not f.is_integer():
            raise TraceError(path, line, f"column {name!r}: expected an integer token count, got {raw!r}") from None
        value = int(f)
    if value < minimum:
        raise TraceError(path, line, f"column {name!r}: expected an integer >= {minimum}, got {value}")
    return value


def _float_field(path: Path, line: int, name: str, raw: str) -> float:
    try:
        value = float((raw or "").strip())
    except ValueError:
        raise TraceError(path, line, f"column {name!r}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise TraceError(path, line, f"column {name!r}: expected a finite number, got {raw!r}")
    return value


def parse_timestamp(raw: str) -> datetime:
    """Azure trace timestamps: ``2023-11-16 18:17:03.9799600`` (7 fractional digits, no zone) and
    ``2024-05-10 00:00:00.009930+00:00`` (6 digits + UTC offset). Returns a naive UTC datetime."""
    s = raw.strip()
    offset = timedelta(0)
    # a trailing +HH:MM / -HH:MM offset (after the time part)
    if len(s) > 19 and s[-6] in "+-" and s[-3] == ":":
        sign = 1 if s[-6] == "+" else -1
        offset = sign * timedelta(hours=int(s[-5:-3]), minutes=int(s[-2:]))
        s = s[:-6]
    elif s.endswith("Z"):
        s = s[:-1]
    if "." in s:
        head, frac = s.split(".", 1)
        if not frac.isdigit():
            raise ValueError(raw)
        s = f"{head}.{frac[:6].ljust(6, '0')}"
        fmt = "%Y-%m-%d %H:%M:%S.%f"
    else:
        fmt = "%Y-%m-%d %H:%M:%S"
    s = s.replace("T", " ")
    return datetime.strptime(s, fmt) - offset


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) with header validation; ``#`` lines are comments."""
    with _open_text(path) as fh:
        lines = (ln for ln in fh)
        header = None
        lineno = 0
        for raw in lines:
            lineno += 1
            if raw.strip() and not raw.lstrip().startswith("#"):
                header = next(csv.reader([raw]))
                break
        if header is None:
            raise TraceError(path, None, "empty file: expected a CSV header row")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceError(path, lineno, f"header lacks column(s) {', '.join(missing)}; found {', '.join(header)}")
        idx = {name: header.index(name) for name in header}
        for raw in lines:
            lineno += 1
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            cells = next(csv.reader([raw]))
            if len(cells) != len(header):
                raise TraceError(path, lineno, f"expected {len(header)} comma-separated fields, got {len(cells)}")
            yield lineno, {name: cells[i] for name, i in idx.items()}


def _finish(
    path: Path,
    name: str,
    arrival,
    prompt,
    output,
    key=None,
    *,
    has_ts: bool,
    fmt: str,
    blocks=None,
    session=None,
    **meta,
) -> Workload:
    if not len(prompt):
        raise TraceError(path, None, "no requests in file")
    return Workload.from_arrays(
        arrival,
        prompt,
        output,
        key,
        name=name,
        has_timestamps=has_ts,
        meta={"source": str(path), "format": fmt, **meta},
        blocks=blocks,
        session=session,
    )


def load_azure(path: Path, name: str = "azure") -> Workload:
    arrival, prompt, output = [], [], []
    t0 = None
    for line, row in _csv_rows(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
        try:
            ts = parse_timestamp(row["TIMESTAMP"])
        except ValueError:
            raise TraceError(
                path,
                line,
                f"column 'TIMESTAMP': expected 'YYYY-MM-DD HH:MM:SS.fffffff[+HH:MM]', got {row['TIMESTAMP']!r}",
            ) from None
        if t0 is None:
            t0 = ts
        arrival.append((ts - t0).total_seconds())
        prompt.append(_int_field(path, line, "ContextTokens", row["ContextTokens"], minimum=0))
        output.append(_int_field(path, line, "GeneratedTokens", row["GeneratedTokens"], minimum=1))
    return _finish(path, name, arrival, prompt, output, has_ts=True, fmt="azure")


def prompt_key_of(hash_ids) -> int:
    """A stable 63-bit identity for a prompt given as block hashes (same blocks -> same key)."""
    return hash(tuple(int(h) for h in hash_ids)) & _MASK63


#: tokens per block of the Mooncake traces' hash_ids (the FAST'25 release)
MOONCAKE_BLOCK = 512


def load_mooncake(path: Path, name: str = "mooncake") -> Workload:
    """Mooncake FAST'25 JSON lines: ``timestamp`` (ms), ``input_length``, ``output_length`` and ``hash_ids``, the
    chained hashes of the prompt's 512-token blocks (kept as the workload's block structure)."""
    arrival, prompt, output, key, hashes, lines = [], [], [], [], [], []
    for line, rec in _json_records(path, ("timestamp", "input_length", "output_length")):
        lines.append(line)
        arrival.append(_float_field(path, line, "timestamp", str(rec["timestamp"])) / 1000.0)
        prompt.append(_int_field(path, line, "input_length", str(rec["input_length"]), minimum=0))
        output.append(_int_field(path, line, "output_length", str(rec["output_length"]), minimum=1))
        hids = rec.get("hash_ids")
        if hids is None:
            key.append(NO_KEY)
            hashes.append(())
        else:
            key.append(prompt_key_of(_hash_list(path, line, hids)))
            hashes.append(hids)
    blocks = chained_blocks(path, hashes, MOONCAKE_BLOCK, lines)
    return _finish(path, name, arrival, prompt, output, key, has_ts=True, fmt="mooncake", blocks=blocks)


#: tokens per block of the Qwen-Bailian traces' hash_ids
BAILIAN_BLOCK = 16


def _json_records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSON-lines file whose objects must have ``required`` fields."""
    with _open_text(path) as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise TraceError(path, line, f"invalid JSON ({exc.msg}); expected one object per line") from None
            if not isinstance(rec, dict):
                raise TraceError(path, line, "expected a JSON object per line")
            for col in required:
                if col not in rec:
                    raise TraceError(path, line, f"missing field {col!r}")
            yield line, rec


def _hash_list(path: Path, line: int, hids) -> list[int]:
    if isinstance(hids, list) and all(isinstance(h, int) and not isinstance(h, bool) for h in hids):
        return hids
    raise TraceError(path, line, "field 'hash_ids': expected a list of integers")


def chained_blocks(path: Path, hashes: list, size: int, lines: list[int]) -> Blocks | None:
    """The requests' block hashes as ``Blocks`` (None when none has any), refused with the two lines that show it
    when they are not chained: prefix caching counts a block id as standing for its whole prefix."""
    if not any(hashes):
        return None
    blocks = Blocks.from_lists(hashes, size)
    bad = blocks.unchained()
    if bad is not None:
        a, b, h = bad
        raise TraceError(
            path,
            lines[b],
            f"block hash {h} comes after a different block here than at line {lines[a]} (or starts one prompt and "
            "not the other); block hashes must be chained, each standing for its whole prefix",
        )
    return blocks


def load_bailian(path: Path, name: str = "bailian") -> Workload:
    """Qwen-Bailian usage traces (Alibaba, JSON lines): ``timestamp`` (s), ``input_length``, ``output_length``,
    ``hash_ids`` (salted chained hashes of 16-token blocks), ``chat_id`` and ``parent_chat_id`` (-1 for a
    conversation's first request). A request's session is the first request of its conversation."""
    arrival, prompt, output, key, hashes, session, lines = [], [], [], [], [], [], []
    root: dict[int, int] = {}
    for line, rec in _json_records(path, ("timestamp", "input_length", "output_length", "chat_id")):
        lines.append(line)
        arrival.append(_float_field(path, line, "timestamp", str(rec["timestamp"])))
        prompt.append(_int_field(path, line, "input_length", str(rec["input_length"]), minimum=0))
        output.append(_int_field(path, line, "output_length", str(rec["output_length"]), minimum=1))
        chat = _int_field(path, line, "chat_id", str(rec["chat_id"]), minimum=-(2**62))
        parent = _int_field(path, line, "parent_chat_id", str(rec.get("parent_chat_id", -1)), minimum=-(2**62))
        root[chat] = root.get(parent, parent) if parent >= 0 else chat  # an unseen parent starts the session
        session.append(root[chat])
        hids = _hash_list(path, line, rec.get("hash_ids") or [])
        key.append(prompt_key_of(hids) if hids else NO_KEY)
        hashes.append(hids)
    blocks = chained_blocks(path, hashes, BAILIAN_BLOCK, lines)
    return _finish(path, name, arrival, prompt, output, key, has_ts=True, fmt="bailian", blocks=blocks, session=session)


def load_bfio(path: Path, name: str = "bfio") -> Workload:
    with _open_text(path) as fh:
        text = fh.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(path, exc.lineno, f"invalid JSON ({exc.msg})") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise TraceError(path, None, "expected a JSON object with a 'data' list of {input_length, output_length}")
    prompt, output = [], []
    for i, rec in enumerate(data):
        where = f"data[{i}]"
        if not isinstance(rec, dict) or "input_length" not in rec or "output_length" not in rec:
            raise TraceError(path, None, f"{where}: expected an object with input_length and output_length")
        try:
            prompt.append(_int_field(path, None, "input_length", str(rec["input_length"]), minimum=0))
            output.append(_int_field(path, None, "output_length", str(rec["output_length"]), minimum=1))
        except TraceError as exc:
            raise TraceError(path, None, f"{where}: {exc.problem}") from None
    meta = {k: v for k, v in doc.items() if k in ("dataset", "num_samples", "tokenizer")}
    return _finish(path, name, np.zeros(len(prompt)), prompt, output, has_ts=False, fmt="bfio", dataset=meta)


def load_vidur(path: Path, name: str = "vidur") -> Workload:
    prompt, output = [], []
    for line, row in _csv_rows(path, ("num_prefill_tokens", "num_decode_tokens")):
        prompt.append(_int_field(path, line, "num_prefill_tokens", row["num_prefill_tokens"], minimum=0))
        output.append(_int_field(path, line, "num_decode_tokens", row["num_decode_tokens"], minimum=1))
    return _finish(path, name, np.zeros(len(prompt)), prompt, output, has_ts=False, fmt="vidur")


def load_burstgpt(path: Path, name: str = "burstgpt") -> Workload:
    arrival, prompt, output = [], [], []
    failed = 0
    for line, row in _csv_rows(path, ("Timestamp", "Request tokens", "Response tokens")):
        ts = _float_field(path, line, "Timestamp", row["Timestamp"])
        p = _int_field(path, line, "Request tokens", row["Request tokens"], minimum=0)
        o = _int_field(path, line, "Response tokens", row["Response tokens"], minimum=0)
        if o == 0:  # BurstGPT logs failed requests with 0 response tokens; they never reach decode
            failed += 1
            continue
        arrival.append(ts)
        prompt.append(p)
        output.append(o)
    return _finish(
        path,
        name,
        arrival,
        prompt,
        output,
        has_ts=True,
        fmt="burstgpt",
        dropped={"failed_requests_zero_response_tokens": failed},
    )


def load_generic(path: Path, name: str = "generic") -> Workload:
    arrival, prompt, output, key = [], [], [], []
    has_ts = has_key = None
    for line, row in _csv_rows(path, ("prompt_tokens", "output_tokens")):
        if has_ts is None:
            has_ts, has_key = "arrival_s" in row, "prompt_key" in row
        if has_ts:
            arrival.append(_float_field(path, line, "arrival_s", row["arrival_s"]))
        prompt.append(_int_field(path, line, "prompt_tokens", row["prompt_tokens"], minimum=0))
        output.append(_int_field(path, line, "output_tokens", row["output_tokens"], minimum=1))
        if has_key:
            raw = row["prompt_key"].strip()
            key.append(_int_field(path, line, "prompt_key", raw, minimum=0) if raw else NO_KEY)
    n = len(prompt)
    return _finish(
        path,
        name,
        arrival if has_ts else np.zeros(n),
        prompt,
        output,
        key if has_key else None,
        has_ts=bool(has_ts),
        fmt="generic",
    )


def sniff_format(path: Path) -> str:
    """Guess a file's format from its name and first line."""
    low = path.name.lower()
    if "burstgpt" in low:
        return "burstgpt"
    with _open_text(path) as fh:
        first = ""
        for raw in fh:
            if raw.strip() and not raw.lstrip().startswith("#"):
                first = raw.strip()
                break
    if first.startswith("{"):
        if '"prompt_tokens"' in first and '"t"' in first:
            return "record"
        if '"chat_id"' in first and '"input_length"' in first:
            return "bailian"
        return "mooncake" if '"input_length"' in first and '"timestamp"' in first else "bfio"
    if "TIMESTAMP" in first:
        return "azure"
    if "num_prefill_tokens" in first:
        return "vidur"
    if "Request tokens" in first:
        return "burstgpt"
    if "prompt_tokens" in first:
        return "generic"
    raise TraceError(
        path,
        1,
        f"unknown trace format; header was {first[:80]!r}. Supported formats: azure, "
        "mooncake, bailian, bfio, vidur, burstgpt, generic (CSV with prompt_tokens, output_tokens), record "
        "(dpbalance serve --record)",
    )
