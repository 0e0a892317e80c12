"""Download a named trace from its publisher, verify it, and store it gzip-compressed in the trace directory.

One download is one pass over the publisher's bytes: each chunk goes into a sha256, a byte count and a
gzip stream written to a temporary file beside the target. Only when the size and sha256 match the values
in :mod:`.sources` (where they are known) is the temporary file renamed to its final name, so a failed,
interrupted or corrupt download never leaves a partial trace behind.

Mirrors: set ``$DPBALANCE_TRACE_MIRROR`` (or pass ``mirror=``) to an ``http(s)://`` base URL, or to a local
folder, that holds the publishers' files under their own names (``AzureLLMInferenceTrace_code.csv``,
``conversation_trace.jsonl``, ...). Checksums are verified the same way, whichever the source.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from .. import __version__
from .catalog import KNOWN, trace_directory
from .sources import SOURCES, Source

MIRROR_ENV = "DPBALANCE_TRACE_MIRROR"
CHUNK = 1 << 16
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
HEAD_LIMIT = 4096  # bytes of the first line checked against Source.expect

Progress = Callable[[int, "int | None"], None]


class FetchError(RuntimeError):
    """A trace could not be fetched; the message says what, from where, and what to do."""


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    status: str  # fetched | present
    url: str | None = None
    size: int | None = None  # uncompressed bytes downloaded
    sha256: str | None = None  # of the downloaded (uncompressed) bytes
    verified: bool = False  # the sha256 matched a known value


class _Retryable(Exception):
    """A transient failure (network error, HTTP 5xx/429): worth another attempt."""


class _Unavailable(FetchError):
    """The server answered with a client error (404, 403, ...): the file is not there for us."""


def source_location(src: Source, mirror: str | None = None) -> str:
    """The URL (or local path) ``src`` is read from: the mirror's copy if a mirror is set, else the publisher's."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if not mirror:
        if src.url is None:
            raise FetchError(f"{src.name}: no download URL is known")
        return src.url
    if mirror.startswith(("http://", "https://")):
        return f"{mirror.rstrip('/')}/{src.upstream_file}"
    return str(_local_path(mirror) / src.upstream_file)


def _local_path(location: str) -> Path:
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    return Path(location).expanduser()


def manual_steps(src: Source, trace_dir: Path) -> str:
    """What a user can do when the download is not possible from here."""
    where = src.url or "the publisher's site"
    return (
        f"To add it by hand: download {where} (browser, curl or wget), then either run "
        f"`dpbalance trace fetch {src.name} --mirror DIR` with DIR the folder holding {src.upstream_file} "
        f"(checks and converts it), or put the file into {trace_dir} as {src.upstream_file} or gzip it to {src.file}."
    )


def _http_chunks(client: httpx.Client, url: str, src: Source) -> Iterator[tuple[bytes, int | None]]:
    try:
        with client.stream("GET", url) as resp:
            if resp.status_code in RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status_code} {resp.reason_phrase} for {url}")
            if resp.status_code >= 400:
                raise _Unavailable(f"{src.name}: HTTP {resp.status_code} {resp.reason_phrase} for {url}")
            total = src.size
            if total is None and "content-encoding" not in resp.headers:
                length = resp.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            for chunk in resp.iter_bytes(CHUNK):
                yield chunk, total
    except httpx.TransportError as exc:
        raise _Retryable(f"network error for {url}: {type(exc).__name__}: {exc or 'no detail'}") from None


def _file_chunks(path: Path, src: Source) -> Iterator[tuple[bytes, int | None]]:
    if not path.is_file():
        raise FetchError(f"{src.name}: {path} not found (the mirror folder must hold {src.upstream_file})")
    total = path.stat().st_size
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk, total


def _check_head(src: Source, head: bytes, location: str) -> None:
    line = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    if line.startswith("version https://git-lfs"):
        raise FetchError(f"{src.name}: {location} served a Git LFS pointer, not the file itself")
    missing = [s for s in src.expect if s not in line]
    if missing:
        raise FetchError(
            f"{src.name}: {location} does not look like this trace: its first line should contain "
            f"{', '.join(src.expect)}, got {line[:120]!r}; nothing was written"
        )


