"""Start and stop the testbed's vLLM data-parallel ranks.

Two modes, both with data-parallel size 2 and one CPU core per rank:

- ``external`` (what dpbalance's router fronts): one OpenAI server per rank, each started with
  ``--data-parallel-rank R`` and pinned to core R; the ranks find each other over ``--data-parallel-address`` and
  ``--data-parallel-rpc-port``. Each rank has its own URL.
- ``internal``: one OpenAI server that starts both engines itself; a request goes to rank N when it carries the
  header ``X-data-parallel-rank: N``.

Every server is started in a process group of its own (vLLM's engine processes are its children), with its output
in a log file. A state file records what was started (PIDs, process start times, ports, mode, logs), so ``down`` —
from this process or a later one — ends exactly those process groups: SIGTERM, then SIGKILL after a grace period.
If anything goes wrong while starting (a server exits, never answers ``/health``, Ctrl-C), everything started so
far is ended before the error is raised.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .build import is_built
from .dtype import DTYPES, KV_SPACE_GIB, auto_dtype
from .paths import MODEL_NAME, Testbed

MODES = ("external", "internal")
DP_SIZE = 2
DEFAULT_BASE_PORT = 18600  # rank r's server listens on base + r (internal mode: base)
DEFAULT_RPC_PORT = 18650  # vLLM's data-parallel handshake port
DEFAULT_TIMEOUT_S = 300.0
API_SERVER = "vllm.entrypoints.openai.api_server"
MAX_MODEL_LEN = 4096  # the model's max positions
MAX_NUM_SEQS = 32

#: Popen objects of servers this process started, so it can reap them (a dead child stays a zombie until waited)
_CHILDREN: dict[int, subprocess.Popen] = {}


class LaunchError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerSpec:
    """One server process to start."""

    name: str
    argv: list[str]
    env: dict[str, str]
    url: str  # base URL; healthy when GET url/health answers 200
    ports: tuple[int, ...]  # ports that must be free before it starts
    #: CPU cores the whole process tree runs on (its API server, engine core and worker); empty: any
    cpus: tuple[int, ...] = ()


@dataclass
class Proc:
    name: str
    pid: int
    start_time: str | None  # the kernel's start time of the process (guards against a reused PID)
    url: str
    log: str
    healthy_after_s: float | None = None
    ports: list[int] = field(default_factory=list)  # its HTTP port (and, for the first server, vLLM's DP RPC port)


@dataclass
class State:
    mode: str
    model: str
    rank_urls: list[str]  # URL serving each DP rank (internal mode: the one server, for every rank)
    procs: list[Proc] = field(default_factory=list)
    started_at: float = 0.0
    dtype: str = "bfloat16"  # the weights' dtype the servers run

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            d = json.loads(path.read_text())
            return cls(
                mode=d["mode"],
                model=d["model"],
                rank_urls=list(d["rank_urls"]),
                procs=[Proc(**p) for p in d["procs"]],
                started_at=float(d.get("started_at", 0.0)),
                dtype=str(d.get("dtype", "bfloat16")),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise LaunchError(
                f"{path}: unreadable testbed state ({exc}); end the servers by hand and delete it"
            ) from None


# ---------------------------------------------------------------- what to start
def vllm_args(
    model: Path,
    port: int,
    *,
    max_model_len: int = MAX_MODEL_LEN,
    max_num_seqs: int = MAX_NUM_SEQS,
    dtype: str = "bfloat16",
) -> list[str]:
    return [
        "-m",
        API_SERVER,
        "--model",
        str(model),
        "--served-model-name",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        "--dtype",
        dtype,
        "--enforce-eager",
        "--seed",
        "0",
        "--data-parallel-size",
        str(DP_SIZE),
    ]


def _resolve_dtype(dtype: str) -> str:
    """``dtype`` checked, and ``auto`` turned into this CPU's choice (a concrete dtype is returned as it is)."""
    if dtype not in DTYPES:
        raise LaunchError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return auto_dtype() if dtype == "auto" else dtype


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def plan(
    mode: str,
    python: Path | str,
    model: Path,
    *,
    base_port: int = DEFAULT_BASE_PORT,
    rpc_port: int = DEFAULT_RPC_PORT,
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    max_model_len: int = MAX_MODEL_LEN,
    dtype: str = "auto",
) -> tuple[list[ServerSpec], list[str]]:
    """The servers to start for ``mode`` and the URL serving each DP rank (``dtype`` auto: ``auto_dtype()``)."""
    if mode not in MODES:
        raise LaunchError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    dtype = _resolve_dtype(dtype)
    base = dict(
        os.environ,
        VLLM_CPU_KVCACHE_SPACE=str(KV_SPACE_GIB[dtype]),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        **(extra_env or {}),
    )
    cores = _cores()
    specs: list[ServerSpec] = []
    if mode == "external":
        for r in range(DP_SIZE):
            port = base_port + r
            argv = [
                str(python),
                *vllm_args(model, port, max_model_len=max_model_len, dtype=dtype),
                "--data-parallel-rank",
                str(r),
                "--data-parallel-address",
                "127.0.0.1",
                "--data-parallel-rpc-port",
                str(rpc_port),
                *extra_args,
            ]
            core = cores[r % len(cores)]
            env = dict(base, VLLM_CPU_OMP_THREADS_BIND=str(core))
            # the rank's API server and engine core share its core: otherwise the OS puts them next to the other
            # rank's worker, and the two ranks' steps are slowed unevenly
            specs.append(
                ServerSpec(
                    f"rank{r}",
                    argv,
                    env,
                    f"http://127.0.0.1:{port}",
                    (port, rpc_port) if r == 0 else (port,),
                    cpus=(core,) if len(cores) >= DP_SIZE else (),
                )
            )
        return specs, [s.url for s in specs]
    port = base_port
    argv = [
        str(python),
        *vllm_args(model, port, max_model_len=max_model_len, dtype=dtype),
        "--data-parallel-address",
        "127.0.0.1",
        "--data-parallel-rpc-port",
        str(rpc_port),
        *extra_args,
    ]
    env = dict(base, VLLM_CPU_OMP_THREADS_BIND="|".join(str(cores[r % len(cores)]) for r in range(DP_SIZE)))
    spec = ServerSpec("internal", argv, env, f"http://127.0.0.1:{port}", (port, rpc_port))
    return [spec], [spec.url] * DP_SIZE


