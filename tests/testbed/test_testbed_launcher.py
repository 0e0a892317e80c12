"""The testbed launcher's process handling, with a fake engine instead of vLLM (fast; no vLLM needed).

The fake is a package ``vllm.entrypoints.openai.api_server`` put first on PYTHONPATH, so ``up`` runs its real
command line (``python -m vllm.entrypoints.openai.api_server --port … --data-parallel-rank …``). Like vLLM's server
it starts a child process (vLLM's engine runs in child processes), and it answers ``/health`` with 200 after an
optional delay. Environment knobs make one rank never healthy, exit at once, or ignore SIGTERM.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpbalance.cli.main import app
from dpbalance.testbed import launcher
from dpbalance.testbed.launcher import LaunchError, down, up
from dpbalance.testbed.paths import Testbed

pytestmark = pytest.mark.timeout(120)

FAKE_SERVER = textwrap.dedent("""
    import argparse, http.server, os, signal, subprocess, sys, time
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--data-parallel-rank", type=int, default=-1)
    args, _ = ap.parse_known_args()
    rank = args.data_parallel_rank
    env = os.environ
    if env.get("FAKE_EXIT_RANK") == str(rank):
        print("fake engine: giving up", flush=True)
        sys.exit(3)
    if env.get("FAKE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # an "engine core" child, in the server's process group like vLLM's
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if env.get("FAKE_IGNORE_TERM") else ""
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; " + ignore + "time.sleep(3600)"])
    # written whole or not at all (a server ended between creating and writing the file left it empty)
    tmp = os.path.join(env["FAKE_PID_DIR"], f"{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(str(child.pid))
    os.replace(tmp, os.path.join(env["FAKE_PID_DIR"], f"{os.getpid()}.child"))
    start = time.monotonic()
    delay = float(env.get("FAKE_DELAY_S", "0"))
    never = env.get("FAKE_NEVER_HEALTHY_RANK") == str(rank)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/health" and not never and time.monotonic() - start >= delay
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *a):
            pass

    print(f"fake engine rank {rank} on port {args.port}", flush=True)
    http.server.HTTPServer(("127.0.0.1", args.port), H).serve_forever()
""")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepath" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_SERVER)
    pids = tmp_path / "pids"
    pids.mkdir()
    tb = Testbed(tmp_path / "tb")
    env = {"PYTHONPATH": str(tmp_path / "fakepath"), "FAKE_PID_DIR": str(pids)}
    started = []

    def start(mode="external", timeout_s=30.0, **knobs):
        base = _free_port_pair()
        st = up(
            tb,
            mode,
            base_port=base,
            rpc_port=base + 2,
            timeout_s=timeout_s,
            python=sys.executable,
            model=tmp_path / "model",
            extra_env={**env, **{k: str(v) for k, v in knobs.items()}},
            log=lambda m: None,
        )
        started.extend(p.pid for p in st.procs)
        return st

    yield tb, start, pids
    # never leave a fake behind, whatever the test did
    servers = started + [int(f.name.split(".")[0]) for f in pids.glob("*.child")]  # files are named by server PID
    for pid in servers:
        try:
            os.killpg(pid, 9)
        except ProcessLookupError:
            pass
    for f in pids.glob("*.child"):
        try:
            os.kill(int(f.read_text()), 9)
        except ProcessLookupError:
            pass


def _free_port_pair() -> int:
    import socket

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 65000 and all(launcher._port_free(q) for q in (p, p + 1, p + 2)):
            return p
    raise RuntimeError("no free ports")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _all_pids(st_pids, pid_dir):
    children = [int(f.read_text()) for f in pid_dir.glob("*.child")]
    return list(st_pids) + children


def _health(url):
    with urllib.request.urlopen(url + "/health", timeout=2) as r:
        return r.status


def test_up_waits_for_health_and_down_ends_exactly_those(fake):
    tb, start, pids = fake
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        t0 = time.monotonic()
        st = start(FAKE_DELAY_S=1.5)
        elapsed = time.monotonic() - t0
        assert elapsed >= 1.5  # it waited for /health, not just for the process
        assert [p.name for p in st.procs] == ["rank0", "rank1"]
        assert all(p.healthy_after_s >= 1.5 for p in st.procs)
        assert len(set(st.rank_urls)) == 2 and all(_health(u) == 200 for u in st.rank_urls)
        saved = json.loads(tb.state_path.read_text())
        assert [p["pid"] for p in saved["procs"]] == [p.pid for p in st.procs]
        assert saved["mode"] == "external"
        port0 = int(st.rank_urls[0].rsplit(":", 1)[1])
        assert [p["ports"] for p in saved["procs"]] == [[port0, port0 + 2], [port0 + 1]]  # HTTP (+ DP RPC) ports
        assert Path(saved["procs"][1]["log"]).read_text().startswith("fake engine rank 1")
        everything = _all_pids([p.pid for p in st.procs], pids)
        assert len(everything) == 4 and all(_alive(p) for p in everything)

        ended = down(tb, grace_s=10, log=lambda m: None)
        assert sorted(ended) == sorted(p.pid for p in st.procs)
        assert not any(_alive(p) for p in everything)  # servers and their children
        assert not tb.state_path.exists()
        assert bystander.poll() is None  # an unrelated process is untouched
        assert down(tb, log=lambda m: None) == []  # nothing left to end
    finally:
        bystander.kill()
        bystander.wait()


def test_rank_never_healthy_gives_clear_error_and_leaves_nothing(fake):
    tb, start, pids = fake
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as err:
        start(timeout_s=3, FAKE_NEVER_HEALTHY_RANK=1)
    assert 3 <= time.monotonic() - t0 < 20
    msg = str(err.value)
    assert "rank1" in msg and "/health within 3 s" in msg
    assert str(tb.logs_dir / "rank1.log") in msg and "fake engine rank 1" in msg  # points at the log, shows its tail
    started = [int(f.name.split(".")[0]) for f in pids.glob("*.child")]
    assert len(started) == 2
    assert not any(_alive(p) for p in _all_pids(started, pids))
    assert not tb.state_path.exists()


def test_rank_that_exits_fails_fast(fake):
    tb, start, pids = fake
    t0 = time.monotonic()
    with pytest.raises(LaunchError, match=r"rank0 exited with code 3 before it was healthy") as err:
        start(timeout_s=60, FAKE_EXIT_RANK=0)
    assert time.monotonic() - t0 < 30  # did not wait for the timeout
    assert "giving up" in str(err.value)
    assert not any(_alive(int(f.read_text())) for f in pids.glob("*.child"))
    assert not tb.state_path.exists()


def test_down_kills_what_ignores_sigterm(fake):
    tb, start, pids = fake
    st = start(FAKE_IGNORE_TERM=1)
    everything = _all_pids([p.pid for p in st.procs], pids)
    msgs = []
    t0 = time.monotonic()
    down(tb, grace_s=1.0, log=msgs.append)
    assert time.monotonic() - t0 >= 1.0
    assert any("SIGKILL" in m for m in msgs)
    assert not any(_alive(p) for p in everything)


def test_internal_mode_is_one_server_for_both_ranks(fake):
    tb, start, pids = fake
    st = start("internal")
    assert [p.name for p in st.procs] == ["internal"] and len(st.rank_urls) == 2 and len(set(st.rank_urls)) == 1
    down(tb, grace_s=5, log=lambda m: None)
    assert not _alive(st.procs[0].pid)


def test_second_up_refused_and_cli_status_down(fake, monkeypatch):
    tb, start, pids = fake
    st = start()
    with pytest.raises(LaunchError, match="already up"):
        start()
    monkeypatch.setenv("DPBALANCE_TESTBED_DIR", str(tb.root))
    runner = CliRunner()
    r = runner.invoke(app, ["testbed", "status"])
    assert r.exit_code == 0, r.output
    assert f"up (external mode, {st.dtype})" in r.output and str(st.procs[1].pid) in r.output and "healthy" in r.output
    r = runner.invoke(app, ["testbed", "down", "--grace", "5"])
    assert r.exit_code == 0, r.output
    assert not any(_alive(p.pid) for p in st.procs)
    r = runner.invoke(app, ["testbed", "status"])
    assert r.exit_code == 3 and "down" in r.output


def test_stale_state_with_reused_pid_is_left_alone(tmp_path):
    """A state file whose PID now belongs to another process (other start time) must not get that process killed."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        tb = Testbed(tmp_path)
        procs = [launcher.Proc("rank0", other.pid, "1", "http://127.0.0.1:1", "x.log")]  # start time "1": not it
        launcher.State(mode="external", model="m", rank_urls=["http://127.0.0.1:1"], procs=procs).save(tb.state_path)
        msgs = []
        assert down(tb, grace_s=1, log=msgs.append) == []
        assert other.poll() is None and any("another process" in m for m in msgs)
    finally:
        other.kill()
        other.wait()


def test_up_needs_a_built_testbed(tmp_path):
    with pytest.raises(LaunchError, match="not built yet: run `dpbalance testbed build`"):
        up(Testbed(tmp_path), log=lambda m: None)


def test_unknown_mode_and_busy_port(tmp_path):
    with pytest.raises(LaunchError, match="unknown mode"):
        launcher.plan("both", sys.executable, tmp_path)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        specs, urls = launcher.plan("internal", sys.executable, tmp_path, base_port=port, rpc_port=port + 1)
        with pytest.raises(LaunchError, match=f"port\\(s\\) {port}(, \\d+)? on 127.0.0.1 already in use"):
            launcher.launch(
                specs,
                urls,
                mode="internal",
                model="m",
                state_path=tmp_path / "s.json",
                logs_dir=tmp_path,
                log=lambda m: None,
            )


def test_interrupt_while_waiting_ends_what_was_started(fake, tmp_path):
    """Ctrl-C during `up` (here: SIGINT to a process waiting for a rank that never gets healthy) ends the servers
    started so far and removes the state file."""
    tb, _start, pids = fake
    base = _free_port_pair()
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from dpbalance.testbed.launcher import up
        from dpbalance.testbed.paths import Testbed
        try:
            up(Testbed(Path({str(tb.root)!r})), base_port={base}, rpc_port={base + 2}, timeout_s=60,
               python=sys.executable, model=Path("m"),
               extra_env={{"PYTHONPATH": {str(tmp_path / "fakepath")!r}, "FAKE_PID_DIR": {str(pids)!r},
                                            "FAKE_NEVER_HEALTHY_RANK": "1"}}, log=lambda m: print(m, flush=True))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """)
    # SIGINT must not be ignored in the child (it would be if this test runs in a background job)
    reset = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])"
    )
    proc = subprocess.Popen([sys.executable, "-c", reset, code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # both servers recorded and the healthy one answering
        st = launcher.State.load(tb.state_path) if tb.state_path.exists() else None
        if st and len(st.procs) == 2 and launcher.http_ok(st.procs[0].url + "/health"):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the servers did not start")
    started = [p.pid for p in st.procs]
    assert all(_alive(p) for p in started)
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "start-up failed: ending the servers" in out and "interrupted" in out
    assert not any(_alive(p) for p in _all_pids(started, pids))
    assert not tb.state_path.exists()


AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 fma avx avx2\n"
AVX512 = AVX2.replace("avx2", "avx2 avx512f avx512bw avx512_bf16")
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


def test_auto_dtype_follows_the_cpu():
    assert launcher.auto_dtype(AVX2) == "float32"  # bfloat16 through conversions there: slower
    assert launcher.auto_dtype(AVX512) == "bfloat16"
    assert launcher.auto_dtype(ARM) == "bfloat16"  # no x86 flags line: vLLM's own bfloat16 path
    assert launcher.auto_dtype() in ("bfloat16", "float32")  # this machine's /proc/cpuinfo


@pytest.mark.parametrize("dtype,gib", [("bfloat16", "1"), ("float32", "2")])
def test_dtype_reaches_every_server_with_the_same_kv_tokens(tmp_path, dtype, gib):
    for mode in launcher.MODES:
        specs, _ = launcher.plan(mode, sys.executable, tmp_path, dtype=dtype)
        for s in specs:
            assert s.argv[s.argv.index("--dtype") + 1] == dtype
            assert s.env["VLLM_CPU_KVCACHE_SPACE"] == gib  # twice the bytes per element, twice the space
    auto, _ = launcher.plan("external", sys.executable, tmp_path)
    assert auto[0].argv[auto[0].argv.index("--dtype") + 1] == launcher.auto_dtype()
    with pytest.raises(LaunchError, match="unknown dtype 'float16'"):
        launcher.plan("external", sys.executable, tmp_path, dtype="float16")


def test_the_state_file_keeps_the_dtype(tmp_path):
    path = tmp_path / "state.json"
    launcher.State(mode="external", model="m", rank_urls=["u"], dtype="float32").save(path)
    assert launcher.State.load(path).dtype == "float32"
    d = json.loads(path.read_text())
    del d["dtype"]  # a state file written before the dtype was recorded: bfloat16, all there was
    path.write_text(json.dumps(d))
    assert launcher.State.load(path).dtype == "bfloat16"
