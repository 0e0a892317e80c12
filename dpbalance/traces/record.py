"""Recorded traffic: the JSON-lines trace that ``dpbalance serve --record FILE`` writes and ``--trace FILE`` reads.

One request per line, written when the request ends::

    {"v": 1, "t": 1764068301.123, "prompt_tokens": 812, "output_tokens": 240, "prompt_hash": "9f2c…",
     "rank": 3, "policy": "br0", "outcome": "completed", "block_size": 16, "blocks": [4711, 90210, …]}

- ``t``: arrival time at the router, Unix seconds (the loader replays times relative to the first request);
- ``prompt_tokens`` / ``output_tokens``: tokens of the prompt and tokens actually generated;
- ``prompt_hash``: a hash of the prompt (never its text) — equal prompts get equal hashes, which is what the
  ``exact_match`` predictor needs; ``rank``: the decode rank that served it (absent if none did);
- ``policy``: the policy label in force; ``outcome``: completed, or failed / rejected with a reason;
- ``blocks`` (when the router knows the prompt's tokens): the chained hashes of the prompt's full
  ``block_size``-token blocks as the engine cuts them (``dpbalance.engine.hashing``), never the tokens; a
  replay with ``--prefix-cache`` finds the prefixes the live ranks could share;
- ``sent_s`` (when it reached a rank): seconds from arrival until the router sent it to the rank that served it
  (its wait in the router's pool, and any earlier attempt); ``ttft_s`` (when a token came back): seconds from
  arrival to its first token. Together they say where a request's wait was spent; replays ignore them.

Only requests that generated at least one token replay (the others never reached decode); the loader counts the
rest. Each line is written whole with one write and flushed, so a router that is killed leaves at most a
partial last line, which the loader skips with a warning. Files rotate at a size limit: ``FILE`` is the newest,
``FILE.1`` the one before, and so on.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..core.workload import NO_KEY, Workload
from .loaders import TraceError, _open_text, chained_blocks

FORMAT_VERSION = 1


def prompt_hash(prompt) -> str:
    """A stable hash of a prompt (text, token ids or chat messages); the text itself is never stored."""
    blob = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


class RecordWriter:
    """Appends one JSON line per finished request; rotates at ``max_bytes`` keeping ``keep`` old files."""

    def __init__(self, path: str | Path, *, max_bytes: int = 256 * 1024**2, keep: int = 5):
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.keep = int(keep)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab", buffering=0)
        self.written = 0

    def write(
        self,
        *,
        t: float,
        prompt_tokens: int,
        output_tokens: int,
        prompt_hash: str,
        rank: int | None,
        policy: str,
        outcome: str,
        blocks: list[int] | None = None,
        block_size: int = 16,
        sent_s: float | None = None,
        ttft_s: float | None = None,
    ) -> None:
        rec = {
            "v": FORMAT_VERSION,
            "t": round(float(t), 6),
            "prompt_tokens": int(prompt_tokens),
            "output_tokens": int(output_tokens),
            "prompt_hash": prompt_hash,
            "policy": policy,
            "outcome": outcome,
        }
        if rank is not None:
            rec["rank"] = int(rank)
        if sent_s is not None:
            rec["sent_s"] = round(float(sent_s), 4)
        if ttft_s is not None:
            rec["ttft_s"] = round(float(ttft_s), 4)
        if blocks is not None:
            rec["block_size"] = int(block_size)
            rec["blocks"] = [int(h) for h in blocks]
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        if self.max_bytes and self._fh.tell() + len(line) > self.max_bytes and self._fh.tell() > 0:
            self._rotate()
        self._fh.write(line)  # unbuffered: one write per line reaches the file at once
        self.written += 1

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "ab", buffering=0)

    def close(self) -> None:
        self._fh.close()


def load_record(path: Path, name: str = "record") -> Workload:
    """A recording as a workload: requests that generated tokens, arrival times from the first one."""
    arrival, prompt, output, key, hashes, kept = [], [], [], [], [], []
    sizes: set[int] = set()
    skipped = 0
    with _open_text(path) as fh:
        lines = fh.readlines()
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            if lineno == len(lines) and not raw.endswith("\n"):
                warnings.warn(
                    f"{path}:{lineno}: the last line is incomplete (the writer was stopped mid-line); it is skipped",
                    stacklevel=2,
                )
                continue
            raise TraceError(
                path, lineno, f"invalid JSON ({exc.msg}); expected one recorded request per line"
            ) from None
        if not isinstance(rec, dict) or not {"t", "prompt_tokens", "output_tokens"} <= set(rec):
            raise TraceError(path, lineno, "expected an object with t, prompt_tokens and output_tokens")
        try:
            t, s, o = float(rec["t"]), int(rec["prompt_tokens"]), int(rec["output_tokens"])
        except (TypeError, ValueError):
            raise TraceError(path, lineno, "t must be a number, prompt_tokens and output_tokens integers") from None
        if s < 0 or o < 0 or not np.isfinite(t):
            raise TraceError(path, lineno, "token counts must be >= 0 and t finite")
        if o == 0:  # rejected, failed before the first token, or cancelled: it never reached decode
            skipped += 1
            continue
        arrival.append(t)
        prompt.append(s)
        output.append(o)
        h = rec.get("prompt_hash")
        key.append(int(h[:15], 16) if isinstance(h, str) and len(h) >= 15 else NO_KEY)
        hashes.append(_blocks_of(path, lineno, rec, sizes))
        kept.append(lineno)
    if not prompt:
        raise TraceError(path, None, "no request in the recording generated tokens")
    return Workload.from_arrays(
        arrival,
        prompt,
        output,
        key,
        name=name,
        has_timestamps=True,
        meta={"source": str(path), "format": "record", "dropped": {"no_output_tokens": skipped}},
        blocks=chained_blocks(path, hashes, sizes.pop(), kept) if sizes else None,
    )


def _blocks_of(path: Path, lineno: int, rec: dict, sizes: set[int]) -> list[int]:
    """A recorded request's block hashes (empty when it has none); every line must use one block size."""
    blocks = rec.get("blocks")
    if blocks is None:
        return []
    size = rec.get("block_size", 16)
    if not isinstance(blocks, list) or not all(isinstance(b, int) and not isinstance(b, bool) for b in blocks):
        raise TraceError(path, lineno, "field 'blocks': expected a list of integer block hashes")
    if not isinstance(size, int) or size < 1:
        raise TraceError(path, lineno, f"field 'block_size': expected a positive integer, got {size!r}")
    sizes.add(size)
    if len(sizes) > 1:
        raise TraceError(path, lineno, f"block_size {size} differs from earlier lines' ({min(sizes - {size})})")
    return blocks
