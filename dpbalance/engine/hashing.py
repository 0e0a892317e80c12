"""Prompt block hashes as an engine cuts them: full blocks of ``block_size`` tokens, each hash chained on the
previous one (vLLM's prefix caching), so equal hashes mean equal prompts up to the end of that block.

The hash is stable across processes and machines (BLAKE2b, not Python's salted ``hash``), so a recording's
hashes can be compared with another run's. Only full blocks get a hash: a cache never holds a partial block.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np

VLLM_BLOCK = 16  # vLLM's default KV block size (tokens)
_MASK = (1 << 63) - 1


def block_hashes(tokens: Sequence[int | str], block_size: int = VLLM_BLOCK) -> list[int]:
    """The chained hash of every full block of ``tokens`` (token ids, or token strings), as non-negative int64."""
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    full = len(tokens) // block_size * block_size
    if full and isinstance(tokens[0], str):
        return _block_hashes_slow(tokens, block_size)  # token strings: no array of them to build first
    arr = np.asarray(tokens[:full])
    if arr.dtype.kind not in "iu" or (arr.dtype.kind == "u" and full and int(arr.max()) > _MASK):
        return _block_hashes_slow(tokens, block_size)  # token strings, or ids beyond int64
    # token ids: every block's bytes from one conversion (the bytes the per-token path hashes, little-endian int64)
    data = arr.astype("<i8", copy=False).tobytes()
    out: list[int] = []
    prev = b""
    step = 8 * block_size
    blake = hashlib.blake2b
    for off in range(0, len(data), step):
        prev = blake(prev + data[off : off + step], digest_size=8).digest()
        out.append(int.from_bytes(prev, "little") & _MASK)
    return out


def _block_hashes_slow(tokens: Sequence[int | str], block_size: int) -> list[int]:
    """``block_hashes`` token by token (token strings, or ids numpy cannot hold)."""
    out: list[int] = []
    prev = b""
    for i in range(0, len(tokens) - block_size + 1, block_size):
        h = hashlib.blake2b(prev, digest_size=8)
        for t in tokens[i : i + block_size]:
            h.update(struct.pack("<q", t) if isinstance(t, int) else t.encode() + b"\x00")
        prev = h.digest()
        out.append(int.from_bytes(prev, "little") & _MASK)
    return out
