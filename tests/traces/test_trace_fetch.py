"""`dpbalance trace fetch` against a local HTTP mirror (127.0.0.1 only).

The mirror serves the hand-written files in tests/data/mirror under the publishers' file names. Their bytes
differ from the real traces, so a test that wants a successful download swaps in the fixture's own size and
sha256 (computed here with hashlib); tests with the real table values check that a mismatch is refused.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dpbalance.cli.main import app
from dpbalance.traces import KNOWN, SOURCES, TraceError, load_trace, resolve_trace, trace_directory
from dpbalance.traces.fetch import MIRROR_ENV, FetchError, fetch_trace
from dpbalance.traces.sources import PINNED

MIRROR = Path(__file__).parents[1] / "data" / "mirror"
runner = CliRunner()


class _Handler(SimpleHTTPRequestHandler):
    """Static files, a request log, and paths that answer 503 a given number of times first."""

    def __init__(self, *a, state, **kw):
        self.state = state
        super().__init__(*a, **kw)

    def do_GET(self):
        self.state["requests"].append(self.path)
        name = self.path.lstrip("/")
        if self.state["fail"].get(name, 0) > 0:
            self.state["fail"][name] -= 1
            self.send_error(503, "Service Unavailable")
            return
        if name in self.state["override"]:
            body = self.state["override"][name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    state = {"requests": [], "fail": {}, "override": {}}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, state=state, directory=str(MIRROR)))
    thread = threading.Thread(target=partial(httpd.serve_forever, poll_interval=0.05), daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _fixture_checksums(monkeypatch, name: str) -> bytes:
    """Make the source table expect the fixture file's size and sha256; returns the fixture's bytes."""
    src = SOURCES[name]
    data = (MIRROR / src.upstream_file).read_bytes()
    fixture = dataclasses.replace(src, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(SOURCES, name, fixture)
    return data


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ------------------------------------------------------------------ the source table


def test_every_named_trace_has_a_source_and_pinned_urls_are_exact():
    assert set(SOURCES) == set(KNOWN)
    for name, src in SOURCES.items():
        assert src.file == KNOWN[name].files[0], name  # fetch writes the file the catalog looks for first
        assert src.licence and src.citation and src.publisher
        if src.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", src.sha256)
    assert len(PINNED) == 8
    for name in PINNED:
        src = SOURCES[name]
        assert re.fullmatch(r"[0-9a-f]{40}", src.commit) and src.sha256 and src.size and src.rows
        assert src.url == f"https://raw.githubusercontent.com/{src.repository}/{src.commit}/{src.path}"
    assert SOURCES["azure-conv-2024"].url.endswith("/AzureLLMInferenceTrace_conv_1week.csv")


def test_docs_list_every_source():
    doc = (Path(__file__).parents[2] / "docs" / "traces.md").read_text()
    for name, src in SOURCES.items():
        assert f"`{name}`" in doc
        for fact in (src.url, src.sha256, src.commit, f"{src.size:,}" if src.size else None):
            assert fact is None or fact in doc, (name, fact)


def test_trace_directory_order(tmp_path, monkeypatch):
    monkeypatch.setenv("DPBALANCE_TRACE_DIR", str(tmp_path / "env"))
    assert trace_directory(tmp_path / "opt") == tmp_path / "opt"
    assert trace_directory() == tmp_path / "env"
    monkeypatch.delenv("DPBALANCE_TRACE_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = trace_directory()
    assert default.parts[-2:] == ("dpbalance", "traces")
    assert str(default).startswith(str(tmp_path))  # a per-user directory, not a folder next to the code
    with pytest.raises(TraceError, match="dpbalance trace fetch vidur-arxiv"):
        resolve_trace("vidur-arxiv")


# ------------------------------------------------------------------ fetching


@pytest.mark.parametrize("name", PINNED)
def test_fetched_file_lands_under_its_name_and_loads(server, monkeypatch, tmp_path, name):
    data = _fixture_checksums(monkeypatch, name)
    res = fetch_trace(name, tmp_path, mirror=server["url"])
    assert res.status == "fetched" and res.verified and res.path == tmp_path / SOURCES[name].file
    assert res.size == len(data) and res.url == f"{server['url']}/{SOURCES[name].upstream_file}"
    assert gzip.decompress(res.path.read_bytes()) == data  # the publisher's bytes, unchanged
    assert _files(tmp_path) == [SOURCES[name].file]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert res.path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private mode
    w = load_trace(name, tmp_path)
    assert (
        len(w)
        == {
            "azure-code-2023": 3,
            "azure-conv-2023": 2,
            "mooncake-conversation": 3,
            "mooncake-synthetic": 2,
            "bfio-arxiv": 2,
            "bfio-burst": 3,
            "bfio-longbench": 1,
            "vidur-arxiv": 2,
        }[name]
    )


def test_fetched_values_are_the_publishers(server, monkeypatch, tmp_path):
    for name in ("azure-code-2023", "mooncake-conversation"):
        _fixture_checksums(monkeypatch, name)
        fetch_trace(name, tmp_path, mirror=server["url"])
    az = load_trace("azure-code-2023", tmp_path)
    np.testing.assert_allclose(az.arrival, [0.0, 0.052, 2.6], atol=1e-6)  # 18:17:03.97996 -> :04.03196 -> :06.57996
    assert az.prompt.tolist() == [4808, 3180, 110] and az.output.tolist() == [10, 8, 27]
    mc = load_trace("mooncake-conversation", tmp_path)
    assert mc.arrival.tolist() == [0.0, 0.0, 2.5] and mc.output.tolist() == [12, 300, 45]


def test_checksum_mismatch_is_refused_and_nothing_is_written(server, monkeypatch, tmp_path):
    src = SOURCES["azure-code-2023"]
    data = (MIRROR / src.upstream_file).read_bytes()
    monkeypatch.setitem(SOURCES, src.name, dataclasses.replace(src, size=len(data)))  # real sha256 kept
    with pytest.raises(FetchError) as err:
        fetch_trace(src.name, tmp_path, mirror=server["url"])
    msg = str(err.value)
    assert "sha256 mismatch" in msg and f"expected {src.sha256}" in msg
    assert f"got {hashlib.sha256(data).hexdigest()}" in msg and f"{server['url']}/{src.upstream_file}" in msg
    assert _files(tmp_path) == []


def test_size_mismatch_is_refused(server, tmp_path):
    with pytest.raises(FetchError, match=r"size mismatch .*expected 320,117 bytes, got 145;") as err:
        fetch_trace("azure-code-2023", tmp_path, mirror=server["url"])
    assert "nothing was written" in str(err.value)
    assert _files(tmp_path) == []


def test_404_is_a_clear_error_with_what_to_do(server, tmp_path, monkeypatch):
    monkeypatch.setitem(
        SOURCES,
        "burstgpt",
        dataclasses.replace(SOURCES["burstgpt"], path="data/gone.csv", url="https://example.invalid/data/gone.csv"),
    )
    with pytest.raises(FetchError) as err:
        fetch_trace("burstgpt", tmp_path, mirror=server["url"], backoff_s=0)
    msg = str(err.value)
    assert "HTTP 404" in msg and f"{server['url']}/gone.csv" in msg
    assert "dpbalance trace fetch burstgpt --mirror DIR" in msg and "https://example.invalid/data/gone.csv" in msg
    assert server["requests"] == ["/gone.csv"]  # a 404 is not retried
    assert _files(tmp_path) == []


def test_transient_errors_are_retried(server, monkeypatch, tmp_path):
    _fixture_checksums(monkeypatch, "vidur-arxiv")
    fname = SOURCES["vidur-arxiv"].upstream_file
    server["fail"][fname] = 2
    res = fetch_trace("vidur-arxiv", tmp_path, mirror=server["url"], attempts=3, backoff_s=0)
    assert res.status == "fetched" and server["requests"] == [f"/{fname}"] * 3
    server["fail"][fname] = 5
    with pytest.raises(FetchError, match=r"HTTP 503 .* \(after 2 attempts\)"):
        fetch_trace("vidur-arxiv", tmp_path / "other", mirror=server["url"], attempts=2, backoff_s=0)
    assert _files(tmp_path / "other") == []


def test_network_error_names_the_url(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    with pytest.raises(FetchError, match=rf"network error for http://127.0.0.1:{port}/conversation_trace.jsonl"):
        fetch_trace("mooncake-conversation", tmp_path, mirror=f"http://127.0.0.1:{port}", attempts=2, backoff_s=0)
    assert _files(tmp_path) == []


def test_existing_file_is_kept_unless_force(server, monkeypatch, tmp_path):
    data = _fixture_checksums(monkeypatch, "bfio-burst")
    old = tmp_path / "bfio-burst.json.gz"
    old.write_bytes(b"not touched")
    res = fetch_trace("bfio-burst", tmp_path, mirror=server["url"])
    assert res.status == "present" and res.path == old and old.read_bytes() == b"not touched"
    assert server["requests"] == []
    res = fetch_trace("bfio-burst", tmp_path, mirror=server["url"], force=True)
    assert res.status == "fetched" and gzip.decompress(old.read_bytes()) == data


def test_wrong_content_for_an_unverified_trace_is_refused(server, tmp_path):
    server["override"]["AzureLLMInferenceTrace_code_1week.csv"] = b"<!DOCTYPE html>\n<html>quota exceeded</html>\n"
    with pytest.raises(FetchError, match="does not look like this trace"):
        fetch_trace("azure-code-2024", tmp_path, mirror=server["url"])
    server["override"]["BurstGPT_1.csv"] = b"version https://git-lfs.github.com/spec/v1\noid sha256:4bb3\n"
    with pytest.raises(FetchError, match="Git LFS pointer"):
        fetch_trace("burstgpt", tmp_path, mirror=server["url"])
    assert _files(tmp_path) == []


def test_unverified_trace_from_a_local_folder(tmp_path):
    """A user-supplied file with no published checksum, added from a folder: converted, sha256 reported."""
    res = fetch_trace("azure-conv-2024", tmp_path / "traces", mirror=str(MIRROR))
    data = (MIRROR / "AzureLLMInferenceTrace_conv_1week.csv").read_bytes()
    assert res.status == "fetched" and not res.verified and res.sha256 == hashlib.sha256(data).hexdigest()
    assert res.path.name == "azure-conv-2024.csv.gz"
    w = load_trace("azure-conv-2024", tmp_path / "traces")
    assert w.output.tolist() == [1200, 20] and w.arrival.tolist() == [0.0, 1.5]


def test_mirror_from_the_environment(server, monkeypatch, tmp_path):
    _fixture_checksums(monkeypatch, "mooncake-synthetic")
    monkeypatch.setenv(MIRROR_ENV, server["url"] + "/")
    res = fetch_trace("mooncake-synthetic", tmp_path)
    assert res.url == f"{server['url']}/synthetic_trace.jsonl"


def test_unwritable_trace_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the trace directory should be")
    with pytest.raises(FetchError, match=r"azure-conv-2024: .*file"):
        fetch_trace("azure-conv-2024", blocker / "traces", mirror=str(MIRROR))


def test_sample_and_unknown_names_cannot_be_fetched(tmp_path):
    with pytest.raises(FetchError, match="shipped inside the package"):
        fetch_trace("sample", tmp_path)
    with pytest.raises(FetchError, match="Traces that can be fetched: .*azure-code-2023"):
        fetch_trace("mooncake", tmp_path)


# ------------------------------------------------------------------ the command line


def _cli(*args):
    r = runner.invoke(app, list(args))
    return r, " ".join(r.output.replace("│", " ").split())


def test_cli_fetch_list_info_end_to_end(server, monkeypatch, tmp_path):
    for name in PINNED:
        _fixture_checksums(monkeypatch, name)
    d = str(tmp_path / "td")
    r, text = _cli("trace", "fetch", "--all", "--trace-dir", d, "--mirror", server["url"])
    assert r.exit_code == 0, r.output
    assert text.count("size and sha256 verified") == 8 and "Licence: CC-BY-4.0" in text
    assert _files(Path(d)) == sorted(SOURCES[n].file for n in PINNED)

    r, text = _cli("trace", "list", "--trace-dir", d)
    assert r.exit_code == 0
    assert "dpbalance trace fetch azure-conv-2024" in text and "dpbalance trace fetch vidur-arxiv" not in text
    assert "Azure/AzurePublicDataset" in text and "Apache-2.0" in text

    r, text = _cli("trace", "info", "azure-code-2023", "--trace-dir", d)
    assert r.exit_code == 0 and "CC-BY-4.0" in text and "Splitwise" in text and "raw.githubusercontent.com" in text
    assert re.search(r"requests\s+3\b", text)

    r, text = _cli("trace", "fetch", "azure-code-2023", "--trace-dir", d, "--mirror", server["url"])
    assert r.exit_code == 0 and "already present" in text and "--force" in text
    n = len(server["requests"])
    r, text = _cli("trace", "fetch", "azure-code-2023", "--force", "--trace-dir", d, "--mirror", server["url"])
    assert r.exit_code == 0 and "wrote" in text and len(server["requests"]) == n + 1


def test_cli_fetch_errors(server, monkeypatch, tmp_path):
    d = str(tmp_path / "td")
    _fixture_checksums(monkeypatch, "bfio-arxiv")
    # one good, one bad checksum (real table value), one missing on the mirror: the good one is still written
    gone = dataclasses.replace(SOURCES["burstgpt"], url="https://x.invalid/nope.csv")
    monkeypatch.setitem(SOURCES, "burstgpt", gone)
    r, text = _cli(
        "trace", "fetch", "bfio-arxiv", "vidur-arxiv", "burstgpt", "--trace-dir", d, "--mirror", server["url"]
    )
    assert r.exit_code == 1 and "size mismatch" in text and "HTTP 404" in text
    assert "2 of 3 trace(s) not fetched: vidur-arxiv, burstgpt" in text
    assert _files(Path(d)) == ["bfio-arxiv.json.gz"]
    for args, needle in [
        (("sample",), "shipped inside the package"),
        (("nope",), "cannot be fetched"),
        ((), "name at least one trace"),
        (("--all", "sample"), "not both"),
    ]:
        r, text = _cli("trace", "fetch", *args, "--trace-dir", d)
        assert r.exit_code == 2 and needle in text, (args, r.output)


def test_cli_missing_trace_says_how_to_fetch(tmp_path):
    r, text = _cli("trace", "info", "mooncake-conversation", "--trace-dir", str(tmp_path))
    assert r.exit_code == 2 and "dpbalance trace fetch mooncake-conversation" in text
    assert "Apache-2.0" in text  # the source is shown even when the file is missing


def test_real_files_pass_the_real_checksums(need_trace, server, tmp_path):
    """The publishers' real bytes (from the local trace directory) pass the table's size and sha256 untouched,
    and the fetched copies load to the same workloads as the originals."""
    for name in PINNED:
        need_trace(name)
    for name in PINNED:
        path, _, _ = resolve_trace(name)
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        server["override"][SOURCES[name].upstream_file] = raw
    r, text = _cli("trace", "fetch", "--all", "--trace-dir", str(tmp_path / "td"), "--mirror", server["url"])
    assert r.exit_code == 0, r.output
    assert text.count("size and sha256 verified") == 8
    for name in PINNED:
        a, b = load_trace(name), load_trace(name, tmp_path / "td")
        assert b.meta["source"] != a.meta["source"]
        assert np.array_equal(a.prompt, b.prompt) and np.array_equal(a.output, b.output)
        assert np.array_equal(a.arrival, b.arrival)


def test_qwen_bailian_trace_keeps_sessions_and_16_token_blocks(server, tmp_path):
    res = fetch_trace("qwen-bailian-a", tmp_path, mirror=server["url"])
    assert res.status == "fetched" and res.path == tmp_path / "qwen-bailian-a.jsonl.gz"
    w = load_trace("qwen-bailian-a", tmp_path)
    assert w.meta["format"] == "bailian"
    np.testing.assert_allclose(w.arrival, [0.0, 0.386, 1.136, 1.886], atol=1e-9)  # seconds, not ms
    assert w.session.tolist() == [159, 160, 159, 159]  # turns 2 and 3 belong to chat 159's conversation
    assert w.blocks.size == 16 and w.blocks.of(3).tolist() == [1089, 1090, 2001, 2002, 2003]
    # one unlimited cache: 0, then 1 block (20 tokens: the last is recomputed), 2 blocks, 4 blocks
    assert w.prefix_stats()["prefix_reuse"] == pytest.approx((16 + 32 + 64) / (40 + 20 + 70 + 90))
