"""Trace-driven simulator of barrier-synchronized DP decoding.

One decode step, in this exact order:

1. Requests whose arrival (plus the optional fixed prefill delay) is <= now enter the waiting pool.
   In ``saturated`` mode the pool is instead topped up, in trace order, to ``visible`` requests.
2. The policy is called once with a ``Snapshot`` and returns assignments; each is validated (the request
   is waiting, the worker has a free slot, no duplicates) and applied. A request's first decode step
   is this step.
3. Every worker decodes one token per active request. τ = step_time(loads); time advances by τ;
   every active request's generated count and load grow by 1.
4. Requests that reached their output length finish and free their slots.

If nothing is active and the pool is empty, time jumps to the next arrival. If the policy leaves the
pool waiting with nothing active, time advances by one empty engine iteration (step_time of zero load)
— the way an engine with an idle batch spins — and the simulator raises if that repeats
``max_idle_dispatches`` times in a row (a starving policy would otherwise hang the run).

Per-step cost is O(G) vectorised plus O(assignments + finishes): loads grow with one vector add; on a step where
requests finish (a count per finish step says so) they are the slots whose finish step is now, found by one
vectorised comparison over the slot table; admissions and releases are applied as batches; per-step metrics are
raw rows reduced in vectorised chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..core.apply import InvalidAssignment, apply_assignments
from ..core.config import setting
from ..core.snapshot import Snapshot
from ..core.state import ClusterState, Pool
from ..core.workload import Workload
from ..engine.step_time import LinearMax, make_step_time
from .energy import make_energy


class SimulationError(RuntimeError):
    """The run cannot continue: a policy broke the rules or starved the pool."""


@dataclass(frozen=True)
class SimConfig:
    """Knobs of one simulated run; every field is recorded in the result JSON."""

    workers: int = setting(8, "G, data-parallel decode workers", flags=("--workers", "-G"), min=1)
    slots: int = setting(
        72, "B, max concurrent sequences per worker (vLLM max_num_seqs)", flags=("--slots", "-B"), min=1
    )
    arrival: Literal["replay", "poisson", "saturated"] = setting(
        "replay", "replay (trace timestamps) | poisson (--qps) | saturated (pool topped up to --visible every step)"
    )
    visible: int | None = setting(None, "saturated: requests visible in the pool (default 4·G)", min=1)
    rate_scale: float = setting(1.0, "replay: multiply the trace's arrival rate by k", min=1e-9)
    qps: float | None = setting(
        None, "poisson: arrival rate; replay: resample the trace to this mean rate (req/s)", min=1e-9
    )
    window: Literal["steady", "all"] | None = setting(
        None, "measurement window: steady (up to the last admission) | all (default: steady if saturated, else all)"
    )
    seed: int = setting(0, "seeds arrivals and randomised policies")
    step_time: str = setting(
        "linear_max",
        "step-time model spec: linear_max[:C=…,t_tok=…] | linear_max_mean[:c=…,a=…,b=…] | "
        "linear_seqs[:c=…,a=…,b=…,s=…,r=…] | a step-time file written by `dpbalance calibrate` (FILE.yaml, "
        "or FILE.yaml:model=NAME)",
    )
    energy: str = setting(
        "bfio_power", "energy model spec: bfio_power[:p_idle=…,p_max=…,gamma=…] | busy_idle[:p_busy=…,p_idle=…]"
    )
    prefill_delay_s: float = setting(
        0.0, "fixed seconds between arrival and joining the decode pool", flags=("--prefill-delay",), min=0.0
    )
    max_idle_dispatches: int = setting(100_000, "consecutive empty iterations before failing", cli=False)
    record_stride: int = setting(8, "keep every k-th per-worker load row for plots", cli=False)

    def __post_init__(self):
        if self.workers < 1 or self.slots < 1:
            raise ValueError("workers and slots must be >= 1")
        if self.rate_scale <= 0:
            raise ValueError("rate_scale must be > 0")
        if self.qps is not None and self.qps <= 0:
            raise ValueError("qps must be > 0")
        if self.visible is not None and self.visible < 1:
            raise ValueError("visible must be >= 1")
        if self.prefill_delay_s < 0:
            raise ValueError("prefill_delay_s must be >= 0")
        if self.arrival == "poisson" and self.qps is None:
            raise ValueError("poisson arrivals need qps (--qps)")

    @property
    def effective_window(self) -> str:
        return self.window or ("steady" if self.arrival == "saturated" else "all")

    @property
    def effective_visible(self) -> int:
        return self.visible or 4 * self.workers


def arrival_times(w: Workload, cfg: SimConfig) -> np.ndarray | None:
    """Arrival time of every request under the configured mode (None for saturated)."""
    n = len(w)
    if cfg.arrival == "saturated":
        return None
    if cfg.arrival == "poisson":
        rng = np.random.default_rng(cfg.seed)
        gaps = rng.exponential(1.0 / cfg.qps, size=n)
        t = np.cumsum(gaps)
        return t - t[0] if n else t
    if not w.has_timestamps:
        raise SimulationError(
            f"trace {w.name!r} has no arrival times; use --arrival saturated, or --arrival poisson --qps N"
        )
    t = w.arrival.astype(np.float64)
    if cfg.qps is not None and n > 1:
        span = float(t[-1] - t[0])
        if span > 0:
            t = t * ((n - 1) / span) / cfg.qps
    return t / cfg.rate_scale


class StepRecorder:
    """Keeps per-step aggregates; raw load rows are buffered and reduced a chunk at a time."""

    CHUNK = 4096

    def __init__(self, G: int, step_model, energy_model, stride: int):
        self.G = G
        self.step_model = step_model
        self.energy_model = energy_model
        self.stride = max(1, stride)
        self.rows = np.empty((self.CHUNK, G), dtype=np.int64)
        self.tau = np.empty(self.CHUNK, dtype=np.float64)
        self.t_end = np.empty(self.CHUNK, dtype=np.float64)
        self.active = np.empty(self.CHUNK, dtype=np.int64)
        self.i = 0
        self.n = 0
        self.parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("max", "min", "sum", "tau", "t_end", "active", "energy")
        }
        self.sample_rows: list[np.ndarray] = []
        self.sample_idx: list[np.ndarray] = []

    def add(self, loads: np.ndarray, tau: float, t_end: float, active: int) -> None:
        i = self.i
        self.rows[i] = loads
        self.tau[i] = tau
        self.t_end[i] = t_end
        self.active[i] = active
        self.i = i + 1
        if self.i == self.CHUNK:
            self.flush()

    def flush(self) -> None:
        k = self.i
        if k == 0:
            return
        rows = self.rows[:k]
        tau = self.tau[:k].copy()
        p = self.parts
        p["max"].append(rows.max(axis=1))
        p["min"].append(rows.min(axis=1))
        p["sum"].append(rows.sum(axis=1))
        p["tau"].append(tau)
        p["t_end"].append(self.t_end[:k].copy())
        p["active"].append(self.active[:k].copy())
        p["energy"].append(self.energy_model.step_energy(rows, tau, self.step_model))
        first = (-self.n) % self.stride
        idx = np.arange(first, k, self.stride)
        self.sample_rows.append(rows[idx].copy())
        self.sample_idx.append(idx + self.n)
        self.n += k
        self.i = 0

    def arrays(self) -> dict[str, np.ndarray]:
        self.flush()
        out = {
            k: (
                np.concatenate(v)
                if v
                else np.empty(0, dtype=np.float64 if k in ("tau", "t_end", "energy") else np.int64)
            )
            for k, v in self.parts.items()
        }
        out["sample_rows"] = np.concatenate(self.sample_rows) if self.sample_rows else np.empty((0, self.G), np.int64)
        out["sample_idx"] = np.concatenate(self.sample_idx) if self.sample_idx else np.empty(0, np.int64)
        return out


@dataclass
class RunRecord:
    """Raw outcome of a run; ``results.summarize`` turns it into the Result record."""

    workers: int
    slots: int
    steps: dict[str, np.ndarray]  # per decode step: max, min, sum, tau, t_end, active, energy (+ sampled rows)
    arrival: np.ndarray  # per request: time it became visible to the router
    admit_step: np.ndarray  # decode-step index of its first token
    worker: np.ndarray
    output: np.ndarray
    dispatch_ns: np.ndarray  # per policy call that had a decision to make
    wall_s: float
    step_params: dict
    energy_params: dict
    idle_power_w: float = 0.0  # per worker, drawn while no decode step runs
    final_loads: np.ndarray = None  # per-worker loads and counts after the run (all zero: nothing left behind)
    final_counts: np.ndarray = None

    @property
    def n_steps(self) -> int:
        return len(self.steps["tau"])

    def admit_time(self) -> np.ndarray:
        """When each request got its slot: the start of its first decode step."""
        return self.steps["t_end"][self.admit_step] - self.steps["tau"][self.admit_step]

    def first_token_time(self) -> np.ndarray:
        return self.steps["t_end"][self.admit_step]

    def finish_time(self) -> np.ndarray:
        return self.steps["t_end"][self.admit_step + self.output - 1]


ProgressFn = Callable[[int, int], None]


def simulate(
    workload: Workload,
    policy,
    cfg: SimConfig,
    progress: ProgressFn | None = None,
    observer: Callable[[Snapshot], None] | None = None,
) -> RunRecord:
    """Run ``policy`` over ``workload``. ``progress(done, total)`` is called every few thousand steps;
    ``observer(snapshot)`` (tests, benchmarks) sees every snapshot right before the policy does."""
    N = len(workload)
    G, B = cfg.workers, cfg.slots
    if N == 0:
        raise SimulationError("the workload is empty (check the filters)")
    step_model = make_step_time(cfg.step_time, B)
    energy_model = make_energy(cfg.energy)
    arr = arrival_times(workload, cfg)
    sat = arr is None
    ready = None if sat else arr + cfg.prefill_delay_s
    visible = cfg.effective_visible

    prompt = workload.prompt
    output = workload.output
    key = workload.key
    ids_all = np.arange(N, dtype=np.int64)
    enter = np.zeros(N, dtype=np.float64) if sat else arr.copy()
    admit_step = np.full(N, -1, dtype=np.int64)
    worker_of = np.full(N, -1, dtype=np.int64)

    st = ClusterState(G, B)
    pool = Pool(capacity=(visible + 16) if sat else min(N, 4096) + 16)
    rec = StepRecorder(G, step_model, energy_model, cfg.record_stride)
    linear = isinstance(step_model, LinearMax)
    C, t_tok = (step_model.C, step_model.t_tok) if linear else (0.0, 0.0)
    idle_tau = step_model(0.0, 0.0)
    loads = st.loads
    counts = st.counts  # running sequences per worker (for step-time models with a per-sequence cost)
    seqs = step_model.uses_seqs
    # per slot: the decode step at which its request finishes (-1: free), and its admission number, so the
    # requests finishing together are released in the order they were admitted; ``n_ending[e % R]`` counts the
    # requests that finish at step e (every finish is less than R steps ahead), so steps where nothing finishes
    # skip the slot scan
    slot_end = np.full(G * st.bmax, -1, dtype=np.int64)
    slot_seq = np.zeros(G * st.bmax, dtype=np.int64)
    R = int(output.max()) + 1
    n_ending = np.zeros(R, dtype=np.int64)
    n_admitted = 0
    disp: list[int] = []
    perf = time.perf_counter_ns
    t = 0.0
    k = 0  # decode steps done
    nxt = 0  # next request to enter the pool
    done = 0
    active = 0
    idle = 0
    wall0 = time.perf_counter()
    next_progress = 2048

    while done < N:
        # 1. arrivals
        if sat:
            need = visible - (pool.tail - pool.head)
            if need > 0 and nxt < N:
                j = min(N, nxt + need)
                enter[nxt:j] = t
                pool.extend(ids_all[nxt:j], prompt[nxt:j], enter[nxt:j], key[nxt:j])
                nxt = j
        elif nxt < N and ready[nxt] <= t:
            j = int(np.searchsorted(ready, t, side="right"))
            pool.extend(ids_all[nxt:j], prompt[nxt:j], arr[nxt:j], key[nxt:j])
            nxt = j
        waiting = pool.tail - pool.head
        if active == 0 and waiting == 0:
            if nxt < N and not sat:
                t = max(t, float(ready[nxt]))
                continue
            raise SimulationError(f"internal: {N - done} requests unaccounted for")  # pragma: no cover

        # 2. dispatch
        snap = Snapshot(st, pool, t)
        if observer is not None:
            observer(snap)
        t0 = perf()
        asg = policy.dispatch(snap)
        t1 = perf()
        if waiting and active < G * B:
            disp.append(t1 - t0)
        if asg is not None and len(asg):
            try:
                got = apply_assignments(st, pool, asg, output)
            except InvalidAssignment as exc:
                raise SimulationError(
                    f"policy {type(policy).__name__} made an invalid assignment at step {k}: {exc}"
                ) from None
            rid, n_got = got.request_id, len(got.slot)
            admit_step[rid] = k
            worker_of[rid] = got.worker
            ends = k + output[rid]
            slot_end[got.slot] = ends
            np.add.at(n_ending, ends % R, 1)
            slot_seq[got.slot] = np.arange(n_admitted, n_admitted + n_got)
            n_admitted += n_got
            active += n_got
        if active == 0:
            idle += 1
            if idle > cfg.max_idle_dispatches:
                raise SimulationError(
                    f"policy {type(policy).__name__} left {waiting} requests waiting with every worker "
                    f"idle for {idle - 1} consecutive iterations"
                )
            t += idle_tau
            continue
        idle = 0

        # 3. decode one token everywhere
        m = int(loads.max())
        if linear:
            tau = C + t_tok * m
        elif seqs:
            tau = step_model(float(m), float(loads.sum()) / G, float(counts.max()), active / G)
        else:
            tau = step_model(float(m), float(loads.sum()) / G)
        t += tau
        rec.add(loads, tau, t, active)
        st.advance()
        k += 1

        # 4. finishes
        if n_ending[k % R]:
            n_ending[k % R] = 0
            fin = (slot_end == k).nonzero()[0]
            if len(fin) > 1:
                fin = fin[np.argsort(slot_seq[fin])]
            slot_end[fin] = -1
            st.release_many(fin)
            done += len(fin)
            active -= len(fin)
        if progress is not None and k >= next_progress:
            progress(done, N)
            next_progress = k + 2048

    wall = time.perf_counter() - wall0
    if progress is not None:
        progress(done, N)
    return RunRecord(
        workers=G,
        slots=B,
        steps=rec.arrays(),
        arrival=enter,
        admit_step=admit_step,
        worker=worker_of,
        output=output.copy(),
        dispatch_ns=np.asarray(disp, dtype=np.int64),
        wall_s=wall,
        step_params=step_model.params(),
        energy_params=energy_model.params(),
        idle_power_w=energy_model.idle_power_w(),
        final_loads=st.loads.copy(),
        final_counts=st.counts.copy(),
    )