# ---------------------------------------------------------------- process helpers
def _pin(cpus: tuple[int, ...]):
    """A pre-exec hook that confines the new process (and every process it starts) to ``cpus``; None for none."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 counted from the pid


def _group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is in process group ``pgid``."""
    child = _CHILDREN.get(pgid)
    if child is not None:
        child.poll()  # reap our own child so a dead leader is not kept as a zombie
    proc = Path("/proc")
    if proc.is_dir():
        for d in proc.iterdir():
            if not d.name.isdigit():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):  # state, ppid, pgrp, …
                return True
        return False
    try:  # pragma: no cover - no /proc (not Linux)
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _ours(p: Proc) -> bool:
    """False when the PID now belongs to another process (the recorded leader ended and the number was reused).

    A process group keeps its ID while any member lives, and Linux does not hand that number to a new process, so a
    group whose leader has ended but whose members remain is still ours."""
    if p.start_time is None:
        return True
    now = _start_time(p.pid)
    return now is None or now == p.start_time


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_procs(procs: list[Proc], grace_s: float = 20.0, log: Callable[[str], None] = lambda _m: None) -> list[int]:
    """SIGTERM each recorded process group, wait up to ``grace_s``, then SIGKILL what is left. Returns the ended
    PIDs. Groups whose leader PID now belongs to an unrelated process are left alone."""
    mine = [p for p in procs if _ours(p)]
    for p in procs:
        if p not in mine:
            log(f"{p.name}: PID {p.pid} now belongs to another process; left alone")
    live = [p for p in mine if _group_alive(p.pid)]
    for p in live:
        _signal_group(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(p.pid) for p in live):
        time.sleep(0.2)
    for p in live:
        if _group_alive(p.pid):
            log(f"{p.name}: still running after {grace_s:.0f} s, sending SIGKILL")
            _signal_group(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_group_alive(p.pid) for p in live):
        time.sleep(0.1)
    for p in live:
        child = _CHILDREN.pop(p.pid, None)
        if child is not None:
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        log(f"{p.name}: ended (process group {p.pid})")
    return [p.pid for p in live]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT leftovers do not count
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: str, n: int = 20) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:]) or "    (empty)"