def _write_verified(
    src: Source, chunks: Iterator[tuple[bytes, int | None]], location: str, target: Path, progress: Progress | None
) -> tuple[int, str]:
    """Stream ``chunks`` through sha256 + gzip into a temporary file; rename it to ``target`` if it checks out."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, n, head, checked = hashlib.sha256(), 0, b"", not src.expect
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                for chunk, total in chunks:
                    n += len(chunk)
                    if src.size is not None and n > src.size:
                        raise FetchError(
                            f"{src.name}: size mismatch for {location}: expected {src.size:,} bytes, "
                            f"got more; nothing was written"
                        )
                    if not checked:
                        head += chunk[: HEAD_LIMIT - len(head)]
                        if b"\n" in head or len(head) >= HEAD_LIMIT:
                            _check_head(src, head, location)
                            checked = True
                    digest.update(chunk)
                    gz.write(chunk)
                    if progress is not None:
                        progress(n, total)
            raw.flush()
            os.fsync(raw.fileno())
        if not checked:
            _check_head(src, head, location)
        got = digest.hexdigest()
        if src.size is not None and n != src.size:
            raise FetchError(
                f"{src.name}: size mismatch for {location}: expected {src.size:,} bytes, got {n:,}; nothing was written"
            )
        if src.sha256 is not None and got != src.sha256:
            raise FetchError(
                f"{src.name}: sha256 mismatch for {location}: expected {src.sha256}, got {got} "
                f"({n:,} bytes); nothing was written"
            )
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, target)
        return n, got
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # release the HTTP response / file even when we stopped reading early


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_client(timeout: float = 60.0) -> httpx.Client:
    """The HTTP client used for downloads: redirects followed, proxies from the environment honoured."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
        follow_redirects=True,
        headers={"User-Agent": f"dpbalance/{__version__} (trace fetch)"},
    )


def existing_file(name: str, trace_dir: Path) -> Path | None:
    """A file in ``trace_dir`` that already provides trace ``name``, if any."""
    for f in KNOWN[name].files:
        if (trace_dir / f).is_file():
            return trace_dir / f
    return None


def fetch_trace(
    name: str,
    trace_dir: str | Path | None = None,
    *,
    force: bool = False,
    mirror: str | None = None,
    client: httpx.Client | None = None,
    progress: Progress | None = None,
    attempts: int = 3,
    backoff_s: float = 1.0,
) -> FetchResult:
    """Fetch trace ``name`` into the trace directory (``--trace-dir``, ``$DPBALANCE_TRACE_DIR`` or the user's
    data directory). A file already there is kept unless ``force``. Raises ``FetchError`` with the URL and
    the reason (HTTP status, network error, size or sha256 mismatch) and, for download failures, what the
    user can do instead."""
    src = SOURCES.get(name)
    if src is None or src.kind == "bundled":
        fetchable = ", ".join(n for n, s in SOURCES.items() if s.kind != "bundled")
        why = "is shipped inside the package; nothing to fetch" if src else "is not a trace that can be fetched"
        raise FetchError(f"{name} {why}. Traces that can be fetched: {fetchable}")
    tdir = trace_directory(trace_dir)
    have = existing_file(name, tdir)
    if have is not None and not force:
        return FetchResult(name, have, "present")
    location = source_location(src, mirror)
    target = tdir / src.file
    local = not location.startswith(("http://", "https://"))
    own_client = client is None and not local
    if own_client:
        client = make_client()
    try:
        for attempt in range(1, max(1, attempts) + 1):
            try:
                chunks = _file_chunks(_local_path(location), src) if local else _http_chunks(client, location, src)
                size, sha = _write_verified(src, chunks, location, target, progress)
                break
            except _Retryable as exc:
                if attempt >= attempts:
                    raise FetchError(
                        f"{src.name}: {exc} (after {attempt} attempt{'s' * (attempt > 1)}). " + manual_steps(src, tdir)
                    ) from None
                time.sleep(backoff_s * 2 ** (attempt - 1))
            except _Unavailable as exc:
                raise FetchError(f"{exc}. {manual_steps(src, tdir)}") from None
            except OSError as exc:  # the trace directory is not writable, the disk is full, a local file unreadable
                raise FetchError(f"{src.name}: {exc.strerror or exc}: {exc.filename or target}") from None
    finally:
        if own_client:
            client.close()
    return FetchResult(name, target, "fetched", location, size, sha, verified=src.sha256 is not None)