# ---------------------------------------------------------------- start / stop
def launch(
    specs: list[ServerSpec],
    rank_urls: list[str],
    *,
    mode: str,
    model: str,
    state_path: Path,
    logs_dir: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    log: Callable[[str], None] = print,
    dtype: str = "bfloat16",
) -> State:
    """Start ``specs`` (each in its own process group, output to ``logs_dir/NAME.log``), record them in
    ``state_path`` and wait until every one answers ``/health``. On any failure or interrupt, end all of them."""
    busy = sorted({p for s in specs for p in s.ports if not _port_free(p)})
    if busy:
        raise LaunchError(
            f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use; "
            "stop what uses them or choose other ports (--base-port / --rpc-port)"
        )
    logs_dir.mkdir(parents=True, exist_ok=True)
    state = State(mode=mode, model=model, rank_urls=rank_urls, started_at=time.time(), dtype=dtype)
    t0 = time.monotonic()
    try:
        for s in specs:
            logf = logs_dir / f"{s.name}.log"
            with open(logf, "w") as fh:
                proc = subprocess.Popen(
                    s.argv,
                    env=s.env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_pin(s.cpus),
                )
            _CHILDREN[proc.pid] = proc
            state.procs.append(Proc(s.name, proc.pid, _start_time(proc.pid), s.url, str(logf), ports=list(s.ports)))
            state.save(state_path)  # recorded before waiting, so `down` can end it even if this process dies
            log(f"{s.name}: started (pid {proc.pid}) for {s.url}; log {logf}")
        waiting = {p.name: p for p in state.procs}
        deadline = t0 + timeout_s
        while waiting:
            for name, p in list(waiting.items()):
                child = _CHILDREN.get(p.pid)
                if child is not None and child.poll() is not None:
                    raise LaunchError(
                        f"{name} exited with code {child.returncode} before it was healthy; "
                        f"see its log {p.log}; last lines:\n{_tail(p.log)}"
                    )
                if http_ok(p.url + "/health"):
                    p.healthy_after_s = round(time.monotonic() - t0, 1)
                    log(f"{name}: healthy after {p.healthy_after_s:.1f} s")
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                p = next(iter(waiting.values()))
                raise LaunchError(
                    f"{p.name} did not answer {p.url}/health within {timeout_s:.0f} s; "
                    f"see its log {p.log}; last lines:\n{_tail(p.log)}"
                )
            if waiting:
                time.sleep(0.5)
        state.save(state_path)
        return state
    except BaseException:
        log("start-up failed: ending the servers started so far")
        end_procs(state.procs, grace_s=10.0, log=log)
        state_path.unlink(missing_ok=True)
        raise


def current(state_path: Path) -> State | None:
    """The recorded testbed if any of its processes still runs; a stale state file is removed."""
    st = State.load(state_path)
    if st is None:
        return None
    if any(_ours(p) and _group_alive(p.pid) for p in st.procs):
        return st
    state_path.unlink(missing_ok=True)
    return None


def up(
    tb: Testbed,
    mode: str = "external",
    *,
    base_port: int = DEFAULT_BASE_PORT,
    rpc_port: int = DEFAULT_RPC_PORT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    python: Path | str | None = None,
    model: Path | None = None,
    extra_env: dict[str, str] | None = None,
    max_model_len: int = MAX_MODEL_LEN,
    dtype: str = "auto",
    log: Callable[[str], None] = print,
) -> State:
    """Start the DP ranks of ``tb`` in ``mode`` and wait until they are healthy. ``python`` and ``model`` default to
    the testbed's venv and model (then the testbed must be built); ``dtype`` auto: ``auto_dtype()``."""
    if python is None and model is None and not is_built(tb):
        raise LaunchError(f"the testbed in {tb.root} is not built yet: run `dpbalance testbed build` first")
    running = current(tb.state_path)
    if running is not None:
        raise LaunchError(
            f"a testbed is already up ({running.mode} mode, PIDs "
            f"{', '.join(str(p.pid) for p in running.procs)}): run `dpbalance testbed down` first"
        )
    dtype = _resolve_dtype(dtype)  # (recorded in the state file as what the servers run)
    specs, urls = plan(
        mode,
        python or tb.python,
        model or tb.model_dir,
        base_port=base_port,
        rpc_port=rpc_port,
        extra_env=extra_env,
        max_model_len=max_model_len,
        dtype=dtype,
    )
    return launch(
        specs,
        urls,
        mode=mode,
        model=MODEL_NAME,
        state_path=tb.state_path,
        logs_dir=tb.logs_dir,
        timeout_s=timeout_s,
        log=log,
        dtype=dtype,
    )


def down(tb: Testbed, grace_s: float = 20.0, log: Callable[[str], None] = print) -> list[int]:
    """End the recorded servers of ``tb`` (nothing else) and remove the state file. Returns the ended PIDs."""
    st = State.load(tb.state_path)
    if st is None:
        log("no testbed is up")
        return []
    ended = end_procs(st.procs, grace_s=grace_s, log=log)
    tb.state_path.unlink(missing_ok=True)
    if not ended:
        log("its processes had already ended")
    return ended


def status(tb: Testbed) -> dict:
    """What is recorded, what still runs, what answers /health."""
    st = State.load(tb.state_path)
    if st is None:
        return {"up": False, "built": is_built(tb), "root": str(tb.root)}
    procs = [
        dict(asdict(p), running=_ours(p) and _group_alive(p.pid), healthy=http_ok(p.url + "/health")) for p in st.procs
    ]
    return {
        "up": any(p["running"] for p in procs),
        "built": is_built(tb),
        "root": str(tb.root),
        "mode": st.mode,
        "model": st.model,
        "rank_urls": st.rank_urls,
        "procs": procs,
        "started_at": st.started_at,
        "dtype": st.dtype,
    }
